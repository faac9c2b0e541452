"""Writes the example workflows built here (example_workflows/diffusers_*.json: three step chains and one template
per named workflow of diffusers' Auto blocks that a Load Image can feed, and the two that stop a loop and resume it
from its state file, and the bridge_sdxl_* ones: diffusers' SDXL loop on Load Checkpoint's MODEL) with the node definitions of a running ComfyUI that has the pack (for the widget
order): a developer's tool, not shipped.

    python tools/make_examples.py --url http://127.0.0.1:8188 [name ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.comfy_client import ComfyClient, Graph, api_to_ui, widget_values  # noqa: E402

PROMPT = "a photo of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"
SDXL, SD3 = "StableDiffusionXL", "StableDiffusion3"


def defaults(info, cls, **inputs):
    """The node's required widget defaults, with `inputs` on top."""
    return widget_values(info, cls, **inputs)


def step(g, info, family, name, **inputs):
    cls = f"ModularStep_{family}{name}"
    return g.node(cls, **defaults(info, cls, **inputs))


def sdxl(info, guider=None):
    g = Graph()
    pipe = g.node("ModularDiffusersLoader", folder="stable-diffusion-xl-base-1.0", dtype="default")
    text = step(g, info, SDXL, "TextEncoderStep", pipeline=pipe, prompt=PROMPT, negative_prompt=NEGATIVE)
    state = step(g, info, SDXL, "InputStep", state=text)
    state = step(g, info, SDXL, "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=30)
    state = step(g, info, SDXL, "PrepareLatentsStep", state=state, pipeline=pipe, height=1024, width=1024, generator=0)
    state = step(g, info, SDXL, "PrepareAdditionalConditioningStep", state=state, pipeline=pipe)
    loop_cls = "ModularLoop_StableDiffusionXLDenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe)
    if guider:
        loop.set(guider=g.node(guider, **defaults(info, guider)))
    decoded = step(g, info, SDXL, "DecodeStep", state=loop, pipeline=pipe, output_type="pt")
    image = g.node("ModularStateToImage", state=decoded, key="images")
    g.node("SaveImage", images=image, filename_prefix="modular_loops_sdxl")
    return g


def sd3(info):
    g = Graph()
    pipe = g.node("ModularDiffusersLoader", folder="stable-diffusion-3-medium-diffusers", dtype="default")
    state = step(g, info, SD3, "TextEncoderStep", pipeline=pipe, prompt=PROMPT, negative_prompt=NEGATIVE)
    state = step(g, info, SD3, "TextInputStep", state=state)
    state = step(g, info, SD3, "PrepareLatentsStep", state=state, pipeline=pipe, height=1024, width=1024, generator=0)
    state = step(g, info, SD3, "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=28)
    loop_cls = "ModularLoop_StableDiffusion3DenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe)
    decoded = step(g, info, SD3, "DecodeStep", state=loop, pipeline=pipe, output_type="pt")
    image = g.node("ModularStateToImage", state=decoded, key="images")
    g.node("SaveImage", images=image, filename_prefix="modular_loops_sd3")
    return g


def decoded_and_saved(g, state, pipe, vae, prefix):
    """The bridge templates' end: the state's latents as a LATENT of the MODEL's space -> VAE Decode -> Save Image."""
    latent = g.node("ModularStateToLatent", state=state, pipeline=pipe)
    g.node("SaveImage", images=g.node("VAEDecode", samples=latent, vae=vae), filename_prefix=prefix)
    return g


SDXL_CKPT = "sd_xl_base_1.0.safetensors"
SDXL_LORA = "your_sdxl_lora.safetensors"


def bridge_sdxl(info, lora=False, loop_blocks=False):
    """diffusers' SDXL loop on Load Checkpoint's MODEL (the bridge): CLIP Text Encode -> CONDITIONING To State ->
    SDXL's steps -> its denoise loop with an APG guider node -> State To LATENT -> VAE Decode -> Save Image; with
    `lora`, a LoRA Loader before the bridge; with `loop_blocks`, the loop as its wrapper and three blocks, where a
    block of one's own goes between them."""
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=SDXL_CKPT)
    model, clip = ckpt.out(0), ckpt.out(1)
    if lora:
        loaded = g.node("LoraLoader", model=model, clip=clip, lora_name=SDXL_LORA, strength_model=1.0, strength_clip=1.0)
        model, clip = loaded.out(0), loaded.out(1)
    pipe = g.node("ModularPipelineFromModel", model=model)
    positive = g.node("CLIPTextEncode", text=PROMPT, clip=clip)
    negative = g.node("CLIPTextEncode", text=NEGATIVE, clip=clip)
    latent = g.node("EmptyLatentImage", width=1024, height=1024, batch_size=1)
    state = g.node("ModularConditioningToState", pipeline=pipe, positive=positive, negative=negative, latent=latent)
    state = step(g, info, SDXL, "InputStep", state=state)
    state = step(g, info, SDXL, "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=30)
    state = step(g, info, SDXL, "PrepareLatentsStep", state=state, pipeline=pipe, generator=0)
    state = step(g, info, SDXL, "PrepareAdditionalConditioningStep", state=state, pipeline=pipe)
    guider_cls = "ModularGuider_AdaptiveProjectedGuidance"
    guider = g.node(guider_cls, **defaults(info, guider_cls))
    if loop_blocks:
        loop_cls = "ModularLoop_StableDiffusionXLDenoiseLoopWrapper"
        blocks = [g.node(f"ModularBlock_StableDiffusionXL{name}") for name in
                  ("LoopBeforeDenoiser", "LoopDenoiser", "LoopAfterDenoiser")]
        loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe, guider=guider,
                      **{f"block_{k}": b for k, b in enumerate(blocks, start=1)})
    else:
        loop_cls = "ModularLoop_StableDiffusionXLDenoiseStep"
        loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe, guider=guider)
    return decoded_and_saved(g, loop, pipe, ckpt.out(2), "modular_loops_bridge_sdxl")


