"""Node classes generated from block declarations: one loop node per loop wrapper, one block node per
loop block. Node ids are a compatibility promise (docs/compatibility.md): `ModularLoop_<Class>` and
`ModularBlock_<Class>`, named after the class alone so that moving a file keeps workflows working.

Pure: nothing here imports ComfyUI at import time (a loop node's run takes ComfyUI's hooks from `host`)."""

from __future__ import annotations

import inspect
import logging
import os
import re
from dataclasses import dataclass

from ..modular import BlockConfig, LoopConfigError, run_loop
from ..modular.errors import loop_where
from ..modular.pipelines import RunComponents, check_guidance, run_step
from ..modular.runner import NO_BLOCKS_HINT, require_blocks
from . import values
from .values import BLOCK_TYPE, GUIDER_TYPE, PIPELINE_TYPE, SCHEDULER_TYPE, STATE_TYPE

CATEGORY = "Modular Loops"
MAX_BLOCKS = 16
BLOCK_SOCKET = re.compile(r"block_(\d+)")
log = logging.getLogger("modular_loops")


def node_id(entry) -> str:
    kind = "ModularLoop" if entry.role == "loop" else "ModularStep" if is_step(entry) else "ModularBlock"
    return f"{kind}_{entry.name}"


def is_shipped(entry) -> bool:
    """One of diffusers' own classes (`modular.shipped`): its components come from a loaded pipeline."""
    return entry.origin == "diffusers"


def is_step(entry) -> bool:
    return getattr(entry, "is_step", False)


def shipped_sockets(entry) -> dict:
    """The pipeline socket of a shipped loop or step, and guider / scheduler sockets where it declares those."""
    sockets = {"pipeline": (PIPELINE_TYPE, {"tooltip": "The loaded diffusers pipeline whose components it uses."})}
    declared = {s.name for s in entry.component_specs()}
    if "guider" in declared:
        sockets["guider"] = (GUIDER_TYPE, {"tooltip": "A guider node: the run's guider from this node on."})
    if "scheduler" in declared:
        sockets["scheduler"] = (SCHEDULER_TYPE, {"tooltip": "A scheduler node: the run's scheduler from this node on "
                                                            "(connect it where the timesteps are set)."})
    return sockets


class _Lazy:
    """A class attribute built from the class on first read (a shipped class is imported only then), e.g.
    DESCRIPTION and VALIDATE_INPUTS, which ComfyUI reads when it lists or validates the node."""

    def __init__(self, build):
        self.build = build

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner):
        value = self.build(owner)
        setattr(owner, self.name, value)
        return value.__get__(obj, owner) if hasattr(value, "__get__") and isinstance(value, classmethod) else value


def attached_blocks(kwargs) -> list:
    """(socket, BlockConfig) of the block nodes connected to block_1, block_2, ..., in socket order
    (by number: block_2 runs before block_10)."""
    attached = [(k, v) for k, v in kwargs.items() if BLOCK_SOCKET.fullmatch(k) and v is not None]
    attached.sort(key=lambda kv: int(BLOCK_SOCKET.fullmatch(kv[0]).group(1)))
    return attached


def block_sockets():
    return {f"block_{i}": (BLOCK_TYPE, {"tooltip": f"Loop block run {_ordinal(i)} in every step."})
            for i in range(1, MAX_BLOCKS + 1)}


def _description(entry) -> str:
    where = {"pack": "Modular Loops", "user": "a user blocks folder", "custom": "a diffusers custom-block folder",
             "diffusers": f"diffusers ({entry.source})"}
    text = entry.description.strip()
    return (text + "\n\n" if text else "") + f"{entry.cls.__name__} from {where[entry.origin]}."


def _validator(names, check):
    """A VALIDATE_INPUTS that ComfyUI sees with exactly `names` as arguments, so its own min / max
    checks still run for every other input."""

    def validate(cls, **kwargs):
        kwargs.pop("unique_id", None)
        problems = check(cls, kwargs)
        return True if not problems else "; ".join(problems)

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ["cls", *names]]
    validate.__signature__ = inspect.Signature(params)
    return classmethod(validate)


