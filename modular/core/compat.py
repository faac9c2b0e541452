"""The one module that talks to diffusers' modular API: loops (`LoopSequentialPipelineBlocks`), blocks, pipeline
states, and what the pack reads of a loaded pipeline that diffusers keeps private (its component specs, the hooks
on its models, its table of schedulers).

Everything version-specific about loops, blocks and pipeline states lives here, so that following upstream
(e.g. its planned `IterativePipelineBlocks`) touches one file; so does what a scheduler carries from one step to
the next (`SCHEDULER_STEPPING`), which the block that drives diffusers schedulers (`blocks/diffusers_step.py`) keeps
in a state through `scheduler_stepping` / `set_scheduler_stepping`. Quirks of diffusers 0.42 absorbed here:
- `from_blocks_dict` keeps the raw dict as `sub_blocks`, so a block given as a class is never
  instantiated: `compose` instantiates classes first.
- `outputs` of a loop omits `loop_intermediate_outputs` and `required_inputs` does not subtract
  values produced inside the loop: `seeded_inputs` reads `inputs` and each param's `required`.
- There is no step callback or interrupt hook: `instrument` replaces `loop_step` on the instance
  (the hook point every wrapper calls once per iteration) and `progress_bar` (to learn the total).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from diffusers.modular_pipelines import (
    ConditionalPipelineBlocks,
    LoopSequentialPipelineBlocks,
    ModularPipelineBlocks,
    PipelineState,
    SequentialPipelineBlocks,
)
from diffusers.modular_pipelines.modular_pipeline_utils import InsertableDict

__all__ = ["PipelineState", "role_of", "compose", "seeded_inputs", "instrument", "load_custom_block_class",
           "state_values", "map_state", "made_by", "stopped_at", "component_specs", "hook_names", "remove_hooks",
           "scheduler_names", "ui_templates", "SCHEDULER_STEPPING", "scheduler_stepping", "set_scheduler_stepping"]

_COMPOSITE = (SequentialPipelineBlocks, ConditionalPipelineBlocks, LoopSequentialPipelineBlocks)


def role_of(cls) -> str | None:
    """"loop" for a concrete loop wrapper, "block" for a leaf block usable inside a loop, else None."""
    if not inspect.isclass(cls) or not issubclass(cls, ModularPipelineBlocks) or inspect.isabstract(cls):
        return None
    if issubclass(cls, LoopSequentialPipelineBlocks):
        return "loop" if cls.__call__ is not LoopSequentialPipelineBlocks.__call__ else None
    if issubclass(cls, _COMPOSITE) or cls is ModularPipelineBlocks:
        return None
    return "block" if cls.__call__ is not ModularPipelineBlocks.__call__ else None


def compose(wrapper_cls, blocks: dict):
    """`wrapper_cls.from_blocks_dict(blocks)` with classes instantiated (the guide's mixed form works)."""
    instances = InsertableDict()
    for name, block in blocks.items():
        instances[name] = block() if inspect.isclass(block) else block
    return wrapper_cls.from_blocks_dict(instances)


def default_blocks(wrapper_cls) -> dict:
    """{name: block} of a loop's own composition (`block_names` / `block_classes`, as diffusers' shipped
    `...DenoiseStep` loops declare it): a class, or the instance diffusers configured there (Wan's loop denoiser
    with its `guider_input_fields`); {} for a wrapper that has none."""
    names = getattr(wrapper_cls, "block_names", None) or []
    classes = getattr(wrapper_cls, "block_classes", None) or []
    return dict(zip(names, classes))


def seeded_inputs(wrapper) -> list:
    """The `InputParam`s the loop reads from the pipeline state before step 0 (loop inputs first)."""
    return [p for p in wrapper.inputs if p.name]


CARRIED = "modular_loops_carried"  # attribute of a PipelineState: components of one run that travel with it
MADE_BY = "modular_loops_made_by"  # attribute of a PipelineState: the loop, blocks and position that made it


def made_by(state) -> dict:
    """{"loop", "blocks", "step"} of the loop run that made `state` ({} for one no loop made); "step" (its name in
    a state file too) is the position it stopped at: read it with `stopped_at`."""
    return dict(getattr(state, MADE_BY, None) or {})


def set_made_by(state, loop: str, blocks: list, position: int | None):
    setattr(state, MADE_BY, {"loop": loop, "blocks": list(blocks), "step": position})


def stopped_at(state) -> int | None:
    """The position in its whole schedule a loop's state stopped at (the steps of it done, so the index of the next
    step); None for a state no loop made."""
    position = made_by(state).get("step")
    return position if isinstance(position, int) and not isinstance(position, bool) else None


def carried(state) -> dict:
    """The components a run carries in its state from node to node (the scheduler set_timesteps has set, the
    guider), the same dict each call ({} set on the state when it has none)."""
    if getattr(state, CARRIED, None) is None:
        setattr(state, CARRIED, {})
    return getattr(state, CARRIED)


def state_values(state) -> dict:
    """name -> value of everything a `PipelineState` holds ({} for None)."""
    return {} if state is None else state.values


def map_state(state, each) -> PipelineState:
    """A new `PipelineState` with `each(v)` of each value of `state` (and of what it carries), its kwargs_type
    groups and what made it; `map_state(state, lambda v: v)` is a shallow copy (`state.copy_state`: a deep one)."""
    new = PipelineState()
    if state is None:
        return new
    for key, value in state.values.items():
        new.values[key] = each(value)
    new.kwargs_mapping = {k: list(v) for k, v in state.kwargs_mapping.items()}
    if getattr(state, CARRIED, None):
        setattr(new, CARRIED, {k: each(v) for k, v in getattr(state, CARRIED).items()})
    if getattr(state, MADE_BY, None):
        setattr(new, MADE_BY, dict(getattr(state, MADE_BY)))
    return new


def snapshot(wrapper, state, block_state, copy_value, loop: str, blocks: list, position: int) -> PipelineState:
    """The pipeline state a loop would leave if it ended now, mid-run: `state` (what the loop was seeded with)
    with the block state written back by diffusers' own `set_block_state`, as the wrapper does at its end. Values
    the loop wrote are copied (`copy_value`): the loop goes on changing its own; the others are shared."""
    now = map_state(state, lambda v: v)
    wrapper.set_block_state(now, block_state)
    for key, value in now.values.items():
        if value is not state.values.get(key):
            now.values[key] = copy_value(value)
    set_made_by(now, loop, blocks, position)
    return now


class _TotalOnlyBar:
    """Stands in for diffusers' tqdm bar: progress is reported per `loop_step`, so `update` is a no-op."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        pass


def instrument(
    wrapper,
    before_step: Callable[[int, object], None],
    after_step: Callable[[int, object], None],
    on_block_error: Callable[[str, object, int, dict, BaseException], BaseException],
    set_total: Callable[[int], None],
    passthrough: tuple = (),
    after_block: Callable[[object, object], None] | None = None,
):
    """Hook the wrapper instance: `before_step(step, block_state)` and `after_step(step + 1, block_state)` around every
    `loop_step`, `after_block(block, block_state)` after each block (it may raise: the error is that
    block's), `on_block_error(...)` turns a block's exception into the one raised, and `set_total(n)`
    receives the total whenever the wrapper opens `self.progress_bar`.

    `loop_step` keeps diffusers' semantics (each sub-block in order on the shared block state). A
    wrapper class that overrides `loop_step` keeps its own; its failures are reported as the
    wrapper's `loop_step`.
    """
    step = 0
    items = list(wrapper.sub_blocks.items())
    own_loop_step = type(wrapper).loop_step
    custom = own_loop_step is not LoopSequentialPipelineBlocks.loop_step

    def loop_step(components, block_state, **loop_vars):
        nonlocal step
        before_step(step, block_state)
        if custom:
            try:
                components, block_state = own_loop_step(wrapper, components, block_state, **loop_vars)
            except passthrough:
                raise
            except Exception as e:
                raise on_block_error("loop_step", wrapper, step, loop_vars, e) from e
        else:
            for name, block in items:
                try:
                    components, block_state = block(components, block_state, **loop_vars)
                    if after_block is not None:
                        after_block(block, block_state)
                except passthrough:
                    raise
                except Exception as e:
                    raise on_block_error(name, block, step, loop_vars, e) from e
        step += 1
        after_step(step, block_state)
        return components, block_state

    def progress_bar(iterable=None, total=None):
        if iterable is not None:
            try:
                set_total(len(iterable))
            except TypeError:
                pass
        elif total is not None:
            set_total(int(total))
        return _TotalOnlyBar(iterable)

    wrapper.loop_step = loop_step
    wrapper.progress_bar = progress_bar
    return wrapper


def load_custom_block_class(folder) -> type:
    """The block class of a diffusers custom-block folder (`modular_config.json` + `.py`), loaded by
    diffusers' own `ModularPipelineBlocks.from_pretrained(..., trust_remote_code=True)`. The folder
    is a local, installed one: nothing is fetched."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "trust_remote_code is enabled. Downloading code" notice is for Hub repos
    try:
        block = ModularPipelineBlocks.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return type(block)


def component_specs(pipeline) -> dict:
    """{name: ComponentSpec} of a loaded `ModularPipeline` (every component its blocks declare)."""
    return pipeline._component_specs


def hook_names(model) -> set:
    """The names of the diffusers hooks (`diffusers.hooks.HookRegistry`) on `model` and its submodules."""
    names = set()
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            names |= set(registry.hooks)
    return names


def hooked(module) -> bool:
    """Whether a diffusers hook is registered on `module` itself (not its submodules): a cheap check per call."""
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and bool(registry.hooks)


def hooks_of(module) -> list:
    """The diffusers hooks registered on `module` itself, in registration order."""
    registry = getattr(module, "_diffusers_hook", None)
    return list(registry.hooks.values()) if registry is not None else []


def remove_hooks(model, names):
    """Remove the named diffusers hooks from `model` and its submodules."""
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(model)
    for name in names:
        registry.remove_hook(name, recurse=True)


def scheduler_names() -> list[str]:
    """diffusers' scheduler classes, by name, from its import table (nothing imported)."""
    import diffusers

    return sorted(n for n in getattr(diffusers, "_import_structure", {}).get("schedulers", []) if n.endswith("Scheduler"))


# What diffusers' schedulers (0.42) carry from one `step` to the next that neither their config nor `set_timesteps`
# makes again: where they stand and their multistep history. name -> "number" (an int, or None) or "tensors" (a
# tensor, a list of tensors and None, or None). The one list of them: a core test (test_core_resume) compares it with
# everything each scheduler the pack drives changes while it steps, so a diffusers that adds one fails there.
SCHEDULER_STEPPING = {
    "_step_index": "number",  # every scheduler: the index of its next step in its sigmas
    "lower_order_nums": "number",  # DPM-Solver, UniPC: how far the multistep warm-up has gone
    "this_order": "number",  # UniPC: the order of its last step
    "model_outputs": "tensors",  # DPM-Solver, UniPC: the last `solver_order` converted model outputs
    "timestep_list": "tensors",  # UniPC: their timesteps
    "last_sample": "tensors",  # UniPC: the sample of its last step (for its corrector)
    "derivatives": "tensors",  # LMS: its last derivatives
}


def scheduler_stepping(scheduler) -> dict:
    """{name: value} of the `SCHEDULER_STEPPING` attributes `scheduler` has (lists copied: it changes its own)."""
    held = vars(scheduler)
    return {name: list(held[name]) if isinstance(held[name], list) else held[name]
            for name in SCHEDULER_STEPPING if name in held}


def set_scheduler_stepping(scheduler, values: dict):
    """Set what `scheduler_stepping` read (on a scheduler made from the same config and `set_timesteps`)."""
    unknown = sorted(set(values) - set(SCHEDULER_STEPPING))
    if unknown:
        raise ValueError(f"{type(scheduler).__name__}: no stepping attribute(s) {', '.join(unknown)} "
                         f"(this diffusers carries {', '.join(SCHEDULER_STEPPING)})")
    for name, value in values.items():
        setattr(scheduler, name, value)


def ui_templates() -> dict:
    """diffusers' UI templates of standard pipeline parameters (its Mellon node templates: `prompt` is text,
    `height` an int, ...), which type the untyped inputs of its blocks; {} where this diffusers has none."""
    try:
        from diffusers.modular_pipelines.mellon_node_utils import MELLON_PARAM_TEMPLATES
    except ImportError:
        return {}
    return MELLON_PARAM_TEMPLATES


DEFAULT_WORKFLOW = "default"


def workflow_names(blocks) -> list[str]:
    """The named workflows of a family's Auto blocks (`_workflow_map`), in diffusers' order; ["default"] for blocks
    that name none (a pipeline's default blocks: one chain, picked by the call's inputs)."""
    if not getattr(type(blocks), "_workflow_map", None):
        return [DEFAULT_WORKFLOW]
    return list(blocks.available_workflows)


def workflow_chain(blocks, name: str, values: dict | None = None):
    """diffusers' own blocks for workflow `name` (`get_workflow`): a sequence of leaf steps and loops. "default" of
    blocks that name no workflows: the chain the call's `values` select (`get_execution_blocks`), as pipe() runs."""
    if name == DEFAULT_WORKFLOW and not getattr(type(blocks), "_workflow_map", None):
        return blocks.get_execution_blocks(**{k: v for k, v in (values or {}).items() if v is not None})
    return blocks.get_workflow(name)


def chain_steps(blocks) -> list[tuple]:
    """(name, block) of a sequence's or a loop's sub-blocks, in order."""
    return list(blocks.sub_blocks.items())


def seed_call(blocks, state: PipelineState, values: dict) -> PipelineState:
    """`state` as `ModularPipeline.__call__(state, **values)` starts `blocks` on it: each of `blocks.inputs` given in
    `values` is set (with its kwargs_type group), or the values of a kwargs_type group given as one dict, else its
    declared default where the state has none. `state` is changed and returned (give a copy); `values` is not.
    A test compares it with diffusers' own (test_core_pipelines: the state `pipe(state=..., **values)` runs on)."""
    # Copied from diffusers.modular_pipelines.modular_pipeline.ModularPipeline.__call__ (0.42.1): its seeding of the
    # state, without the deepcopy (the caller copies) and the run
    passed_kwargs = dict(values)
    for expected_input_param in blocks.inputs:
        name = expected_input_param.name
        default = expected_input_param.default
        kwargs_type = expected_input_param.kwargs_type
        if name in passed_kwargs:
            state.set(name, passed_kwargs.pop(name), kwargs_type)
        elif kwargs_type is not None and kwargs_type in passed_kwargs:
            kwargs_dict = passed_kwargs.pop(kwargs_type)
            for k, v in kwargs_dict.items():
                state.set(k, v, kwargs_type)
        elif name is not None and name not in state.values:
            state.set(name, default, kwargs_type)
    return state


def register_transformer_block(cls):
    """Register a module class as a transformer block for diffusers' layer-skip hooks (its `TransformerBlockRegistry`:
    the block returns (hidden_states, encoder_hidden_states)), so that a guider's `_apply_layer_skip_hook` can hook it."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    TransformerBlockRegistry.register(cls, TransformerBlockMetadata(return_hidden_states_index=0,
                                                                    return_encoder_hidden_states_index=1))
    return cls
