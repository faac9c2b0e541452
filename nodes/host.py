"""What the adapter takes from ComfyUI while a loop runs: its progress bar, Interrupt, device, its model
management for a diffusers pipeline's modules, and a websocket notice naming the block node at fault when a
loop fails (the frontend outlines that node)."""

from __future__ import annotations

import contextlib
import logging

import comfy.model_management
import comfy.utils
from server import PromptServer

from ..modular import ModularError, StepHooks
from ..modular.pipelines.bridge import is_bridged

FAILED_BLOCK_EVENT = "modular_loops.failed_block"
log = logging.getLogger("modular_loops")


def step_hooks(**hooks) -> StepHooks:
    """StepHooks with ComfyUI's Interrupt button, plus `hooks` (progress, preview, step_start)."""
    return StepHooks(interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
                     passthrough=(comfy.model_management.InterruptProcessingException,), **hooks)


def progress_bar_hook():
    """progress(step, total, preview) on the running node's ComfyUI progress bar."""
    pbar = comfy.utils.ProgressBar(1)

    def progress(step, total, preview):
        pbar.update_absolute(step, total if total else step + 1, preview)

    return progress


def tell_node(node_id, text: str):
    """A line of text shown on the running node (ComfyUI's progress text), when there is a page to show it."""
    server = getattr(PromptServer, "instance", None)
    if server is not None and node_id is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, str(node_id), server.client_id)


def device():
    return comfy.model_management.get_torch_device()


PATCHERS = "_modular_loops_patchers"
DEVICE = "_modular_loops_device"


def set_pipeline_device(pipeline, device=None):
    """Pin a loaded pipeline to `device` (e.g. the CPU) instead of ComfyUI's device and model management."""
    setattr(pipeline, DEVICE, device)


def pipeline_device(pipeline):
    """Where a pipeline's modules run: its pinned device, else ComfyUI's."""
    return getattr(pipeline, DEVICE, None) or device()


def _holder(module):
    """`module` inside a plain torch Module for ComfyUI's ModelPatcher, which sets attributes such as `device` on
    the model it manages (a transformers model's `device` is read-only); moving the holder moves the module."""
    import torch

    class Held(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    return Held(module)


def model_patchers(pipeline) -> dict:
    """{component: ComfyUI ModelPatcher} of the pipeline's torch modules, made once per loaded pipeline: ComfyUI
    loads them onto its device when a node uses them, offloads them when other models need the room, and
    unloads them on "free models"."""
    import torch
    import comfy.model_patcher

    if getattr(pipeline, PATCHERS, None) is None:
        patchers = {}
        for name in pipeline.components:
            module = getattr(pipeline, name, None)
            if isinstance(module, torch.nn.Module) and not is_bridged(module):  # a MODEL's: loaded by its session
                patchers[name] = comfy.model_patcher.ModelPatcher(
                    _holder(module), load_device=device(), offload_device=comfy.model_management.unet_offload_device())
        setattr(pipeline, PATCHERS, patchers)
    return getattr(pipeline, PATCHERS)


def load_components(pipeline, names):
    """Load the named components of `pipeline` onto ComfyUI's device, through its model management (a pipeline
    pinned to a device: moved there, outside it)."""
    pinned = getattr(pipeline, DEVICE, None)
    if pinned is not None:
        for name in names:
            module = getattr(pipeline, name, None)
            if hasattr(module, "to") and hasattr(module, "parameters"):
                module.to(pinned)
        return
    patchers = [p for name, p in model_patchers(pipeline).items() if name in set(names)]
    if patchers:
        comfy.model_management.load_models_gpu(patchers)


def reported(run) -> tuple:
    """The one tail of a node that runs a loop or a step: `run()` (-> a result with `state` and `notes`), the block
    node at fault told to the page if it fails (`failed_block_reported`), its notes logged. -> (state,)"""
    with failed_block_reported():
        result = run()
    for note in result.notes:
        log.warning("[Modular Loops] %s", note)
    return (result.state,)


@contextlib.contextmanager
def failed_block_reported():
    """Re-raise a loop's error, first telling the page which block node it names (`block_node`)."""
    try:
        yield
    except ModularError as e:
        server = getattr(PromptServer, "instance", None)
        if e.block_node is not None and server is not None:
            server.send_sync(FAILED_BLOCK_EVENT, {"node": str(e.block_node)}, server.client_id)
        raise
