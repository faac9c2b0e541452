"""The node mappings ComfyUI loads: blocks discovered through the core (the pack's, the blocks folders'),
each turned into generated nodes, plus the state nodes; GET /modular_loops/blocks, and GET /modular_loops/expand (the
chain of step and loop nodes a workflow node expands into)."""

from __future__ import annotations

import logging
import os

import diffusers
import folder_paths

from ..modular import discover
from . import pipelines, sampling, state_files
from .factory import generate_nodes

BLOCKS_FOLDER = "modular_blocks"
log = logging.getLogger("modular_loops")


def block_folders() -> list[str]:
    """`ComfyUI/models/modular_blocks/` and any `modular_blocks:` paths of extra_model_paths.yaml."""
    default = os.path.join(folder_paths.models_dir, BLOCKS_FOLDER)
    if BLOCKS_FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[BLOCKS_FOLDER]
        if default not in paths:
            paths.insert(0, default)
        exts.add(".py")
    else:
        folder_paths.folder_names_and_paths[BLOCKS_FOLDER] = ([default], {".py"})
    os.makedirs(default, exist_ok=True)
    return list(folder_paths.get_folder_paths(BLOCKS_FOLDER))


def build_mappings():
    folders = block_folders()
    registry = discover(folders, include_shipped=True)
    for problem in registry.problems:
        log.error("[Modular Loops] could not load blocks from %s", problem)
    generated = generate_nodes(registry, (pipelines.entry_nodes, sampling.entry_nodes))
    classes = {nid: node.cls for nid, node in generated.items()}
    names = {nid: node.display for nid, node in generated.items()}
    origins = {nid: node.origin for nid, node in generated.items()}
    for nid, (cls, display) in {**state_files.NODES, **pipelines.NODES, **pipelines.guider_nodes()}.items():
        classes[nid] = cls
        names[nid] = display
    return classes, names, {"nodes": origins, "folders": folders, "problems": [str(p) for p in registry.problems],
                            "diffusers_version": diffusers.__version__}  # a saved diffusers node records it


def add_routes(info):
    """GET /modular_loops/blocks: the installed loops and blocks, the blocks folders, the load problems."""
    from aiohttp import web
    from server import PromptServer

    if getattr(PromptServer, "instance", None) is None:  # imported outside a running server
        log.info("[Modular Loops] no PromptServer instance: /modular_loops/blocks not added")
        return

    @PromptServer.instance.routes.get("/modular_loops/blocks")
    async def installed_blocks(request):
        return web.json_response(info)

    @PromptServer.instance.routes.get("/modular_loops/expand")
    async def expanded_workflow(request):
        """?node=ModularWorkflow_<Class>&workflow=<name>&given=a,b: the chain of nodes it expands into."""
        q = request.rel_url.query
        given = [n for n in q.get("given", "").split(",") if n]
        try:
            chain = pipelines.expand_workflow(NODE_CLASS_MAPPINGS, q.get("node", ""), q.get("workflow", ""), given)
        except Exception as e:  # an unknown node or workflow: said, not a server error
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=400)
        return web.json_response(chain)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, INSTALLED = build_mappings()
add_routes(INSTALLED)