class DeclaredNode:
    """What block and loop nodes share: inputs from the class's declarations, their JSON checks, and
    reading the given values and components back out of ComfyUI's kwargs."""

    ENTRY = None
    PROVIDED_IN_LOOP = frozenset()  # declared inputs the node does not show (`Registry.provided_in_loop`)

    @classmethod
    def specs(cls):
        """The declared inputs a node shows: all of them but those the loop it runs in provides."""
        return [s for s in cls.ENTRY.input_specs() if s.name not in cls.PROVIDED_IN_LOOP]

    @classmethod
    def declared_inputs(cls):
        components = [] if is_shipped(cls.ENTRY) else cls.ENTRY.component_specs()  # shipped: from the pipeline
        return values.input_types(cls.specs(), components)

    @classmethod
    def check(cls, kwargs):
        return values.json_errors(cls.specs(), kwargs)

    @classmethod
    def given(cls, kwargs):
        """-> (values given on the node, components connected to it)."""
        entry = cls.ENTRY
        if is_shipped(entry):
            return values.given_values(cls.specs(), kwargs), {}
        components = {s.name: kwargs[s.name] for s in entry.component_specs() if kwargs.get(s.name) is not None}
        return values.given_values(cls.specs(), kwargs, entry.component_specs()), components


class BlockNode(DeclaredNode):
    """A loop block's node: its widgets and sockets configure the block; the output goes to a loop node."""

    RETURN_TYPES = (BLOCK_TYPE,)
    RETURN_NAMES = ("block",)
    FUNCTION = "configure"
    CATEGORY = f"{CATEGORY}/blocks"

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        return {"required": required, "optional": optional, "hidden": {"unique_id": "UNIQUE_ID"}}

    def configure(self, unique_id=None, **kwargs):
        given, components = self.given(kwargs)
        return (BlockConfig(self.ENTRY.cls, given, components, unique_id),)


class BlockSocketsNode(DeclaredNode):
    """A node that runs the blocks attached to its block_1, block_2, ... sockets."""

    NO_BLOCKS_HINT = NO_BLOCKS_HINT

    @classmethod
    def check(cls, kwargs):
        problems = super().check(kwargs)
        attached = [k for k in kwargs if BLOCK_SOCKET.fullmatch(k)]
        if not attached and is_shipped(cls.ENTRY) and cls.ENTRY.shipped.default_blocks:
            return problems  # it runs its own blocks (`block_classes`)
        try:
            require_blocks(attached, loop_where(cls.ENTRY.name), cls.NO_BLOCKS_HINT)
        except LoopConfigError as e:
            problems.append(str(e))
        return problems


class LoopNode(BlockSocketsNode):
    """A loop wrapper's node: runs `loop_step` over the block nodes attached to block_1, block_2, ...
    in socket order, all sharing one block state, and outputs the final pipeline state."""

    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "run"
    CATEGORY = f"{CATEGORY}/loops"

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        blocks = block_sockets()
        state = {"state": (STATE_TYPE, {"tooltip": "Starting pipeline state, e.g. a previous loop's result."})}
        if is_shipped(cls.ENTRY):
            state.update(shipped_sockets(cls.ENTRY))
        # Block sockets last: the frontend grows them at the end of the node, in run order.
        return {"required": required, "optional": {**state, **optional, **blocks}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, unique_id=None, state=None, pipeline=None, guider=None, scheduler=None, **kwargs):
        from . import host  # ComfyUI's hooks, only when a loop runs inside it

        entry = self.ENTRY
        given, components = self.given(kwargs)
        if is_shipped(entry):
            components = run_components(entry, pipeline, guider, scheduler, loop_where(entry.name, unique_id),
                                        attached_blocks(kwargs))
            if components is not None and state is not None:
                check_guidance(components.guider_for(state), state, loop_where(entry.name, unique_id))
        try:
            with host.failed_block_reported():
                result = run_loop(entry.cls, attached_blocks(kwargs), loop_values=given, state=state,
                                  components=components, hooks=host.step_hooks(progress=host.progress_bar_hook()),
                                  device=host.device(), label=loop_where(entry.name, unique_id))
        finally:
            if isinstance(components, RunComponents):
                components.cleanup()
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


