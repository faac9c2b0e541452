"""Node classes generated from block declarations: one loop node per loop wrapper, one block node per
loop block. Node ids are a compatibility promise (docs/compatibility.md): `ModularLoop_<Class>`,
`ModularBlock_<Class>` (and `ModularStep_<Class>` for a pipeline step, `nodes/diffusers/`), named after the
class alone so that moving a file keeps workflows working. Other areas make the nodes of the entries that are
theirs (`generate_nodes`' `makers`): denoise loops (`nodes/sampling.py`), diffusers' own (`nodes/diffusers/`).

Pure: nothing here imports ComfyUI at import time (a loop node's run takes ComfyUI's hooks from `host`)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
from dataclasses import dataclass

from ..modular import BlockConfig, ConfigError, run_loop
from ..modular.core.errors import node_where
from ..modular.core.runner import NO_BLOCKS_HINT, require_blocks
from ..modular.sampling import is_denoise_loop, provided_in_loop
from . import names, widgets
from .names import MAX_BLOCKS
from .widgets import BLOCK_TYPE, STATE_TYPE

CATEGORY = "Modular Loops"
BLOCK_SOCKET = re.compile(rf"{names.BLOCK_SOCKET}(\d+)")
log = logging.getLogger("modular_loops")


def node_id(entry) -> str:
    return names.NODE_PREFIXES[entry.role] + entry.name


class _Lazy:
    """A class attribute built from the class on first read (a class loaded on use is imported only then), e.g.
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
    return {f"{names.BLOCK_SOCKET}{i}": (BLOCK_TYPE, {"tooltip": f"Loop block run {_ordinal(i)} in every step."})
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
    PROVIDED_IN_LOOP = frozenset()  # declared inputs the node does not show (`sampling.provided_in_loop`)

    @classmethod
    def specs(cls):
        """The declared inputs a node shows: all of them but those the loop it runs in provides."""
        return [s for s in cls.ENTRY.input_specs() if s.name not in cls.PROVIDED_IN_LOOP]

    @classmethod
    def component_sockets(cls):
        """The declared components the node takes as sockets."""
        return cls.ENTRY.component_specs()

    @classmethod
    def declared_inputs(cls):
        return widgets.input_types(cls.specs(), cls.component_sockets())

    @classmethod
    def check(cls, kwargs):
        return widgets.json_errors(cls.specs(), kwargs) + widgets.size_errors(cls.specs(), kwargs)

    @classmethod
    def given(cls, kwargs):
        """-> (values given on the node, components connected to it)."""
        sockets = cls.component_sockets()
        components = {s.name: kwargs[s.name] for s in sockets if kwargs.get(s.name) is not None}
        return widgets.given_values(cls.specs(), kwargs, sockets, cls.ENTRY.name), components


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
        if not attached and cls.ENTRY.default_blocks:
            return problems  # it runs its own blocks (`block_classes`)
        try:
            require_blocks(attached, node_where(cls.ENTRY.name), cls.NO_BLOCKS_HINT)
        except ConfigError as e:
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
    def own_sockets(cls) -> dict:
        """Sockets of the node's own, after `state` (none here; a pipeline's loop adds its pipeline's)."""
        return {}

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        state = {"state": (STATE_TYPE, {"tooltip": "Starting pipeline state, e.g. a previous loop's result."}),
                 **cls.own_sockets()}
        # Block sockets last: the frontend grows them at the end of the node, in run order.
        return {"required": required, "optional": {**state, **optional, **block_sockets()},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    @contextlib.contextmanager
    def run_components(self, components, blocks, state, label, **sockets):
        """The components this run's blocks see (here: those connected to the nodes)."""
        yield components

    def run(self, unique_id=None, state=None, **kwargs):
        from . import host  # ComfyUI's hooks, only when a loop runs inside it

        entry, label, blocks = self.ENTRY, node_where(self.ENTRY.name, unique_id), attached_blocks(kwargs)
        sockets = {name: kwargs.pop(name, None) for name in self.own_sockets()}
        given, components = self.given(kwargs)
        with self.run_components(components, blocks, state, label, **sockets) as components:
            return host.reported(lambda: run_loop(
                entry.cls, blocks, loop_values=given, state=state, components=components,
                hooks=host.step_hooks(progress=host.progress_bar_hook()), device=host.device(), label=label))


def _ordinal(i):
    return {1: "first", 2: "second", 3: "third"}.get(i, f"{i}th")


def make_node(entry, base=None, nid=None, provided_in_loop=(), category=None) -> type:
    """The node class of `entry`: a block node, a loop node, or `base` (e.g. a sampler node) under `nid`.
    `provided_in_loop`: declared inputs the node does not show; `category`: where the node library files it.
    Nothing of the class is read here (a class loaded on use is imported when ComfyUI first lists the node)."""
    base = base or (LoopNode if entry.role == "loop" else BlockNode)
    attrs = {"ENTRY": entry, "PROVIDED_IN_LOOP": frozenset(provided_in_loop), "__module__": base.__module__,
             "DESCRIPTION": _Lazy(lambda c: _description(c.ENTRY)), "VALIDATE_INPUTS": _Lazy(_validate_inputs)}
    if category is not None:
        attrs["CATEGORY"] = category
    return type(nid or node_id(entry), (base,), attrs)


def _validate_inputs(cls):
    checked = widgets.validated_names(cls.specs())
    if cls.ENTRY.role == "loop":
        # ComfyUI files a failed check once per validated input it was given; the JSON widgets are always
        # given, and where there are none the hidden unique_id is, so a problem is reported exactly once.
        checked = (checked or ["unique_id"]) + list(block_sockets())
    return _validator(checked, lambda c, kw: c.check(kw))


@dataclass(frozen=True)
class GeneratedNode:
    cls: type
    display: str
    origin: dict  # what a saved workflow records of where the class came from


def entry_nodes(entry, registry) -> dict:
    """{node id: (class, display name)} of a plain loop or block: one node, without the inputs the loop it is
    written for provides (`sampling.provided_in_loop`)."""
    return {node_id(entry): (make_node(entry, provided_in_loop=provided_in_loop(registry, entry)), entry.name)}


def is_plain(entry) -> bool:
    """A loop or block whose node is made here: not a denoise loop (its nodes are samplers, `nodes/sampling.py`),
    not one of diffusers' own (`nodes/diffusers/`)."""
    return entry.origin != "diffusers" and not is_denoise_loop(entry)


def generate_nodes(registry, makers=()) -> dict[str, GeneratedNode]:
    """{node id: GeneratedNode} for the entries of `registry`: the first of `makers` (`maker(entry, registry)` ->
    {id: (class, display name)}, or None for an entry that is not its area's) that makes an entry's nodes makes
    them, else `entry_nodes` where the entry `is_plain`. Without makers, only plain loops and blocks get nodes."""
    generated = {}
    for entry in registry.entries.values():
        made = next((m for m in (maker(entry, registry) for maker in makers) if m is not None), None)
        if made is None:
            made = entry_nodes(entry, registry) if is_plain(entry) else {}
        origin = {"class": entry.name, "role": entry.role, "origin": entry.origin, "source": shown_source(entry)}
        for nid, (cls, display) in made.items():
            generated[nid] = GeneratedNode(cls, display, origin)
    return generated


def shown_source(entry) -> str:
    """Where a class came from, as a saved workflow may record it: never a full path (workflows are shared)."""
    if entry.origin == "pack":
        return "modular/blocks/" + os.path.basename(entry.source)
    if entry.origin == "diffusers":
        return entry.source  # diffusers/modular_pipelines/<family>/<stage>.py, inside diffusers
    return os.path.basename(os.path.normpath(entry.source))
