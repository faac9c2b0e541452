"""Errors the core raises, and the words that say where. Each message names what failed and where, in
words a node user reads; the node of the failing block travels with the error as data (`block_node`),
so a host can mark it without reading the message."""


def node_where(name: str, node=None) -> str:
    """How a node of a loop, step or workflow is named in messages: `LoopWrapper (node 5)`; the class name alone
    without a node."""
    return f"{name} (node {node})" if node is not None else name


def block_where(name: str, block_class: str, node=None) -> str:
    """How a block is named in messages: `'block_2' (FailAtStepBlock, node 7)`; `'block_2' (FailAtStepBlock)`
    without a node. The one place that builds it (a core test pins the form)."""
    return f"'{name}' ({block_class}" + (f", node {node})" if node is not None else ")")


class ModularError(Exception):
    """Base class: a loop, a step, a pipeline or a media value could not be built, loaded or run. `block_node`: the
    node of the block at fault, if one is."""

    def __init__(self, message, block_node=None):
        super().__init__(message)
        self.block_node = block_node


class ConfigError(ModularError):
    """What was given cannot run (raised before anything runs): attached blocks that form no loop, a value of the
    wrong kind, media of the wrong shape, a missing connection."""


# The names of 0.1.0, for code written against them (user blocks that catch the pack's errors).
LoopError, LoopConfigError, loop_where = ModularError, ConfigError, node_where


class BlockStepError(ModularError):
    """A loop block raised inside `loop_step`. Carries where it happened; the cause is chained."""

    def __init__(self, loop_label, block_name, block_class, step, loop_vars, cause, block_node=None):
        self.loop_label = loop_label
        self.block_name = block_name
        self.block_class = block_class
        self.step = step
        self.loop_vars = loop_vars
        self.cause = cause
        loop_vars_text = ", ".join(f"{k}={_short(v)}" for k, v in loop_vars.items())
        super().__init__(
            f"{loop_label}: block {block_where(block_name, block_class, block_node)} failed at step {step}"
            + (f" ({loop_vars_text})" if loop_vars_text else "")
            + f": {type(cause).__name__}: {cause}",
            block_node=block_node,
        )


def _short(value, limit=40):
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"Tensor{tuple(value.shape)}" if value.numel() != 1 else f"{value.item():g}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
