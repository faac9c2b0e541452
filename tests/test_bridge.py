"""Host tier, the bridge: diffusers' SDXL and SD3 steps and denoise loops on a ComfyUI MODEL (SDXL: ComfyUI's own
SDXL network carrying a tiny folder's UNet weights, `MLTest_ComfySDXL`; SD3: the tiny folder's transformer file,
loaded by ComfyUI's own Load Diffusion Model; Flux: the same file through Load Diffusion Model's own steps, sizes read
from the weights, `MLTest_ComfyFlux`), its CONDITIONING and LATENTs, against diffusers' own pipe() on that
folder with the same embeddings and seed; a LoRA through ComfyUI's LoraLoader against the same LoRA merged into
diffusers' UNet; ComfyUI's own sampler on the same MODEL; bad input named before the loop. Skipped, loudly,
without a ComfyUI."""

import json

import pytest

from comfy_host import (TINY_FLUX_COMFY, TINY_FLUX_COMFY_FILE, TINY_SD3_COMFY, TINY_SD3_COMFY_FILE, TINY_SDXL_COMFY,
                        TINY_QWENIMAGE_COMFY, TINY_SDXL_LORA, TINY_WAN, Graph, require_host, widget_values)
from conftest import REPORT

require_host()

PROMPT, NEGATIVE = "a cat", "blurry"
STEPS, SEED, SIZE = 3, 0, 128  # 128 px: 16 x 16 latents (ComfyUI's SDXL and SD3 latents are 8x)
# Measured (CPU, float32): the bridged SDXL loop's LATENT (the latents / 0.13025, max about 100 here) is within 1.5e-4
# to 1.7e-4 of diffusers' own with ComfyUI's default CPU attention and with PyTorch's SDPA, i.e. 1.5e-6 of its size
# (2e-5 in diffusers' latent space): diffusers hands the UNet x / sqrt(sigma^2 + 1) and ComfyUI's model call works on
# x, so each call's float32 round trip costs a few 1e-6 (exact in float64: docs/notes/sdxl_bridge). Allowed: 1e-5 of
# the latents' size.
REL = 1e-5

# Per family: the folder (diffusers' side), the MODEL node (ComfyUI's side), the steps before the loop as the
# family's chain runs them, the loop, the empty latent of its latent space, and the guider's default scale
# (SDXL's and SD3's ClassifierFreeGuidance: 7.5 and 7.0).
FAMILIES = {
    "sdxl": {"family": "StableDiffusionXL", "folder": TINY_SDXL_COMFY,
             "model": ("MLTest_ComfySDXL", {"folder": TINY_SDXL_COMFY}),
             "steps": [("InputStep", {}), ("SetTimestepsStep", {"num_inference_steps": STEPS}),
                       ("PrepareLatentsStep", {"generator": SEED}), ("PrepareAdditionalConditioningStep", {})],
             "loop": "ModularLoop_StableDiffusionXLDenoiseStep", "empty": "EmptyLatentImage", "channels": 4},
    "sd3": {"family": "StableDiffusion3", "folder": TINY_SD3_COMFY,
            "model": ("UNETLoader", {"unet_name": TINY_SD3_COMFY_FILE, "weight_dtype": "default"}),
            "steps": [("TextInputStep", {}), ("PrepareLatentsStep", {"generator": SEED}),
                      ("SetTimestepsStep", {"num_inference_steps": STEPS})],
            "loop": "ModularLoop_StableDiffusion3DenoiseStep", "empty": "EmptySD3LatentImage", "channels": 16},
    # Flux.1-dev's MODEL after ComfyUI's ModelSamplingFlux for the size (its shift = diffusers' mu there); no CFG
    "flux": {"family": "Flux", "folder": TINY_FLUX_COMFY,
             "model": ("MLTest_ComfyFlux", {"unet_name": TINY_FLUX_COMFY_FILE}),
             "sampling": ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": SIZE, "height": SIZE}),
             "steps": [("TextInputStep", {}), ("PrepareLatentsStep", {"generator": SEED}),
                       ("SetTimestepsStep", {"num_inference_steps": STEPS}), ("RoPEInputsStep", {})],
             "after": [("UnpackLatentsStep", {})],
             "loop": "ModularLoop_FluxDenoiseStep", "empty": "EmptySD3LatentImage", "channels": 16,
             "negative": False},
    # Wan 2.1 text2video: ComfyUI's Wan network on the tiny folder's weights, its shift set by ModelSamplingSD3 as
    # ComfyUI's Wan workflows do (the folder's UniPC flow_shift: 3.0); a 5-frame video (2 latent frames)
    "wan": {"family": "Wan", "folder": TINY_WAN, "model": ("MLTest_ComfyWan", {"folder": TINY_WAN}),
            "sampling": ("ModelSamplingSD3", {"shift": 3.0}),
            "steps": [("TextInputStep", {}), ("SetTimestepsStep", {"num_inference_steps": STEPS}),
                      ("PrepareLatentsStep", {"generator": SEED})],
            "loop": "ModularLoop_WanDenoiseStep", "empty": "EmptyHunyuanLatentVideo", "empty_inputs": {"length": 5},
            "call": {"num_frames": 5}, "frames": 2, "channels": 16},
    # Qwen-Image text2image: ComfyUI's Qwen-Image network on the tiny folder's weights, its shift set by
    # ModelSamplingAuraFlow as ComfyUI's Qwen-Image workflows do (the folder's static shift: 3.0); its LATENT has
    # ComfyUI's frame axis ([B, 16, 1, H, W])
    "qwen": {"family": "QwenImage", "folder": TINY_QWENIMAGE_COMFY,
             "model": ("MLTest_ComfyQwenImage", {"folder": TINY_QWENIMAGE_COMFY}),
             "sampling": ("ModelSamplingAuraFlow", {"shift": 3.0}),
             "steps": [("TextInputsStep", {}), ("PrepareLatentsStep", {"generator": SEED}),
                       ("SetTimestepsStep", {"num_inference_steps": STEPS}), ("RoPEInputsStep", {})],
             "after": [("AfterDenoiseStep", {})],
             "loop": "ModularLoop_QwenImageDenoiseStep", "empty": "EmptySD3LatentImage", "frames": 1, "channels": 16},
}
GUIDED = [f for f in FAMILIES if FAMILIES[f].get("negative", True)]  # Flux.1-dev is guidance-distilled: no guider


