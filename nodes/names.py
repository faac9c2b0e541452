"""What the pack names once, for its Python, its page and its tests: the node-id prefixes (a compatibility promise,
docs/compatibility.md), the block sockets of a loop node, the sockets a diffusers chain hands along, the one
workflow of blocks that name none, diffusers' names for a waveform. The page reads them from
GET /modular_loops/blocks (`for_page`), never a copy of its own."""

from __future__ import annotations

from ..modular.core.compat import DEFAULT_WORKFLOW
from ..modular.pipelines.media import AUDIO_NAMES, IMAGE_NAMES
from ..modular.pipelines.params import MORE  # a workflow node's widget for the call's other values

# node id = prefix + class name; a loop's nodes, a block's, a diffusers step's, a family's workflow node's, a
# denoise loop's SAMPLER and KSampler nodes
NODE_PREFIXES = {"loop": "ModularLoop_", "block": "ModularBlock_", "step": "ModularStep_",
                 "workflow": "ModularWorkflow_", "sampler": "ModularSampler_", "ksampler": "ModularKSampler_"}
BLOCK_SOCKET = "block_"  # block_1, block_2, ...: a loop node's block sockets, in run order
MAX_BLOCKS = 16
CHAIN_SOCKETS = ("state", "pipeline", "guider", "scheduler")  # a workflow node's own, not a call's values


def for_page() -> dict:
    return {"prefixes": NODE_PREFIXES, "block_socket": BLOCK_SOCKET, "max_blocks": MAX_BLOCKS,
            "chain_sockets": list(CHAIN_SOCKETS), "default_workflow": DEFAULT_WORKFLOW, "audio_names": list(AUDIO_NAMES),
            "image_names": list(IMAGE_NAMES),
            "more": MORE}
