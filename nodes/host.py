"""What the adapter takes from ComfyUI while a loop runs: its progress bar, Interrupt, device, and a
websocket notice naming the block node at fault when a loop fails (the frontend outlines that node)."""

from __future__ import annotations

import contextlib

import comfy.model_management
import comfy.utils
from server import PromptServer

from ..modular import LoopError, StepHooks

FAILED_BLOCK_EVENT = "modular_loops.failed_block"


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


def device():
    return comfy.model_management.get_torch_device()


@contextlib.contextmanager
def failed_block_reported():
    """Re-raise a loop's error, first telling the page which block node it names (`block_node`)."""
    try:
        yield
    except LoopError as e:
        server = getattr(PromptServer, "instance", None)
        if e.block_node is not None and server is not None:
            server.send_sync(FAILED_BLOCK_EVENT, {"node": str(e.block_node)}, server.client_id)
        raise
