"""Nodes around a pipeline state: one value out of it, a table of what it holds, saving it to a file and loading
it back (`modular/state_files.py`)."""

from __future__ import annotations

import logging
import os

from ..modular import describe, state_values
from ..modular.state_files import SUFFIX, StateFileError, confined, load_state, read_info, save_state
from .factory import CATEGORY
from .widgets import ANY, STATE_TYPE


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
        return (value_named(state, key, "Get State Value"),)


def value_named(state, key, node):
    """The state's value `key`; a KeyError naming `node` and the values the state does have."""
    held = state_values(state)
    if key not in held:
        raise KeyError(f"{node}: the state has no value named '{key}' (it has: {', '.join(held) or 'none'})")
    return held[key]


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
log = logging.getLogger("modular_loops")


STATES_PREFIX = "states/modular_loops"


class SaveState:
    DESCRIPTION = ("Saves a pipeline state to one .safetensors file in ComfyUI's output folder (numbered like Save "
                   "Image): its tensors as tensors, its other values as JSON in the file's metadata, with the loop, "
                   "blocks and step that made it. A value that is neither (a generator, a model, a scheduler) stops "
                   "the save, naming it, unless `skip_unsupported`; nothing half-written is left.")
    CATEGORY = f"{CATEGORY}/state"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("file",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,),
                             "filename_prefix": ("STRING", {"default": STATES_PREFIX,
                                                            "tooltip": "Folder and name inside the output folder."}),
                             "skip_unsupported": ("BOOLEAN", {"default": False, "tooltip": (
                                 "Leave out values a state file cannot hold (listed in the log) instead of failing.")})}}

    def save(self, state, filename_prefix, skip_unsupported):
        path, shown = new_state_file(filename_prefix)
        try:
            skipped = save_state(state, path, skip_unsupported=skip_unsupported)
        except StateFileError as e:
            raise StateFileError(f"Save State: {e}") from e
        if skipped:
            log.warning("[Modular Loops] Save State: left out %s", ", ".join(skipped))
        return {"ui": {"text": [shown]}, "result": (shown,)}


def new_state_file(prefix: str) -> tuple[str, str]:
    """(path, name as Load State lists it) of a new state file in ComfyUI's output folder, numbered like Save Image
    numbers its images (`prefix` may name a subfolder; ComfyUI refuses one that leads out of the folder)."""
    import folder_paths

    folder, name, counter, _, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
    path = os.path.join(folder, f"{name}_{counter:05}_{SUFFIX}")
    return path, shown_name(path)


def shown_name(path) -> str:
    """A file of the output folder named as Load State lists it: `<path in the folder> [output]`."""
    import folder_paths

    rel = os.path.relpath(str(path), folder_paths.get_output_directory()).replace(os.sep, "/")
    return f"{rel} [output]"


def state_files() -> list[str]:
    """The state files of ComfyUI's input folder, and of its output folder (marked " [output]")."""
    import folder_paths

    found = []
    for root, mark in ((folder_paths.get_input_directory(), ""), (folder_paths.get_output_directory(), " [output]")):
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                if name.endswith(SUFFIX):
                    path = os.path.join(dirpath, name)
                    try:
                        read_info(path)
                    except StateFileError:
                        continue  # a checkpoint, a latent: not a state
                    found.append(os.path.relpath(path, root).replace(os.sep, "/") + mark)
    return sorted(found)


def state_path(name: str) -> str:
    """The file a Load State name (from a workflow: untrusted) stands for, confined to ComfyUI's input / output."""
    import folder_paths

    plain, base = folder_paths.annotated_filepath(name)
    return str(confined(plain, base or folder_paths.get_input_directory()))


class LoadState:
    DESCRIPTION = ("Loads a pipeline state saved by Save State, from ComfyUI's input folder or its output folder. Only "
                   "safetensors and JSON are read: nothing is unpickled or evaluated.")
    CATEGORY = f"{CATEGORY}/state"
    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state_file": (state_files() or ["(no state files)"],
                                            {"tooltip": "A state file of the input folder, or of the output folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, state_file):
        try:
            path = state_path(state_file)
        except StateFileError as e:
            return f"Load State: {e}"
        return True if os.path.isfile(path) else f"Load State: no state file {state_file!r}"

    @classmethod
    def IS_CHANGED(cls, state_file):
        try:
            stat = os.stat(state_path(state_file))
        except (OSError, StateFileError):
            return ""
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def load(self, state_file):
        state, info = load_state(state_path(state_file))
        return (state,)


NODES.update({"ModularStateSave": (SaveState, "Save State"), "ModularStateLoad": (LoadState, "Load State")})