def bridge_sdxl_workflow(info):
    """diffusers' SDXL workflow node on Load Checkpoint's MODEL, CLIP and VAE: Load Checkpoint -> Diffusers Pipeline
    From MODEL -> the workflow node (text2image; image2image / inpainting with a Load Image) -> State To Image ->
    Save Image: nothing else to wire."""
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=SDXL_CKPT)
    pipe = g.node("ModularPipelineFromModel", model=ckpt.out(0), clip=ckpt.out(1), vae=ckpt.out(2))
    cls = "ModularWorkflow_StableDiffusionXLAutoBlocks"
    node = g.node(cls, **{**defaults(info, cls), "workflow": "text2image", "prompt": PROMPT, "negative_prompt": NEGATIVE,
                          "num_inference_steps": 30, "height": 1024, "width": 1024, "generator": 0,
                          "output_type": "pt"}, pipeline=pipe)
    image = g.node("ModularStateToImage", state=node, key="images")
    g.node("SaveImage", images=image, filename_prefix="modular_loops_bridge_sdxl_workflow")
    return g


SD3_CKPT = "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"


def bridge_sd3(info):
    """diffusers' SD3 loop on Load Checkpoint's MODEL (an SD3 / SD3.5 checkpoint with its text encoders): CLIP Text
    Encode -> CONDITIONING To State -> SD3's steps -> its denoise loop with an APG guider node -> State To LATENT ->
    VAE Decode -> Save Image."""
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=SD3_CKPT)
    pipe = g.node("ModularPipelineFromModel", model=ckpt.out(0))
    positive = g.node("CLIPTextEncode", text=PROMPT, clip=ckpt.out(1))
    negative = g.node("CLIPTextEncode", text=NEGATIVE, clip=ckpt.out(1))
    latent = g.node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    state = g.node("ModularConditioningToState", pipeline=pipe, positive=positive, negative=negative, latent=latent)
    state = step(g, info, SD3, "TextInputStep", state=state)
    state = step(g, info, SD3, "PrepareLatentsStep", state=state, pipeline=pipe, generator=0)
    state = step(g, info, SD3, "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=28)
    guider_cls = "ModularGuider_AdaptiveProjectedGuidance"
    guider = g.node(guider_cls, **defaults(info, guider_cls))
    loop_cls = "ModularLoop_StableDiffusion3DenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe, guider=guider)
    return decoded_and_saved(g, loop, pipe, ckpt.out(2), "modular_loops_bridge_sd3")


FLUX_CKPT = "flux1-dev-fp8.safetensors"


def bridge_flux(info):
    """diffusers' Flux loop on Load Checkpoint's MODEL (a Flux.1-dev checkpoint with its text encoders and VAE),
    its shift for the size by ModelSamplingFlux, its guidance by Flux Guidance: CLIP Text Encode -> CONDITIONING To
    State -> Flux's steps -> its denoise loop -> its unpack step -> State To LATENT -> VAE Decode -> Save Image."""
    g = Graph()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=FLUX_CKPT)
    model = g.node("ModelSamplingFlux", model=ckpt.out(0), max_shift=1.15, base_shift=0.5, width=1024, height=1024)
    pipe = g.node("ModularPipelineFromModel", model=model)
    positive = g.node("FluxGuidance", conditioning=g.node("CLIPTextEncode", text=PROMPT, clip=ckpt.out(1)),
                      guidance=3.5)
    latent = g.node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1)
    state = g.node("ModularConditioningToState", pipeline=pipe, positive=positive, latent=latent)
    state = step(g, info, "Flux", "TextInputStep", state=state)
    state = step(g, info, "Flux", "PrepareLatentsStep", state=state, pipeline=pipe, generator=0)
    state = step(g, info, "Flux", "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=28)
    state = step(g, info, "Flux", "RoPEInputsStep", state=state, pipeline=pipe)
    loop_cls = "ModularLoop_FluxDenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe)
    state = step(g, info, "Flux", "UnpackLatentsStep", state=loop, pipeline=pipe)
    return decoded_and_saved(g, state, pipe, ckpt.out(2), "modular_loops_bridge_flux")


WAN_MODEL, WAN_TEXT, WAN_VAE = ("wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                "wan_2.1_vae.safetensors")


def bridge_wan(info):
    """diffusers' Wan 2.1 text2video loop on ComfyUI's Wan MODEL (Load Diffusion Model, its shift by
    ModelSamplingSD3, as ComfyUI's own Wan workflow sets it), its UMT5 (Load CLIP, type wan) and VAE (Load VAE): CLIP
    Text Encode -> CONDITIONING To State (with Empty Hunyuan Latent Video's size and length) -> Wan's steps -> its
    denoise loop with a CFG guider node -> State To LATENT -> VAE Decode -> Save Animated WEBP."""
    g = Graph()
    unet = g.node("UNETLoader", unet_name=WAN_MODEL, weight_dtype="default")
    model = g.node("ModelSamplingSD3", model=unet, shift=8.0)
    clip = g.node("CLIPLoader", **defaults(info, "CLIPLoader", clip_name=WAN_TEXT, type="wan", device="default"))
    vae = g.node("VAELoader", vae_name=WAN_VAE)
    pipe = g.node("ModularPipelineFromModel", model=model)
    positive = g.node("CLIPTextEncode", text=PROMPT, clip=clip)
    negative = g.node("CLIPTextEncode", text=NEGATIVE, clip=clip)
    latent = g.node("EmptyHunyuanLatentVideo", width=832, height=480, length=33, batch_size=1)
    state = g.node("ModularConditioningToState", pipeline=pipe, positive=positive, negative=negative, latent=latent)
    state = step(g, info, "Wan", "TextInputStep", state=state, pipeline=pipe)
    state = step(g, info, "Wan", "SetTimestepsStep", state=state, pipeline=pipe, num_inference_steps=30)
    state = step(g, info, "Wan", "PrepareLatentsStep", state=state, pipeline=pipe, generator=0)
    guider_cls = "ModularGuider_ClassifierFreeGuidance"
    guider = g.node(guider_cls, **defaults(info, guider_cls, guidance_scale=5.0))
    loop_cls = "ModularLoop_WanDenoiseStep"
    loop = g.node(loop_cls, **defaults(info, loop_cls), state=state, pipeline=pipe, guider=guider)
    latent = g.node("ModularStateToLatent", state=loop, pipeline=pipe)
    frames = g.node("VAEDecode", samples=latent, vae=vae)
    g.node("SaveAnimatedWEBP", **defaults(info, "SaveAnimatedWEBP", images=frames, fps=16.0,
                                          filename_prefix="modular_loops_bridge_wan"))
    return g


SD15 = "v1-5-pruned-emaonly-fp16.safetensors"
STOP_AT, STEPS, SEED = 10, 20, 156680208700286
STATE_PREFIX = "states/modular_loops_step10"


def sd15_loop(g, **inputs):
    """An SD1.5 checkpoint, two prompts, an empty latent and the DPM++ 2M denoise loop (KSampler node) on them."""
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=SD15)
    positive = g.node("CLIPTextEncode", text="a lighthouse on a cliff at dawn, oil painting", clip=ckpt.out(1))
    negative = g.node("CLIPTextEncode", text="text, watermark", clip=ckpt.out(1))
    latent = g.node("EmptyLatentImage", width=512, height=512, batch_size=1)
    blocks = {"block_1": g.node("ModularBlock_PredictDenoised"), "block_2": g.node("ModularBlock_DPMPP2MStep")}
    loop = g.node("ModularKSampler_DenoiseLoop", model=ckpt.out(0), seed=SEED, steps=STEPS, cfg=7.0, scheduler="karras",
                  positive=positive, negative=negative, latent_image=latent, denoise=1.0, **blocks,
                  **{"start_step": 0, "end_step": 10000, "save_every": 0, "save_prefix": "states/modular_loops_autosave",
                     **inputs})
    return ckpt, loop


def stop_and_save(info):
    """Steps 0 .. 10 of 20, the state saved (Save State) and the half-done image saved beside it."""
    g = Graph()
    ckpt, loop = sd15_loop(g, end_step=STOP_AT)
    g.node("ModularStateSave", state=loop.out(2), filename_prefix=STATE_PREFIX, skip_unsupported=False)
    g.node("SaveImage", images=g.node("VAEDecode", samples=loop.out(0), vae=ckpt.out(2)), filename_prefix="ModularLoops_step10")
    return g


def resume_from_file(info):
    """The state file of `stop_and_save` loaded (Load State) and steps 10 .. 20 run from it: the same image as one run
    of 20 steps."""
    g = Graph()
    state = g.node("ModularStateLoad", state_file=f"{STATE_PREFIX}_00001_.safetensors [output]")
    ckpt, loop = sd15_loop(g, start_step=STOP_AT)
    loop.set(state=state)
    g.node("SaveImage", images=g.node("VAEDecode", samples=loop.out(0), vae=ckpt.out(2)), filename_prefix="ModularLoops_resumed")
    return g


BRIDGE_COLUMNS = {"CheckpointLoaderSimple": 0, "LoraLoader": 0, "ModelSamplingFlux": 0, "UNETLoader": 0,
                  "ModelSamplingSD3": 0, "CLIPLoader": 0, "VAELoader": 0, "CLIPTextEncode": 1,
                  "FluxGuidance": 1, "EmptyLatentImage": 1, "EmptySD3LatentImage": 1, "EmptyHunyuanLatentVideo": 1,
                  "ModularPipelineFromModel": 2, "ModularConditioningToState": 2, "ModularGuider_": 4,
                  "ModularBlock_": 4, "ModularLoop_": 5, "ModularStateToLatent": 6, "VAEDecode": 6, "SaveImage": 6,
                  "SaveAnimatedWEBP": 6}
BRIDGE_X = [40, 400, 840, 1200, 1580, 1960, 2340]
BRIDGE_HEIGHT = {"CLIPTextEncode": 220, "ModularStep_": 330, "ModularGuider_": 330, "LoraLoader": 200}


def bridge_layout(g):
    """The bridge templates: the checkpoint (and LoRA) left, prompts and latent, the bridge and conditioning, the
    steps, the guider (and loop blocks), the loop, the decode and save, in columns."""
    placed, heights = {}, [60] * len(BRIDGE_X)
    for nid, node in g.nodes.items():
        kind = next((k for k in (*BRIDGE_COLUMNS, "ModularStep_") if node.class_type.startswith(k)), "ModularStep_")
        col = BRIDGE_COLUMNS.get(kind, 3)
        placed[nid] = [BRIDGE_X[col], heights[col]]
        heights[col] += BRIDGE_HEIGHT.get(kind, 150)
    return placed


def bridge_workflow_layout(g):
    """The bridged workflow node's template: one row, left to right (checkpoint, bridge, workflow node, State To
    Image, Save Image)."""
    x = {"CheckpointLoaderSimple": 40, "ModularPipelineFromModel": 420, "ModularStateToImage": 1160, "SaveImage": 1500}
    return {nid: [x.get(node.class_type, 760), 100] for nid, node in g.nodes.items()}


def layout(g):
    """Left to right in graph order, two rows: the loader and steps on top, the loop and what follows below. A
    one-node workflow: four columns (the loader and Load Images, the workflow node, State To Image, the save)."""
    if any(n.class_type.startswith("ModularWorkflow_") for n in g.nodes.values()):
        columns = {"ModularDiffusersLoader": 0, "LoadImage": 0, "ModularStateToImage": 2}
        placed, heights = {}, [60, 60, 60, 60]
        for nid, node in g.nodes.items():
            col = 1 if node.class_type.startswith("ModularWorkflow_") else columns.get(node.class_type, 3)
            placed[nid] = [40 + [0, 380, 800, 1120][col], heights[col]]
            heights[col] += 380 if node.class_type == "LoadImage" else 160
        return placed
    positions, x, row = {}, 40, 0
    for nid, node in g.nodes.items():
        if node.class_type.startswith(("ModularLoop_", "ModularKSampler_", "ModularGuider_", "ModularBlock_")) and row == 0:
            x, row = 40, 1
        positions[nid] = [x, 60 + 500 * row]
        x += 400
    return positions


# The SD1.5 examples' layout (as denoise_txt2img's): the checkpoint, prompts, latent and blocks left, the loop in
# the middle, what follows it right; {class: [x, y]} (a second node of a class: the second position).
SD15_LAYOUT = {"CheckpointLoaderSimple": [[40, 300]], "CLIPTextEncode": [[420, 120], [420, 380]],
               "EmptyLatentImage": [[420, 620]], "ModularBlock_PredictDenoised": [[420, 800]],
               "ModularBlock_DPMPP2MStep": [[420, 900]], "ModularStateLoad": [[880, 20]],
               "ModularKSampler_DenoiseLoop": [[880, 200]], "ModularStateSave": [[1260, 460]],
               "VAEDecode": [[1260, 200]], "SaveImage": [[1480, 200]]}


SD15_SIZES = {"CheckpointLoaderSimple": [270, 98], "CLIPTextEncode": [400, 200], "EmptyLatentImage": [270, 106],
              "ModularBlock_PredictDenoised": [270, 26], "ModularBlock_DPMPP2MStep": [270, 26],
              "ModularKSampler_DenoiseLoop": [300, 414], "ModularStateSave": [300, 82], "ModularStateLoad": [300, 58],
              "VAEDecode": [150, 46], "SaveImage": [270, 58]}


def sd15_layout(g):
    placed, seen = {}, {}
    for nid, node in g.nodes.items():
        n = seen[node.class_type] = seen.get(node.class_type, -1) + 1
        placed[nid] = SD15_LAYOUT[node.class_type][n]
    return placed


def sized(workflow):
    """The SD1.5 examples' nodes sized as the frontend lays them out (text boxes wider)."""
    for node in workflow["nodes"]:
        node["size"] = list(SD15_SIZES.get(node["type"], node["size"]))
    return workflow


# --- one template per named workflow of diffusers' Auto blocks (the one-node form) ------------------------

def snake(name: str, family: str = "") -> str:
    """A blocks class's name in the words of its family's folder: FluxKontextAutoBlocks (flux) -> flux_kontext,
    MiniMaxH3Blocks (minimax_h3) -> minimax_h3, WanImage2VideoAutoBlocks (wan) -> wan_image2video."""
    import re

    stem = re.sub(r"(Auto)?Blocks$", "", name)
    # words at a capital, and after a version number (Flux2Klein), but "2" as "to" joins (Image2Video)
    words = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[0-9])(?=[A-Z])(?!Video|Image)", "_", stem).lower()
    squashed, i = family.replace("_", ""), 0
    for k, ch in enumerate(words):  # the family's letters at the start, however the class splits them
        if i == len(squashed):
            return family + words[k:]
        if ch != "_":
            if ch != squashed[i]:
                return words
            i += 1
    return family if i == len(squashed) else words