def run_components(entry, pipeline, guider, scheduler, label, blocks=()):
    """The components a shipped loop or step sees in one run: the pipeline's, with a fresh guider / scheduler from
    a guider / scheduler node, the modules it uses loaded by ComfyUI's model management onto ComfyUI's device."""
    from . import host

    if pipeline is None and entry.component_specs():
        needs = ", ".join(s.name for s in entry.component_specs())
        raise LoopConfigError(f"{label}: connect a Load Diffusers Pipeline node to 'pipeline' (it uses {needs})")
    if pipeline is None:
        return None
    used = {s.name for s in entry.component_specs()}
    for _, config in blocks:
        used |= {c.name for c in config.cls().expected_components}
    host.load_components(pipeline, used)
    return RunComponents(pipeline, {"guider": guider.make() if guider is not None else None,
                                    "scheduler": scheduler.make(pipeline) if scheduler is not None else None,
                                    "_execution_device": host.pipeline_device(pipeline)})


class StepNode(DeclaredNode):
    """One of diffusers' pipeline steps around a loop (text encoder, set timesteps, prepare latents, decode, ...):
    runs the block once on the incoming state and outputs the new state."""

    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        own = {"state": (STATE_TYPE, {"tooltip": "The pipeline state so far (the previous step's output)."}),
               **shipped_sockets(cls.ENTRY)}
        return {"required": required, "optional": {**own, **optional}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, unique_id=None, state=None, pipeline=None, guider=None, scheduler=None, **kwargs):
        from . import host

        given, _ = self.given(kwargs)
        components = run_components(self.ENTRY, pipeline, guider, scheduler, loop_where(self.ENTRY.name, unique_id))
        try:
            with host.failed_block_reported():
                result = run_step(self.ENTRY.cls, given, state, components, unique_id)
        finally:
            if components is not None:
                components.cleanup()
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


def _ordinal(i):
    return {1: "first", 2: "second", 3: "third"}.get(i, f"{i}th")


def make_node(entry, base=None, nid=None, provided_in_loop=()) -> type:
    """The node class of `entry`: a block node, a loop node, a step node, or `base` (e.g. a sampler node) under
    `nid`. `provided_in_loop`: declared inputs the node does not show. Nothing of the class is read here (a
    shipped class is imported when ComfyUI first lists the node)."""
    base = base or (LoopNode if entry.role == "loop" else StepNode if is_step(entry) else BlockNode)
    attrs = {"ENTRY": entry, "PROVIDED_IN_LOOP": frozenset(provided_in_loop), "__module__": __name__,
             "DESCRIPTION": _Lazy(lambda c: _description(c.ENTRY)), "VALIDATE_INPUTS": _Lazy(_validate_inputs)}
    if is_shipped(entry):
        group = "diffusers/" + entry.category
        attrs["CATEGORY"] = f"{CATEGORY}/{group}"
    return type(nid or node_id(entry), (base,), attrs)


def _validate_inputs(cls):
    names = values.json_widget_names(cls.specs())
    if cls.ENTRY.role == "loop":
        # ComfyUI files a failed check once per validated input it was given; the JSON widgets are always
        # given, and where there are none the hidden unique_id is, so a problem is reported exactly once.
        names = (names or ["unique_id"]) + list(block_sockets())
    return _validator(names, lambda c, kw: c.check(kw))


@dataclass(frozen=True)
class GeneratedNode:
    cls: type
    display: str
    origin: dict  # what a saved workflow records of where the class came from


def generate_nodes(registry, denoise_nodes=None) -> dict[str, GeneratedNode]:
    """{node id: GeneratedNode} for every entry of `registry`. A denoise loop gets the nodes
    `denoise_nodes(entry, make)` returns ({id: (class, display name)}; `make(base, nid)` builds one);
    without `denoise_nodes` denoise loops get none."""
    generated = {}
    for entry in registry.entries.values():
        hidden = registry.provided_in_loop(entry)

        def make(base=None, nid=None, entry=entry, hidden=hidden):
            return make_node(entry, base, nid, hidden)

        if entry.is_denoise_loop:
            made = denoise_nodes(entry, make) if denoise_nodes is not None else {}
        else:
            made = {node_id(entry): (make(), entry.name)}
        origin = {"class": entry.name, "role": entry.role, "origin": entry.origin, "source": shown_source(entry)}
        for nid, (cls, display) in made.items():
            generated[nid] = GeneratedNode(cls, display, origin)
    return generated


def shown_source(entry) -> str:
    """Where a class came from, as a saved workflow may record it: never a full path (workflows are shared)."""
    if entry.origin == "pack":
        return "modular/blocks/" + os.path.basename(entry.source)
    return os.path.basename(os.path.normpath(entry.source))
