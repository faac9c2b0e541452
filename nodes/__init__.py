"""ComfyUI adapter: discovers blocks through the core and turns each into a generated node."""

from __future__ import annotations

import logging
import os

import folder_paths

from ..modular import discover
from ..modular.registry import user_dirs_from_env
from .factory import make_node, node_id
from .state_nodes import NODES

BLOCKS_FOLDER = "modular_blocks"
log = logging.getLogger("modular_loops")


def block_folders() -> list[str]:
    """`ComfyUI/models/modular_blocks/`, any `modular_blocks:` paths of extra_model_paths.yaml, and the
    folders in $MODULAR_LOOPS_BLOCKS."""
    default = os.path.join(folder_paths.models_dir, BLOCKS_FOLDER)
    if BLOCKS_FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[BLOCKS_FOLDER]
        if default not in paths:
            paths.insert(0, default)
        exts.add(".py")
    else:
        folder_paths.folder_names_and_paths[BLOCKS_FOLDER] = ([default], {".py"})
    os.makedirs(default, exist_ok=True)
    return list(folder_paths.get_folder_paths(BLOCKS_FOLDER)) + user_dirs_from_env()


def build_mappings():
    registry = discover(block_folders())
    for problem in registry.problems:
        log.error("[Modular Loops] could not load blocks from %s", problem)
    classes, names = {}, {}
    for entry in registry.entries.values():
        nid = node_id(entry)
        classes[nid] = make_node(entry)
        names[nid] = entry.name
    for nid, (cls, display) in NODES.items():
        classes[nid] = cls
        names[nid] = display
    return classes, names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = build_mappings()