def template_name(shipped, workflow: str) -> str:
    return f"diffusers_{snake(shipped.name, shipped.family)}_{workflow}"


def workflow_templates(info) -> dict:
    """{template name: (workflow node class, workflow, {trigger: how it is given}, output, family)} for every named workflow
    of diffusers' Auto blocks (each `_workflow_map`, read from the installed diffusers) whose inputs a user gives on
    the workflow node or with a Load Image: its trigger inputs are the prompt, images and masks (`IMAGE` / `MASK`
    sockets of the node), or values (Cosmos' text2image: num_frames 1). Those that need a video, a ControlNet or
    IP-Adapter model, actions or conditions are left to the node itself (its workflow choice)."""
    from modular.pipelines.scan import scan_workflows

    found = {}
    for shipped in scan_workflows():
        cls = f"ModularWorkflow_{shipped.name}"
        if cls not in info:
            continue
        node = info[cls]["input"]
        spec = {**node.get("required", {}), **node.get("optional", {})}
        blocks = shipped.load()()
        for workflow in shipped.workflows:
            if workflow not in (getattr(type(blocks), "_workflow_map", None) or {}):
                continue  # a pipeline's default blocks ("default"): no triggers named to lay a template out from
            triggers = blocks._workflow_map[workflow]
            triggers = triggers[0] if isinstance(triggers, (list, tuple)) else triggers  # alternatives: the first
            if any(k.startswith(("controlnet", "ip_adapter")) for k in [workflow]):
                continue
            given = {}
            for name, value in triggers.items():
                kind = spec.get(name, [None])[0]
                if name == "prompt":
                    given[name] = "text"
                elif value is True and kind in ("IMAGE", "MASK"):
                    given[name] = kind
                elif value is not True and name in spec:
                    given[name] = value
                else:
                    given = None
                    break
            if given is None:
                continue
            outputs = [o.name for o in blocks.get_workflow(workflow).outputs]
            found[template_name(shipped, workflow)] = (cls, workflow, given, "videos" if "videos" in outputs else "images",
                                                       shipped.family)
    return found