def equal(got) -> bool:
    return got["finite"] and got["max_abs_diff"] is not None and got["max_abs_diff"] <= REL * got["max_abs_a"]


def widgets(info, class_type, **given):
    return {k: v for k, v in widget_values(info, class_type, **given).items() if v is not None}


class Bridged:
    """MODEL -> Diffusers Pipeline From MODEL; CONDITIONING (+ an empty latent) -> CONDITIONING To State -> the
    family's steps -> its denoise loop -> State To LATENT."""

    def __init__(self, info, graph=None, model=None, guider=None, blocks=(), loop=None, negative=True, family="sdxl",
                 latent=None, steps=None, cond=None):
        g = self.graph = graph or Graph()
        self.info, self.spec = info, FAMILIES[family]
        cls, inputs = self.spec["model"]
        self.model = model or g.node(cls, **inputs)
        if "sampling" in self.spec and model is None:
            cls, inputs = self.spec["sampling"]
            self.model = g.node(cls, model=self.model, **inputs)
        self.pipeline = g.node("ModularPipelineFromModel", model=self.model)
        self.cond = cond or g.node("MLTest_DiffusersConditioning", folder=self.spec["folder"], prompt=PROMPT,
                                   negative_prompt=NEGATIVE, **({"call": json.dumps(
                                       {"height": SIZE, "width": SIZE, **self.spec["call"]})} if "call" in self.spec else {}))
        positive, unconditional = (self.cond.out(0), self.cond.out(1)) if cond is None else cond
        latent = latent or g.node(self.spec["empty"], width=SIZE, height=SIZE, batch_size=1,
                                  **self.spec.get("empty_inputs", {}))
        negative = negative and self.spec.get("negative", True)
        state = self.to_state = g.node("ModularConditioningToState", pipeline=self.pipeline, positive=positive,
                                       latent=latent, **({"negative": unconditional} if negative else {}))
        self.steps = {}
        for name, inputs in steps or self.spec["steps"]:
            state = self.steps[name] = self.step(name, state=state, **inputs)
        self.blocks = [g.node(cls, **widgets(info, cls, **inputs)) for cls, inputs in blocks]
        loop = loop or self.spec["loop"]
        self.loop = g.node(loop, **widgets(info, loop), state=state, pipeline=self.pipeline,
                           **({"guider": guider} if guider is not None else {}),
                           **{f"block_{k}": b for k, b in enumerate(self.blocks, start=1)})
        state = self.loop
        for name, inputs in self.spec.get("after", []):
            state = self.steps[name] = self.step(name, state=state, **inputs)
        self.latent = g.node("ModularStateToLatent", state=state, pipeline=self.pipeline)

    def step(self, name, **inputs):
        cls = f"ModularStep_{self.spec['family']}{name}"
        node = self.graph.node(cls, **widgets(self.info, cls, **inputs))
        if "pipeline" in self.info[cls]["input"].get("optional", {}):
            node.set(pipeline=self.pipeline)
        return node

    def against_diffusers(self, **reference):
        if "call" in self.spec:
            reference["call"] = json.dumps(self.spec["call"])
        ref = self.graph.node("MLTest_DiffusersLatents", folder=self.spec["folder"], prompt=PROMPT,
                              negative_prompt=NEGATIVE, steps=STEPS, seed=SEED, height=SIZE, width=SIZE, **reference)
        return self.compare(self.latent, ref)

    def compare(self, a, b):
        return self.graph.node("PreviewAny", source=self.graph.node("MLTest_MaxAbsDiff", a=a, b=b))


def result(server, graph, *diffs):
    run = server.run(graph, timeout=600)
    assert run.status == "success", (run.error or {}).get("exception_message", run.error)
    return [json.loads(run.text(d)) for d in diffs]


def run_error(server, graph):
    run = server.run(graph, timeout=600)
    assert run.status == "error", run.outputs
    return run.error["node_id"], run.error["exception_message"]


