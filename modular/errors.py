"""Errors the core raises. Each message names what failed and where, in words a node user reads."""


class LoopError(Exception):
    """Base class: a loop could not be built or run."""


class LoopConfigError(LoopError):
    """The attached blocks or the given values cannot form a runnable loop (raised before step 0)."""


class BlockStepError(LoopError):
    """A loop block raised inside `loop_step`. Carries where it happened; the cause is chained."""

    def __init__(self, loop_label, block_name, block_class, step, loop_vars, cause, block_label=None):
        self.loop_label = loop_label
        self.block_name = block_name
        self.block_class = block_class
        self.block_label = block_label
        self.step = step
        self.loop_vars = loop_vars
        self.cause = cause
        where = f"block '{block_name}' ({block_class}"
        where += f", {block_label})" if block_label else ")"
        loop_vars_text = ", ".join(f"{k}={_short(v)}" for k, v in loop_vars.items())
        super().__init__(
            f"{loop_label}: {where} failed at step {step}"
            + (f" ({loop_vars_text})" if loop_vars_text else "")
            + f": {type(cause).__name__}: {cause}"
        )


def _short(value, limit=40):
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"Tensor{tuple(value.shape)}" if value.numel() != 1 else f"{value.item():g}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