def one_node(info, cls, workflow, given, output, family):
    """Load Diffusers Pipeline -> the workflow node (its workflow chosen, the prompt and a negative one, Load Image
    for each image; a mask from the image's Load Image, painted in its mask editor) -> State To Image -> Save Image,
    or Save Animated WEBP at the family's frame rate for a video."""
    g = Graph()
    pipe = g.node("ModularDiffusersLoader", folder=family, dtype="default")
    values = {"prompt": PROMPT} if "prompt" in given else {}
    spec = {**info[cls]["input"].get("required", {}), **info[cls]["input"].get("optional", {})}
    if "negative_prompt" in spec:
        values["negative_prompt"] = NEGATIVE
    loaded = {}
    for name, how in given.items():
        if how == "IMAGE":
            loaded[name] = g.node("LoadImage", image="example.png")
            values[name] = loaded[name]
        elif how not in ("text", "MASK"):
            values[name] = how
    for name, how in given.items():
        if how == "MASK":  # the mask of the picture it repaints
            source = loaded.get("image") or g.node("LoadImage", image="example.png")
            values[name] = source.out(1)
    node = g.node(cls, **defaults(info, cls, workflow=workflow, **values), pipeline=pipe)
    image = g.node("ModularStateToImage", state=node, key=output)
    prefix = f"modular_loops_{snake(cls.removeprefix('ModularWorkflow_'), family)}_{workflow}"
    if output == "videos":
        g.node("SaveAnimatedWEBP", **defaults(info, "SaveAnimatedWEBP", images=image, fps=image.out(1),
                                              filename_prefix=prefix))
    else:
        g.node("SaveImage", images=image, filename_prefix=prefix)
    return g


