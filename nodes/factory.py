"""Node classes generated from block declarations: one loop node per loop wrapper, one block node per
loop block. Node ids are a compatibility promise (docs/compatibility.md): `ModularLoop_<Class>` and
`ModularBlock_<Class>`, named after the class alone so that moving a file keeps workflows working."""

from __future__ import annotations

import inspect
import logging
import re

import comfy.model_management
import comfy.utils

from ..modular import BlockConfig, StepHooks, run_loop
from ..modular.denoise import LOOP_VALUES
from . import values
from .values import BLOCK_TYPE, STATE_TYPE

CATEGORY = "Modular Loops"
MAX_BLOCKS = 16
BLOCK_SOCKET = re.compile(r"block_(\d+)")
log = logging.getLogger("modular_loops")


def node_id(entry) -> str:
    return f"{'ModularLoop' if entry.role == 'loop' else 'ModularBlock'}_{entry.name}"


def attached_blocks(kwargs) -> list:
    """(socket, BlockConfig) of the block nodes connected to block_1, block_2, ..., in socket order."""
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

    @classmethod
    def specs(cls):
        """The declared inputs a node shows: a block's, or a denoise loop's, without the values a sampler
        provides itself or its blocks write inside the loop (`modular.denoise.LOOP_VALUES`)."""
        specs = cls.ENTRY.input_specs()
        if cls.ENTRY.role == "block" or cls.ENTRY.is_denoise_loop:
            specs = [s for s in specs if s.name not in LOOP_VALUES]
        return specs

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
        return values.given_values(cls.specs(), kwargs), components


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
        return (BlockConfig(self.ENTRY.cls, given, components, f"node {unique_id}"),)


class BlockSocketsNode(DeclaredNode):
    """A node that runs the blocks attached to its block_1, block_2, ... sockets."""

    NO_BLOCKS_HINT = "connect a block node to block_1"

    @classmethod
    def check(cls, kwargs):
        problems = super().check(kwargs)
        if not any(BLOCK_SOCKET.fullmatch(k) for k in kwargs):
            problems.append(f"no loop blocks attached: {cls.NO_BLOCKS_HINT}")
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
        entry = self.ENTRY
        attached = attached_blocks(kwargs)
        given, components = self.given(kwargs)
        pbar = comfy.utils.ProgressBar(1)

        def progress(step, total, preview):
            pbar.update_absolute(step, total if total else step + 1, preview)

        result = run_loop(
            entry.cls,
            attached,
            loop_values=given,
            state=state,
            components=components,
            hooks=StepHooks(
                progress=progress,
                interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
                passthrough=(comfy.model_management.InterruptProcessingException,),
            ),
            device=comfy.model_management.get_torch_device(),
            label=f"{entry.name} (node {unique_id})",
        )
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


def _ordinal(i):
    return {1: "first", 2: "second", 3: "third"}.get(i, f"{i}th")


def make_node(entry, base=None, nid=None) -> type:
    """The node class of `entry`: a block node, a loop node, or `base` (e.g. a sampler node) under `nid`."""
    base = base or (LoopNode if entry.role == "loop" else BlockNode)
    attrs = {"ENTRY": entry, "DESCRIPTION": _description(entry), "__module__": __name__}
    cls = type(nid or node_id(entry), (base,), attrs)
    names = values.json_widget_names(cls.specs())
    if entry.role == "loop":
        # ComfyUI files a failed check once per validated input it was given; the JSON widgets are always
        # given, and where there are none the hidden unique_id is, so a problem is reported exactly once.
        names = (names or ["unique_id"]) + list(block_sockets())
    cls.VALIDATE_INPUTS = _validator(names, lambda c, kw: c.check(kw))
    return cls
