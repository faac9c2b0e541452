"""Run a loop: attached blocks -> one wrapper instance -> seeded state -> `wrapper(components, state)`.

This is the one place a loop runs, for any host. A host passes its step hooks as plain callables.

Words: a *step* is one iteration of the loop; *steps done* counts those of this run; a loop's *position* is how far
it stands in its whole schedule (the steps of it done, so the index of its next step). A run starts at a position
(0, or where a resumed state stopped) and the runner records the position a state stopped at (`compat.stopped_at`),
in the snapshots and in the final state alike: this is the one place that adds the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import compat
from .errors import BlockStepError, ConfigError, ModularError, block_where
from .state import ValueSource, copy_value, seed_state

TOTAL_HINTS = ("num_inference_steps", "num_steps", "steps")


@dataclass(frozen=True)
class BlockConfig:
    """A configured loop block, as a block node hands it to a loop node."""

    cls: type
    values: dict = field(default_factory=dict)  # only the values given on the node
    components: dict = field(default_factory=dict)
    node: str | None = None  # the host's id of the node that configured it (named in messages, marked on errors)
    instance: object = None  # the block itself where diffusers configured it (a workflow chain's), else made from cls

    def where(self, name: str) -> str:
        return block_where(name, self.cls.__name__, self.node)

    @classmethod
    def of(cls, block) -> "BlockConfig":
        """A block as a loop or chain declares it: a class, or an instance diffusers configured."""
        return cls(block) if isinstance(block, type) else cls(type(block), instance=block)


@dataclass
class StepHooks:
    """Host callbacks, all optional. `interrupt()` runs before each step and may raise (an exception of
    a `passthrough` type leaves the loop unchanged); `step_start(step, block_state)` sees the block state
    as the step begins; `preview(step, block_state)` makes a preview that is handed to
    `progress(step, total, preview)` after each step. `total` is None when unknown.
    `check_block(block, block_state)` runs after every block and may raise: the error is reported as
    that block's, at that step. `step_done(position, snapshot)` runs after each step (`position`: where the loop
    now stands in its whole schedule, the run's start position plus the steps done); `snapshot()` returns the
    pipeline state as it would be if the loop ended there (a copy: the loop goes on changing its own), which a
    host may keep or save. `step_start`, `preview` and `progress` count the steps of this run."""

    progress: Callable[[int, int | None, Any], None] | None = None
    interrupt: Callable[[], None] | None = None
    step_start: Callable[[int, Any], None] | None = None
    preview: Callable[[int, Any], Any] | None = None
    passthrough: tuple = ()
    check_block: Callable[[Any, Any], None] | None = None
    step_done: Callable[[int, Callable[[], Any]], None] | None = None


class LoopComponents:
    """What a loop passes to its blocks as `components`: named components as attributes, and the device."""

    def __init__(self, components: dict | None = None, device=None):
        self.components = dict(components or {})
        for name, value in self.components.items():
            setattr(self, name, value)
        self.device = device
        self._execution_device = device


NO_BLOCKS_HINT = "connect at least one block node to the loop"


def require_blocks(blocks, label: str, hint: str = NO_BLOCKS_HINT):
    """The one check, and wording, for a loop with nothing attached (at validation and before a run)."""
    if not blocks:
        raise ConfigError(f"{label}: no loop blocks attached; {hint}")


@dataclass
class LoopResult:
    state: Any
    steps: int  # steps done in this run
    notes: list
    stopped_at: int = 0  # the position in the whole schedule the state stopped at (the run's start + `steps`)


def run_loop(
    wrapper_cls,
    blocks: Sequence[tuple[str, BlockConfig]],
    loop_values: dict | None = None,
    state=None,
    components: dict | None = None,
    hooks: StepHooks | None = None,
    device=None,
    label: str | None = None,
    host_values: dict | None = None,
    start_position: int = 0,
) -> LoopResult:
    """Compose `blocks` (name, config) in order under `wrapper_cls` and run it on a copy of `state`.

    `host_values` are values the host itself provides (a sampler's latents, sigmas, model): they go into
    the state as they are (not copied) and no node may give them. With no `blocks`, a wrapper that declares
    its own (`block_classes`) runs those. `components`: a dict of named components (plus those configured on
    the block nodes), or an object that is the components (a diffusers pipeline's). `start_position`: where the
    run starts in its whole schedule (a resumed run: where its state stopped); the positions recorded and told
    to `step_done` count from it."""
    label = label or wrapper_cls.__name__
    hooks = hooks or StepHooks()
    blocks = list(blocks) or [(name, BlockConfig.of(b)) for name, b in compat.default_blocks(wrapper_cls).items()]
    require_blocks(blocks, label)

    wrapper = compat.compose(wrapper_cls, {name: cfg.cls if cfg.instance is None else cfg.instance
                                           for name, cfg in blocks})
    sources = [ValueSource(f"the loop ({label})", wrapper.loop_inputs, dict(loop_values or {}))]
    sources += [ValueSource(f"block {cfg.where(name)}", wrapper.sub_blocks[name].inputs, dict(cfg.values), cfg.node)
                for name, cfg in blocks]
    seeded, notes = seed_state(wrapper, sources, initial=state, loop_label=label, host_values=host_values)
    if components is None or isinstance(components, dict):
        loop_components = LoopComponents(_merge_components(label, components, blocks), device)
    else:  # an object that is the components itself (a diffusers pipeline's, `pipelines.RunComponents`)
        loop_components = components
        if hasattr(components, "bind_state"):
            components.bind_state(seeded)

    total = next((seeded.get(k) for k in TOTAL_HINTS if isinstance(seeded.get(k), int)), None)
    current = 0
    done_steps = 0

    def set_total(n):
        nonlocal total
        total = n

    def before_step(step, block_state):
        nonlocal current
        current = step
        if hooks.interrupt is not None:
            hooks.interrupt()
        if hooks.step_start is not None:
            hooks.step_start(step, block_state)

    made = (wrapper_cls.__name__, [cfg.cls.__name__ for _, cfg in blocks])

    def after_step(done, block_state):
        nonlocal done_steps
        done_steps = done
        if hooks.step_done is not None:
            position = start_position + done
            hooks.step_done(position, lambda: compat.snapshot(wrapper, seeded, block_state, copy_value, *made, position))
        if hooks.progress is not None:
            preview = hooks.preview(done, block_state) if hooks.preview is not None else None
            hooks.progress(done, total, preview)

    def on_block_error(name, block, step, loop_vars, cause):
        configured = dict(blocks).get(name)
        return BlockStepError(label, name, type(block).__name__, step, loop_vars, cause,
                              block_node=configured.node if configured else None)

    compat.instrument(wrapper, before_step, after_step, on_block_error, set_total, hooks.passthrough, hooks.check_block)
    try:
        _, final = wrapper(loop_components, seeded)
    except (ModularError, *hooks.passthrough):
        raise
    except Exception as e:
        raise ModularError(f"{label}: loop wrapper {wrapper_cls.__name__} failed near step {current}: {type(e).__name__}: {e}") from e
    compat.set_made_by(final, *made, start_position + done_steps)
    return LoopResult(state=final, steps=done_steps, notes=notes, stopped_at=start_position + done_steps)


def _merge_components(label, loop_components, blocks):
    merged = dict(loop_components or {})
    for name, cfg in blocks:
        for key, value in cfg.components.items():
            if value is None:
                continue
            if merged.get(key) is not None and merged[key] is not value:
                raise ConfigError(f"{label}: component '{key}' is given twice with different objects (block '{name}')")
            merged[key] = value
    return merged
