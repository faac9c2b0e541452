"""The node mappings ComfyUI loads: blocks discovered through the core (the pack's, the blocks folders'),
each turned into generated nodes, plus the state nodes; GET /modular_loops/blocks, and GET /modular_loops/expand (the
chain of step and loop nodes a workflow node expands into)."""

from __future__ import annotations

import logging
import os
import time

import diffusers
import folder_paths

from ..modular import discover
from ..modular.pipelines.declarations import DeclarationCache
from ..modular.pipelines.scan import add_shipped
from . import listing, names, sampling, state_files
from .diffusers import NODES as DIFFUSERS_NODES, entry_nodes as diffusers_entry_nodes, expand_workflow, guider_nodes
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


def declaration_cache() -> DeclarationCache:
    """diffusers' declarations kept in ComfyUI's user directory (`user/modular_loops/`), one file, rebuilt when
    diffusers or the pack changes."""
    return DeclarationCache(os.path.join(folder_paths.get_user_directory(), "modular_loops"))


def build_mappings():
    started = time.perf_counter()
    folders = block_folders()
    cache = declaration_cache()
    registry = add_shipped(discover(folders), cache=cache)
    for problem in registry.problems:
        log.error("[Modular Loops] could not load blocks from %s", problem)
    generated = generate_nodes(registry, (diffusers_entry_nodes, sampling.entry_nodes))
    classes = {nid: node.cls for nid, node in generated.items()}
    shown = {nid: node.display for nid, node in generated.items()}
    origins = {nid: node.origin for nid, node in generated.items()}
    guiders = guider_nodes()
    for nid, (cls, display) in {**state_files.NODES, **DIFFUSERS_NODES, **guiders}.items():
        classes[nid] = cls
        shown[nid] = display
    diffusers_nodes = {nid: cls for nid, cls in classes.items()
                       if nid in guiders or (nid in origins and origins[nid]["origin"] == "diffusers")}
    made = listing.keep(diffusers_nodes, cache)
    cache.save()
    if made:
        log.info("[Modular Loops] read the declarations of %d diffusers nodes (diffusers %s) in %.1f s; kept in %s for "
                 "the next starts", made, diffusers.__version__, time.perf_counter() - started, cache.folder)
    return classes, shown, {"nodes": origins, "folders": folders, "problems": [str(p) for p in registry.problems],
                            "diffusers_version": diffusers.__version__,  # a saved diffusers node records it
                            "names": names.for_page()}


def add_routes(info):
    """GET /modular_loops/blocks: the installed loops and blocks, the blocks folders, the load problems, the names
    the page uses (`names.for_page`)."""
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
            chain = expand_workflow(NODE_CLASS_MAPPINGS, q.get("node", ""), q.get("workflow", ""), given)
        except Exception as e:  # an unknown node or workflow: said, not a server error
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=400)
        return web.json_response(chain)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, INSTALLED = build_mappings()
add_routes(INSTALLED)
