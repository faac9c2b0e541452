"""diffusers' own pipelines as nodes, the adapter of `modular/pipelines/`, one module per kind of node:
`loader` (Load Diffusers Pipeline), `guiders` (a node per diffusers guider, Diffusers Scheduler), `blocks` (its
loops, loop blocks, steps and workflow nodes, generated from its classes), `outputs` (a state to IMAGE / AUDIO /
LATENT and back), `bridge` (a ComfyUI MODEL as a family's pipeline, its CONDITIONING into the state). Nothing here computes what `modular/pipelines` does."""

CATEGORY = "Modular Loops/diffusers"

from .blocks import entry_nodes, expand_workflow  # noqa: E402
from .bridge import NODES as BRIDGE_NODES  # noqa: E402
from .guiders import DiffusersScheduler, guider_nodes  # noqa: E402
from .loader import LoadDiffusersPipeline  # noqa: E402
from .outputs import LatentToState, StateToAudio, StateToImage, StateToLatent  # noqa: E402

NODES = {"ModularDiffusersLoader": (LoadDiffusersPipeline, "Load Diffusers Pipeline"),
         "ModularDiffusersScheduler": (DiffusersScheduler, "Diffusers Scheduler"),
         "ModularStateToImage": (StateToImage, "State To Image"),
         "ModularStateToAudio": (StateToAudio, "State To Audio"),
         "ModularStateToLatent": (StateToLatent, "State To LATENT"),
         "ModularLatentToState": (LatentToState, "LATENT To State"),
         **BRIDGE_NODES}

__all__ = ["CATEGORY", "NODES", "entry_nodes", "expand_workflow", "guider_nodes"]