EXAMPLES = {
    "diffusers_sdxl_txt2img": lambda info: sdxl(info),
    "diffusers_sdxl_guider": lambda info: sdxl(info, "ModularGuider_AdaptiveProjectedGuidance"),
    "diffusers_sd3_txt2img": sd3,
    "bridge_sdxl_apg": lambda info: bridge_sdxl(info),
    "bridge_sdxl_lora_apg": lambda info: bridge_sdxl(info, lora=True),
    "bridge_sdxl_loop_blocks": lambda info: bridge_sdxl(info, loop_blocks=True),
    "bridge_sdxl_workflow": bridge_sdxl_workflow,
    "bridge_sd3_apg": bridge_sd3,
    "bridge_flux": bridge_flux,
    "bridge_wan": bridge_wan,
    "denoise_stop_and_save": stop_and_save,
    "denoise_resume_from_file": resume_from_file,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", default=str(ROOT / "example_workflows"))
    parser.add_argument("names", nargs="*", help="only these examples (default: all)")
    args = parser.parse_args()
    info = ComfyClient(args.url).object_info()
    examples = dict(EXAMPLES)
    for name, spec in workflow_templates(info).items():
        examples[name] = lambda info, a=spec: one_node(info, *a)
    for name, build in examples.items():
        if args.names and name not in args.names:
            continue
        g = build(info)
        if name.startswith("denoise_"):
            workflow = sized(api_to_ui(g, info, positions=sd15_layout(g)))
        elif name == "bridge_sdxl_workflow":
            workflow = api_to_ui(g, info, positions=bridge_workflow_layout(g))
        elif name.startswith("bridge_"):
            workflow = api_to_ui(g, info, positions=bridge_layout(g))
        else:
            workflow = api_to_ui(g, info, positions=layout(g))
        Path(args.out, f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        print(f"wrote {name}.json ({len(g.nodes)} nodes)")


if __name__ == "__main__":
    main()