def test_the_bridge_and_its_conditioning_node_are_listed(info):
    for node in ("ModularPipelineFromModel", "ModularConditioningToState"):
        assert node in info, node
    assert info["ModularPipelineFromModel"]["input"]["required"]["model"][0] == "MODEL"
    assert "StableDiffusionXL (SDXL)" in info["ModularPipelineFromModel"]["description"]


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_loop_on_a_comfyui_model_equals_diffusers_own_pipe(server, info, family):
    chain = Bridged(info, family=family)
    diff = chain.against_diffusers()
    g = chain.graph
    sdpa = Bridged(info, g, model=g.node("MLTest_SDPAttention", model=chain.model), family=family)
    sdpa_diff = sdpa.against_diffusers()
    loaded = chain.graph.node("PreviewAny", source=chain.graph.node("MLTest_LoadCalls", after=chain.latent))
    run = server.run(chain.graph, timeout=600)
    assert run.status == "success", (run.error or {}).get("exception_message", run.error)
    got, on_sdpa = json.loads(run.text(diff)), json.loads(run.text(sdpa_diff))
    spec = FAMILIES[family]
    assert got["shape"] == [1, spec["channels"], *([spec["frames"]] if "frames" in spec else []), SIZE // 8, SIZE // 8]
    assert got["std_a"] > 0.1  # not a constant
    assert equal(got), got
    assert equal(on_sdpa), on_sdpa
    REPORT.append(f"bridge {family} ({STEPS} steps, CFG): bridged loop's LATENT vs diffusers pipe()'s max|diff| "
                  f"{got['max_abs_diff']:.3g} (ComfyUI's default attention), {on_sdpa['max_abs_diff']:.3g} (SDPA); "
                  f"|latent| max {got['max_abs_a']:.3g}")
    # ComfyUI's model management loaded the MODEL (ComfyUI's SDXL class), as KSampler does
    calls = json.loads(run.text(loaded))
    assert any({"sdxl": "SDXL", "sd3": "SD3", "flux": "Flux", "wan": "WAN21", "qwen": "QwenImage"}[family] in names
               for names in calls), calls


def test_a_lora_changes_the_bridged_loop_as_it_changes_diffusers_unet(server, info):
    g = Graph()
    model = g.node("MLTest_ComfySDXL", folder=TINY_SDXL_COMFY)
    lora = g.node("LoraLoaderModelOnly", model=model, lora_name=TINY_SDXL_LORA, strength_model=0.8)
    with_lora, without = Bridged(info, g, model=lora), Bridged(info, g, model=model)
    diff = with_lora.against_diffusers(lora=TINY_SDXL_LORA, lora_strength=0.8)
    effect = with_lora.compare(with_lora.latent, without.latent)
    got, changed = result(server, g, diff, effect)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-2 * got["max_abs_a"], changed  # the LoRA did something
    REPORT.append(f"bridge SDXL + LoRA (0.8): vs diffusers with it merged {got['max_abs_diff']:.3g}; the LoRA's own "
                  f"effect {changed['max_abs_diff']:.3g}")


def test_a_model_patch_changes_the_bridged_loop_as_it_changes_the_model(server, info):
    # ComfyUI's ModelSamplingDiscrete node makes the MODEL a v-prediction one (a v-prediction SDXL checkpoint, e.g.):
    # its denoised estimate reads the network's output as v; the bridge's epsilon follows, so the bridged loop ==
    # diffusers' pipe() with a v-prediction scheduler on the same UNet
    g = Graph()
    model = g.node("MLTest_ComfySDXL", folder=TINY_SDXL_COMFY)
    patched = g.node("ModelSamplingDiscrete", model=model, sampling="v_prediction", zsnr=False)
    chain, plain = Bridged(info, g, model=patched), Bridged(info, g, model=model)
    diff = chain.against_diffusers(scheduler_options=json.dumps({"prediction_type": "v_prediction"}))
    effect = chain.compare(chain.latent, plain.latent)
    got, changed = result(server, g, diff, effect)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-2 * got["max_abs_a"], changed
    REPORT.append(f"bridge SDXL, MODEL patched to v-prediction: vs diffusers with a v-prediction scheduler "
                  f"{got['max_abs_diff']:.3g} (|latent| max {got['max_abs_a']:.3g}); the patch's own effect "
                  f"{changed['max_abs_diff']:.3g}")


@pytest.mark.parametrize("family", GUIDED)
def test_a_diffusers_guider_node_guides_the_bridged_loop(server, info, family):
    g = Graph()
    params = {"guidance_scale": 6.0, "eta": 0.5}
    guider = g.node("ModularGuider_AdaptiveProjectedGuidance",
                    **widgets(info, "ModularGuider_AdaptiveProjectedGuidance", **params))
    chain = Bridged(info, g, guider=guider, family=family)
    diff = chain.against_diffusers(guider="AdaptiveProjectedGuidance", guider_params=json.dumps(params))
    plain = Bridged(info, g, family=family)
    effect = chain.compare(chain.latent, plain.latent)
    got, changed = result(server, g, diff, effect)
    assert equal(got), got
    assert changed["max_abs_diff"] > 50 * REL * got["max_abs_a"], changed  # APG is not CFG (50x the tolerance)


@pytest.mark.parametrize("family", ["sd3", "wan", "qwen"])
def test_skip_layer_guidance_skips_the_same_blocks_of_comfyuis_model(server, info, family):
    # diffusers' SkipLayerGuidance hooks whole transformer blocks of its model for its skip batch; behind the bridge
    # its hooks land on stand-ins for the MODEL's blocks, and ComfyUI's MMDiT skips those (its "dit" block
    # replacement, as ComfyUI's own Skip Layer Guidance nodes do): == pipe() with that guider on the folder
    g = Graph()
    params = {"guidance_scale": 5.0, "skip_layer_guidance_scale": 2.8, "skip_layer_guidance_start": 0.0,
              "skip_layer_guidance_stop": 1.0}
    cls = "ModularGuider_SkipLayerGuidance"
    # (its layers as a LayerSkipConfig: diffusers 0.42's skip_layer_guidance_layers makes configs of one int each,
    # which its own hook cannot take)
    skip = {"indices": [0], "fqn": "auto"}
    guider = g.node(cls, **widgets(info, cls, **params, skip_layer_config=json.dumps(skip)))
    chain = Bridged(info, g, guider=guider, family=family)
    diff = chain.against_diffusers(guider="SkipLayerGuidance",
                                   guider_params=json.dumps({**params, "skip_layer_config": skip}))
    cfg = g.node("ModularGuider_ClassifierFreeGuidance",
                 **widgets(info, "ModularGuider_ClassifierFreeGuidance", guidance_scale=5.0))
    plain = Bridged(info, g, guider=cfg, family=family)
    effect = chain.compare(chain.latent, plain.latent)
    got, changed = result(server, g, diff, effect)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-2 * got["max_abs_a"], changed  # the skipped block changed the result
    REPORT.append(f"bridge {family} + SkipLayerGuidance (block 0): vs diffusers pipe() with it {got['max_abs_diff']:.3g} "
                  f"(|latent| max {got['max_abs_a']:.3g}); the skip's own effect {changed['max_abs_diff']:.3g}")


def test_auto_guidance_with_a_dropout_of_one_skips_the_same_blocks_of_comfyuis_model(server, info):
    # diffusers' AutoGuidance drops whole blocks for its unconditional batch; with a dropout of 1 that is a skip,
    # which the bridge follows as skip-layer guidance (ComfyUI's "dit" replacement): == pipe() with it on SD3
    g = Graph()
    params = {"guidance_scale": 5.0, "start": 0.0, "stop": 1.0}
    layers = {"indices": [0], "fqn": "auto", "dropout": 1.0}
    cls = "ModularGuider_AutoGuidance"
    guider = g.node(cls, **widgets(info, cls, **params, auto_guidance_config=json.dumps(layers)))
    chain = Bridged(info, g, guider=guider, family="sd3")
    diff = chain.against_diffusers(guider="AutoGuidance",
                                   guider_params=json.dumps({**params, "auto_guidance_config": layers}))
    cfg = g.node("ModularGuider_ClassifierFreeGuidance",
                 **widgets(info, "ModularGuider_ClassifierFreeGuidance", guidance_scale=5.0))
    plain = Bridged(info, g, guider=cfg, family="sd3")
    effect = chain.compare(chain.latent, plain.latent)
    got, changed = result(server, g, diff, effect)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-2 * got["max_abs_a"], changed  # the dropped block changed the result
    REPORT.append(f"bridge sd3 + AutoGuidance (block 0, dropout 1): vs diffusers pipe() with it "
                  f"{got['max_abs_diff']:.3g} (|latent| max {got['max_abs_a']:.3g}); its own effect "
                  f"{changed['max_abs_diff']:.3g}")


def test_perturbed_attention_guidance_takes_the_values_of_the_same_attention_of_comfyuis_model(server, info):
    # diffusers' PerturbedAttentionGuidance hooks the self-attention of the blocks its config names (SDXL: by fqn)
    # for its perturbed batch; behind the bridge its hooks land on stand-ins for the MODEL's attention layers (from
    # ComfyUI's own UNet key map), and ComfyUI's attn1 replacement gives those layers' values, as ComfyUI's own
    # Perturbed Attention Guidance node does: == pipe() with that guider on the folder
    g = Graph()
    params = {"guidance_scale": 5.0, "perturbed_guidance_scale": 2.5, "perturbed_guidance_start": 0.0,
              "perturbed_guidance_stop": 1.0}
    layers = {"indices": [0], "fqn": "mid_block.attentions.0.transformer_blocks", "skip_attention": False,
              "skip_attention_scores": True, "skip_ff": False}
    cls = "ModularGuider_PerturbedAttentionGuidance"
    guider = g.node(cls, **widgets(info, cls, **params, perturbed_guidance_config=json.dumps(layers)))
    chain = Bridged(info, g, guider=guider)
    diff = chain.against_diffusers(guider="PerturbedAttentionGuidance",
                                   guider_params=json.dumps({**params, "perturbed_guidance_config": layers}))
    cfg = g.node("ModularGuider_ClassifierFreeGuidance",
                 **widgets(info, "ModularGuider_ClassifierFreeGuidance", guidance_scale=5.0))
    plain = Bridged(info, g, guider=cfg)
    effect = chain.compare(chain.latent, plain.latent)
    got, changed = result(server, g, diff, effect)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-3 * got["max_abs_a"], changed  # the perturbed attention changed it
    REPORT.append(f"bridge sdxl + PerturbedAttentionGuidance (mid block): vs diffusers pipe() with it "
                  f"{got['max_abs_diff']:.3g} (|latent| max {got['max_abs_a']:.3g}); the perturbation's own effect "
                  f"{changed['max_abs_diff']:.3g}")


def test_smoothed_energy_guidance_blurs_the_query_of_the_same_attention_of_comfyuis_model(server, info):
    # diffusers' SmoothedEnergyGuidance hooks the query projection of the self-attention of the blocks its config
    # names, blurring the query for its smoothed batch; behind the bridge its hook lands on the stand-in's query
    # projection, and ComfyUI's attn1 replacement runs ComfyUI's own attention on the query blurred by that hook
    # (diffusers' own `_gaussian_blur_2d`): == pipe() with that guider on the folder. diffusers 0.42's guider never
    # counts its batches, so its hook never lands (CFG plus a batch that changes nothing, in pipe() and on the
    # bridge alike): for this test the server's SmoothedEnergyGuidance counts them (MLTest_SEGCounting)
    def counting(enable):
        toggle = Graph()
        toggle.node("MLTest_SEGCounting", enable=enable)
        assert server.run(toggle).status == "success"

    g = Graph()
    params = {"guidance_scale": 5.0, "seg_guidance_scale": 3.0, "seg_blur_sigma": 2.0, "seg_guidance_start": 0.0,
              "seg_guidance_stop": 1.0}
    layers = {"indices": [0], "fqn": "mid_block.attentions.0.transformer_blocks"}
    cls = "ModularGuider_SmoothedEnergyGuidance"
    guider = g.node(cls, **widgets(info, cls, **params, seg_guidance_config=json.dumps(layers)))
    chain = Bridged(info, g, guider=guider)
    diff = chain.against_diffusers(guider="SmoothedEnergyGuidance",
                                   guider_params=json.dumps({**params, "seg_guidance_config": layers}))
    cfg = g.node("ModularGuider_ClassifierFreeGuidance",
                 **widgets(info, "ModularGuider_ClassifierFreeGuidance", guidance_scale=5.0))
    plain = Bridged(info, g, guider=cfg)
    effect = chain.compare(chain.latent, plain.latent)
    counting(True)
    try:
        got, changed = result(server, g, diff, effect)
    finally:
        counting(False)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-3 * got["max_abs_a"], changed  # the blurred query changed it
    REPORT.append(f"bridge sdxl + SmoothedEnergyGuidance (mid block, sigma 2): vs diffusers pipe() with it "
                  f"{got['max_abs_diff']:.3g} (|latent| max {got['max_abs_a']:.3g}); the blur's own effect "
                  f"{changed['max_abs_diff']:.3g}")


# image2image / inpainting from a LATENT with content: the steps of diffusers' image2image (inpainting) chain, the
# strength on its set-timesteps step; 6 steps at strength 0.6: 3 of them run
STRENGTH, FROM_IMAGE_STEPS = 0.6, 6
FROM_IMAGE = {
    "sdxl_image2image": ("sdxl", [("InputStep", {}), ("Img2ImgSetTimestepsStep", {}),
                                  ("Img2ImgPrepareLatentsStep", {"generator": SEED}),
                                  ("Img2ImgPrepareAdditionalConditioningStep", {})], None),
    "sdxl_inpainting": ("sdxl", [("InputStep", {}), ("Img2ImgSetTimestepsStep", {}),
                                 ("InpaintPrepareLatentsStep", {"generator": SEED}),
                                 ("Img2ImgPrepareAdditionalConditioningStep", {})],
                        "ModularLoop_StableDiffusionXLInpaintDenoiseStep"),
    "sd3_image2image": ("sd3", [("TextInputStep", {}), ("AdditionalInputsStep", {}),
                                ("PrepareLatentsStep", {"generator": SEED}), ("Img2ImgSetTimestepsStep", {}),
                                ("Img2ImgPrepareLatentsStep", {})], None),
    "flux_image2image": ("flux", [("TextInputStep", {}), ("AdditionalInputsStep", {}),
                                  ("PrepareLatentsStep", {"generator": SEED}), ("Img2ImgSetTimestepsStep", {}),
                                  ("Img2ImgPrepareLatentsStep", {}), ("RoPEInputsStep", {})], None),
}


@pytest.mark.parametrize("case", FROM_IMAGE)
def test_image2image_and_inpainting_from_a_latent_equal_diffusers_own_pipe(server, info, case):
    # the starting image: a LATENT with content (diffusers' own text2image result on the folder, in ComfyUI's VAE
    # latent space, as VAE Encode gives one); inpainting: its left half repainted (ComfyUI's Set Latent Noise Mask)
    family, steps, loop = FROM_IMAGE[case]
    spec = FAMILIES[family]
    g = Graph()
    image = g.node("MLTest_DiffusersLatents", folder=spec["folder"], prompt="a dog", negative_prompt="", steps=2,
                   seed=5, height=SIZE, width=SIZE)
    latent, mask = image, None
    if case.endswith("inpainting"):
        half = g.node("SolidMask", value=1.0, width=SIZE // 2, height=SIZE)
        mask = g.node("MaskComposite", destination=g.node("SolidMask", value=0.0, width=SIZE, height=SIZE),
                      source=half, x=0, y=0, operation="add")
        latent = g.node("SetLatentNoiseMask", samples=image, mask=mask)
    steps = [(name, {**inputs, **({"num_inference_steps": FROM_IMAGE_STEPS, "strength": STRENGTH}
                                  if "SetTimesteps" in name else {})}) for name, inputs in steps]
    chain = Bridged(info, g, family=family, latent=latent, steps=steps, loop=loop)
    ref = g.node("MLTest_DiffusersLatents", folder=spec["folder"], prompt=PROMPT, negative_prompt=NEGATIVE,
                 steps=FROM_IMAGE_STEPS, seed=SEED, height=SIZE, width=SIZE, image_latents=image,
                 call=json.dumps({"strength": STRENGTH}), **({"mask": mask} if mask is not None else {}))
    diff, moved = chain.compare(chain.latent, ref), chain.compare(chain.latent, image)
    got, changed = result(server, g, diff, moved)
    assert equal(got), got
    assert changed["max_abs_diff"] > 1e-2 * got["max_abs_a"], changed  # it did not just hand the image back
    REPORT.append(f"bridge {case} (strength {STRENGTH}): vs diffusers pipe() with the same image_latents "
                  f"{got['max_abs_diff']:.3g} (|latent| max {got['max_abs_a']:.3g})")


WORKFLOW_NODES = {"sdxl": ("MLTest_ComfySDXL", {"folder": TINY_SDXL_COMFY}, "StableDiffusionXLAutoBlocks"),
                  "sd3": ("MLTest_ComfySD3", {"unet_name": TINY_SD3_COMFY_FILE}, "StableDiffusion3AutoBlocks"),
                  "flux": ("MLTest_ComfyFlux", {"unet_name": TINY_FLUX_COMFY_FILE}, "FluxAutoBlocks"),
                  "wan": ("MLTest_ComfyWan", {"folder": TINY_WAN}, "WanBlocks")}


@pytest.mark.parametrize("family, workflow", [("sdxl", "text2image"), ("sdxl", "image2image"),
                                              ("sdxl", "inpainting"), ("sd3", "text2image"),
                                              ("sd3", "image2image"), ("flux", "text2image"),
                                              ("flux", "image2image"), ("wan", "default")])
def test_the_workflow_node_on_a_checkpoint_equals_its_chain_of_comfyui_nodes(server, info, family, workflow):
    # Load Checkpoint's MODEL, CLIP and VAE -> Diffusers Pipeline From MODEL -> the family's workflow node -> an
    # image, == the same loop wired from ComfyUI's own nodes: CLIP Text Encode (x 2 where the family guides),
    # (Load Image -> VAE Encode (-> Set Latent Noise Mask)), CONDITIONING To State, the family's steps and loop,
    # VAE Decode. The tiny checkpoints' CLIPs and VAEs are ComfyUI's own SDXL / Flux CLIP and AutoencoderKL classes.
    g = Graph()
    loader, inputs, blocks = WORKFLOW_NODES[family]
    spec = FAMILIES[family]
    checkpoint = g.node(loader, **inputs)
    model = checkpoint.out(0)
    if "sampling" in spec:
        cls, given = spec["sampling"]
        model = g.node(cls, model=model, **given)
    pipeline = g.node("ModularPipelineFromModel", model=model, clip=checkpoint.out(1), vae=checkpoint.out(2))
    cls = f"ModularWorkflow_{blocks}"
    guided = spec.get("negative", True)
    call = {"prompt": PROMPT, "num_inference_steps": FROM_IMAGE_STEPS, "generator": SEED, "height": SIZE,
            "width": SIZE, "output_type": "pt", **({"negative_prompt": NEGATIVE} if guided else {}),
            **({"strength": STRENGTH} if workflow not in ("text2image", "default") else {}), **spec.get("call", {})}
    node = g.node(cls, **widgets(info, cls, workflow=workflow, **call), pipeline=pipeline)
    image = g.node("ImageScale", image=g.node("LoadImage", image="example.png"), upscale_method="nearest-exact",
                   width=SIZE, height=SIZE, crop="center")
    mask = g.node("MaskComposite", destination=g.node("SolidMask", value=0.0, width=SIZE, height=SIZE),
                  source=g.node("SolidMask", value=1.0, width=SIZE // 2, height=SIZE), x=0, y=0, operation="add")
    latent = None
    if workflow not in ("text2image", "default"):
        node.set(image=image)
        latent = g.node("VAEEncode", pixels=image, vae=checkpoint.out(2))
    if workflow == "inpainting":
        node.set(mask_image=mask)
        latent = g.node("SetLatentNoiseMask", samples=latent, mask=mask)
    encode = [g.node("CLIPTextEncode", clip=checkpoint.out(1), text=text) for text in (PROMPT, NEGATIVE)]
    steps = spec["steps"] if workflow in ("text2image", "default") else FROM_IMAGE[f"{family}_{workflow}"][1]
    steps = [(name, {**inputs, "num_inference_steps": FROM_IMAGE_STEPS,
                     **({"strength": STRENGTH} if workflow not in ("text2image", "default") else {})}
              if "SetTimesteps" in name
              else inputs) for name, inputs in steps]
    loop = FROM_IMAGE["sdxl_inpainting"][2] if workflow == "inpainting" else None
    wired = Bridged(info, g, model=model, cond=(encode[0], encode[1]), latent=latent, steps=steps, loop=loop,
                    family=family)
    decoded = g.node("VAEDecode", samples=wired.latent, vae=checkpoint.out(2))
    out = g.node("ModularStateToImage", state=node, key="videos" if "frames" in spec else "images")
    diff = g.node("PreviewAny", source=g.node("MLTest_ImageDiff", a=out.out(0), b=decoded))
    source = g.node("PreviewAny", source=g.node("MLTest_ImageDiff", a=out.out(0), b=image))
    got, moved = result(server, g, diff, source)
    frames = spec["call"]["num_frames"] if "frames" in spec else 1  # a video's frames, as VAE Decode gives them
    assert got["finite"] and got["shape"] == [frames, SIZE, SIZE, 3], got
    assert got["max_abs_diff"] <= 1e-5, got
    assert got["std_a"] > 1e-3, got  # a picture, not a constant ...
    assert frames > 1 or moved["max_abs_diff"] > 1e-2, moved  # ... nor the input (a video is not: other shape)
    REPORT.append(f"bridge {family} workflow node {workflow} on the checkpoint's MODEL / CLIP / VAE vs the same "
                  f"wired from ComfyUI's nodes: images max|diff| {got['max_abs_diff']:.3g}")


@pytest.mark.parametrize("family, cfg", [("sdxl", 7.5), ("sd3", 7.0), ("flux", 1.0)])
def test_the_bridged_loop_with_diffusers_euler_agrees_with_comfyuis_euler_sampler(server, info, family, cfg):
    # the same MODEL, conditioning, sigmas and starting latent: SamplerCustomAdvanced with euler and a CFGGuider at
    # the pipeline guider's scale (the family's default ClassifierFreeGuidance: SDXL 7.5, SD3 7.0; Flux.1-dev has no
    # CFG: 1, its guidance embedding 3.5 on both sides).
    # ComfyUI applies CFG to the denoised latents, diffusers' guider to the noise predictions: equal in exact
    # arithmetic, a float32 rounding apart here.
    chain = Bridged(info, family=family)
    g = chain.graph
    start = chain.steps["PrepareLatentsStep"]
    for name, inputs in FAMILIES[family].get("after", []):  # Flux: its packed latents unpacked by its own step
        start = chain.step(name, state=start, **inputs)
    start = g.node("ModularStateToLatent", state=start, pipeline=chain.pipeline)
    guider = g.node("CFGGuider", model=chain.model, positive=chain.cond.out(0), negative=chain.cond.out(1), cfg=cfg)
    if family == "sdxl":  # ComfyUI starts from latent + sigma x noise: the start as the latent, no noise
        noise, latent = g.node("DisableNoise"), start
    else:  # flow matching at sigma 1 starts from the noise alone: the start as the noise
        noise = g.node("MLTest_LatentAsNoise", latent=start, model=chain.model)
        latent = g.node(FAMILIES[family]["empty"], width=SIZE, height=SIZE, batch_size=1)
    sampled = g.node("SamplerCustomAdvanced", noise=noise, guider=guider,
                     sampler=g.node("KSamplerSelect", sampler_name="euler"),
                     sigmas=g.node("MLTest_SchedulerSigmas", pipeline=chain.pipeline, steps=STEPS,
                                   **({"state": chain.steps["SetTimestepsStep"]} if family == "flux" else {})),
                     latent_image=latent)
    diff = chain.compare(chain.latent, sampled)
    got = result(server, g, diff)[0]
    assert equal(got), got
    REPORT.append(f"bridge {family} vs SamplerCustomAdvanced euler (same sigmas, start, CFG {cfg}): max|diff| "
                  f"{got['max_abs_diff']:.3g} (|latent| max {got['max_abs_a']:.3g})")


def test_comfyuis_wrappers_and_patches_run_inside_the_bridged_loop(server, info):
    g = Graph()
    model = g.node("MLTest_ComfySDXL", folder=TINY_SDXL_COMFY)
    counted = g.node("MLTest_CountModelCalls", model=model, key="bridge")
    chain = Bridged(info, g, model=counted)
    calls = g.node("PreviewAny", source=g.node("MLTest_CountedCalls", key="bridge", after=chain.latent))
    run = server.run(g, timeout=600)
    assert run.status == "success", (run.error or {}).get("exception_message", run.error)
    seen = json.loads(run.text(calls))
    # CFG: a conditional and an unconditional call per step, each through every kind of wrapper and patch
    assert seen["model_function_wrapper"] == 2 * STEPS, seen
    assert seen["APPLY_MODEL"] == seen["DIFFUSION_MODEL"] == seen["CALC_COND_BATCH"] == 2 * STEPS, seen
    assert seen["ON_PRE_RUN"] == 1, seen  # one sampling session for the loop
    assert seen["cond_or_uncond"] == [[0], [1]] * STEPS, seen
    assert seen["sample_sigmas"] == STEPS + 1, seen


@pytest.mark.parametrize("case", ["sd15_model", "sd15_conditioning", "area", "latent_channels", "sd3_noise_mask",
                                  "folder_pipeline", "layer_hook_guider", "vae_channels", "clip_skip",
                                  "wan_image_latent", "qwen_noise_mask"])
def test_bad_input_to_the_bridge_is_named_before_the_loop(server, info, case):
    g = Graph()
    family = case.split("_")[0]
    chain = Bridged(info, g, family=family if family in FAMILIES else "sdxl")
    chain.graph.node("PreviewAny", source=chain.graph.node("MLTest_MaxAbsDiff", a=chain.latent, b=chain.latent))
    expect = {}
    if case == "sd15_model":
        chain.pipeline.set(model=g.node("MLTest_TinySD15", seed=0))
        expect = {"node": chain.pipeline, "text": ["a SD15 (BaseModel) model is not bridged", "StableDiffusionXL (SDXL)",
                                                   "StableDiffusion3 (SD3)"]}
    elif case == "sd15_conditioning":  # an SD1.5 CLIP's conditioning: width 768 here 32, no pooled output
        chain.to_state.set(positive=g.node("MLTest_Conditioning", seed=0, width=32, tokens=8, pooled=0))
        expect = {"node": chain.to_state, "text": ["'positive'", "[batch, tokens, 64]", "this checkpoint's CLIP"]}
    elif case == "area":
        area = g.node("ConditioningSetArea", conditioning=chain.cond.out(0), width=64, height=64, x=0, y=0, strength=1.0)
        chain.to_state.set(positive=area)
        expect = {"node": chain.to_state, "text": ["'positive'", "area", "Conditioning Set Area"]}
    elif case == "latent_channels":
        chain.to_state.set(latent=g.node("EmptySD3LatentImage", width=SIZE, height=SIZE, batch_size=1))
        expect = {"node": chain.to_state, "text": ["'latent'", "16 channels", "4"]}
    elif case == "sd3_noise_mask":  # diffusers' SD3 blocks have no inpainting workflow
        masked = g.node("SetLatentNoiseMask", samples=g.node("EmptySD3LatentImage", width=SIZE, height=SIZE,
                                                             batch_size=1),
                        mask=g.node("SolidMask", value=1.0, width=SIZE, height=SIZE))
        chain.to_state.set(latent=masked)
        expect = {"node": chain.to_state, "text": ["'latent'", "noise mask", "no inpainting workflow", "image2image"]}
    elif case == "wan_image_latent":  # an image's latent (4-D) for a video model
        chain.to_state.set(latent=g.node("EmptySD3LatentImage", width=SIZE, height=SIZE, batch_size=1))
        expect = {"node": chain.to_state, "text": ["'latent'", "not a video LATENT", "frames", "Wan"]}
    elif case == "qwen_noise_mask":  # Qwen-Image is bridged for text2image only
        masked = g.node("SetLatentNoiseMask", samples=g.node("EmptySD3LatentImage", width=SIZE, height=SIZE,
                                                             batch_size=1),
                        mask=g.node("SolidMask", value=1.0, width=SIZE, height=SIZE))
        chain.to_state.set(latent=masked)
        expect = {"node": chain.to_state, "text": ["'latent'", "noise mask", "text2image only"]}
    elif case == "layer_hook_guider":  # perturbed attention hooks diffusers' attention layers: none behind the bridge
        cls = "ModularGuider_PerturbedAttentionGuidance"
        chain.loop.set(guider=g.node(cls, **widgets(info, cls, perturbed_guidance_layers="[1]")))
        expect = {"node": chain.loop, "text": ["the guider PerturbedAttentionGuidance works by hooking",
                                               "ClassifierFreeGuidance"]}
    elif case == "vae_channels":  # an SD3 / Flux VAE (16 latent channels) for an SDXL MODEL
        chain.pipeline.set(vae=g.node("MLTest_TinyVAE", latent_channels=16))
        expect = {"node": chain.pipeline, "text": ["'vae'", "16 channels", "have 4", "this checkpoint's VAE"]}
    elif case == "clip_skip":  # diffusers' clip_skip: on a ComfyUI CLIP it is CLIP Set Last Layer's
        checkpoint = g.node("MLTest_ComfySDXL", folder=TINY_SDXL_COMFY)
        pipeline = g.node("ModularPipelineFromModel", model=checkpoint.out(0), clip=checkpoint.out(1))
        cls = "ModularWorkflow_StableDiffusionXLAutoBlocks"
        node = g.node(cls, **widgets(info, cls, workflow="text2image", prompt=PROMPT, num_inference_steps=2,
                                     height=SIZE, width=SIZE, more=json.dumps({"clip_skip": 2})), pipeline=pipeline)
        g.node("PreviewAny", source=g.node("ModularStateToLatent", state=node, pipeline=pipeline))
        expect = {"node": node, "text": ["StableDiffusionXLTextEncoderStep", "clip_skip 2", "CLIP Set Last Layer"]}
    elif case == "folder_pipeline":
        folder = g.node("ModularDiffusersLoader", folder=TINY_SDXL_COMFY, dtype="float32")
        chain.to_state.set(pipeline=folder)
        expect = {"node": chain.to_state, "text": ["'pipeline'", "Diffusers Pipeline From MODEL"]}
    node, message = run_error(server, g)
    assert node == expect["node"].id, (node, message)
    for text in expect["text"]:
        assert text in message, message
    # the server keeps serving: the good chain runs after the failed one
    good = Bridged(info)
    diff = good.against_diffusers()
    assert equal(result(server, good.graph, diff)[0])
