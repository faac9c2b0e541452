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
from ..modular.runner import NO_BLOCKS_HINT, require_blocks
from . import values
from .values import BLOCK_TYPE, STATE_TYPE

CATEGORY = "Modular Loops"
MAX_BLOCKS = 16
BLOCK_SOCKET = re.compile(r"block_(\d+)")
log = logging.getLogger("modular_loops")


def node_id(entry) -> str:
    return f"{'ModularLoop' if entry.role == 'loop' else 'ModularBlock'}_{entry.name}"


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
    where = {"pack": "Modular Loops", "user": "a user blocks folder", "custom": "a diffusers custom-block folder"}
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
        return values.input_types(cls.specs(), cls.ENTRY.component_specs())

    @classmethod
    def check(cls, kwargs):
        return values.json_errors(cls.specs(), kwargs)

    @classmethod
    def given(cls, kwargs):
        """-> (values given on the node, components connected to it)."""
        entry = cls.ENTRY
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
        try:
            require_blocks([k for k in kwargs if BLOCK_SOCKET.fullmatch(k)], loop_where(cls.ENTRY.name), cls.NO_BLOCKS_HINT)
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
        # Block sockets last: the frontend grows them at the end of the node, in run order.
        return {"required": required, "optional": {**state, **optional, **blocks}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, unique_id=None, state=None, **kwargs):
        from . import host  # ComfyUI's hooks, only when a loop runs inside it

        entry = self.ENTRY
        given, components = self.given(kwargs)
        with host.failed_block_reported():
            result = run_loop(entry.cls, attached_blocks(kwargs), loop_values=given, state=state, components=components,
                              hooks=host.step_hooks(progress=host.progress_bar_hook()), device=host.device(),
                              label=loop_where(entry.name, unique_id))
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


def _ordinal(i):
    return {1: "first", 2: "second", 3: "third"}.get(i, f"{i}th")


def make_node(entry, base=None, nid=None, provided_in_loop=()) -> type:
    """The node class of `entry`: a block node, a loop node, or `base` (e.g. a sampler node) under `nid`.
    `provided_in_loop`: declared inputs the node does not show."""
    base = base or (LoopNode if entry.role == "loop" else BlockNode)
    attrs = {"ENTRY": entry, "DESCRIPTION": _description(entry), "PROVIDED_IN_LOOP": frozenset(provided_in_loop),
             "__module__": __name__}
    cls = type(nid or node_id(entry), (base,), attrs)
    names = values.json_widget_names(cls.specs())
    if entry.role == "loop":
        # ComfyUI files a failed check once per validated input it was given; the JSON widgets are always
        # given, and where there are none the hidden unique_id is, so a problem is reported exactly once.
        names = (names or ["unique_id"]) + list(block_sockets())
    cls.VALIDATE_INPUTS = _validator(names, lambda c, kw: c.check(kw))
    return cls


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
