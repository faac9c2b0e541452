"""Nodes that read a pipeline state: one value out of it, or a table of what it holds."""

from __future__ import annotations

from ..modular import describe, state_values
from .factory import CATEGORY
from .values import ANY, STATE_TYPE


class GetStateValue:
    DESCRIPTION = "Reads one value out of a pipeline state (e.g. a loop's result) by its name."
    CATEGORY = f"{CATEGORY}/state"
    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("value",)
    FUNCTION = "get"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "x", "tooltip": "Name of the value."})}}

    def get(self, state, key):
        held = state_values(state)
        if key not in held:
            keys = ", ".join(held) or "none"
            raise KeyError(f"Get State Value: the state has no value named '{key}' (it has: {keys})")
        return (held[key],)


class InspectState:
    DESCRIPTION = "Lists the values of a pipeline state: name, type, and shape / dtype / device for tensors."
    CATEGORY = f"{CATEGORY}/state"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "inspect"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,)}}

    def inspect(self, state):
        rows = describe(state)
        text = "\n".join(f"{key}: {kind} {detail}" for key, kind, detail in rows) or "(empty state)"
        return {"ui": {"text": [text]}, "result": (text,)}


NODES = {"ModularStateGet": (GetStateValue, "Get State Value"), "ModularStateInspect": (InspectState, "Inspect State")}
