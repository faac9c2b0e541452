"""Host tier, diffusers' own pipelines: its shipped steps, loop wrapper and loop blocks as nodes on a tiny random
SDXL pipeline in models/diffusers/ (written by the test with save_pretrained), against diffusers' own Python
run of the same folder with the same seed. Skipped, loudly, without a ComfyUI."""

import json

import pytest

from comfy_host import (widget_values, PICKLE_ONLY, TINY_FLUX, TINY_SD3_PIPELINE, TINY_SDXL, Graph, ValidationError,
                        interrupt_at_first_step, require_host)
from conftest import REPORT

require_host()

SDXL = "StableDiffusionXL"
PROMPT = "a cat"
STEPS, SEED, SIZE = 3, 0, 64
TOL = 1e-5


def widgets(info, class_type, **given):
    """The node's required widget defaults, with `given` on top (an API prompt must hold every required input)."""
    return {k: v for k, v in widget_values(info, class_type, **given).items() if v is not None}


class Chain:
    """A text-to-image pipeline of diffusers' as a chain of nodes: Load Diffusers Pipeline -> its steps, in
    `order` -> its denoise loop (`loop`, `blocks` attached) -> decode -> State To Image -> Preview Image."""

    def __init__(self, info, family, before, loop, blocks=(), folder=TINY_SDXL, negative_prompt="", after=()):
        g = self.graph = Graph()
        self.info, self.family, self.folder, self.negative_prompt = info, family, folder, negative_prompt
        self.pipeline = g.node("ModularDiffusersLoader", folder=folder, dtype="float32")
        state, self.steps = None, {}
        for name, inputs in before:
            state = self.steps[name] = self.step(name, **({"state": state} if state else {}), **inputs)
        self.blocks = [g.node(cls, **widgets(info, cls, **inputs)) for cls, inputs in blocks]
        self.loop = g.node(loop, **widgets(info, loop), state=state, pipeline=self.pipeline,
                           **{f"block_{k}": b for k, b in enumerate(self.blocks, start=1)})
        state = self.loop
        for name, inputs in after:  # steps between the loop and the decoder (Flux unpacks its latents)
            state = self.steps[name] = self.step(name, state=state, **inputs)
        decoded = self.step("DecodeStep", state=state, output_type="pt")
        self.image = g.node("ModularStateToImage", state=decoded, key="images")
        self.preview = g.node("PreviewImage", images=self.image)  # what Save Image takes, too

    def step(self, name, **inputs):
        cls = f"ModularStep_{self.family}{name}"
        node = self.graph.node(cls, **widgets(self.info, cls, **inputs))
        if "pipeline" in self.info[cls]["input"].get("optional", {}):
            node.set(pipeline=self.pipeline)
        return node

    def against_diffusers(self, guider="", guider_params=None, scheduler="", media=None, **call):
        """max |diff| of the chain's image and diffusers' own run (`call`: more keyword arguments of its pipe()),
        shown by `self.diff`."""
        ref = self.graph.node("MLTest_DiffusersReference", folder=self.folder, prompt=PROMPT, steps=STEPS, seed=SEED,
                              height=SIZE, width=SIZE, guider=guider, guider_params=json.dumps(guider_params or {}),
                              scheduler=scheduler, negative_prompt=self.negative_prompt, call=json.dumps(call),
                              **(media or {}))
        self.diff = self.graph.node("PreviewAny", source=self.graph.node("MLTest_ImageDiff", a=self.image, b=ref))
        return self

    def result(self, server):
        run = server.run(self.graph, timeout=600)
        assert run.status == "success", run.error
        return json.loads(run.text(self.diff)), run


LATENT_INPUTS = {"height": SIZE, "width": SIZE, "generator": SEED}


def SDXLChain(info, loop="ModularLoop_StableDiffusionXLDenoiseStep", blocks=(), folder=TINY_SDXL):
    """SDXL: text encoder -> input -> set timesteps -> prepare latents -> additional conditioning -> loop."""
    chain = Chain(info, SDXL, [("TextEncoderStep", {"prompt": PROMPT}), ("InputStep", {}),
                               ("SetTimestepsStep", {"num_inference_steps": STEPS}), ("PrepareLatentsStep", LATENT_INPUTS),
                               ("PrepareAdditionalConditioningStep", {})], loop, blocks, folder)
    chain.latents = chain.steps["PrepareLatentsStep"]
    return chain


def SD3Chain(info, negative_prompt="blurry"):
    """SD3 (flow matching): text encoder -> text input -> prepare latents -> set timesteps -> loop. (SD3 encodes
    no negative prompt unless one is given: CFG needs it.)"""
    return Chain(info, "StableDiffusion3", [("TextEncoderStep", {"prompt": PROMPT, "negative_prompt": negative_prompt}),
                                            ("TextInputStep", {}), ("PrepareLatentsStep", LATENT_INPUTS),
                                            ("SetTimestepsStep", {"num_inference_steps": STEPS})],
                 "ModularLoop_StableDiffusion3DenoiseStep", folder=TINY_SD3_PIPELINE, negative_prompt=negative_prompt)


def run_error(server, graph):
    run = server.run(graph, timeout=600)
    assert run.status == "error", run.outputs
    return run.error["node_id"], run.error["exception_message"], run


# --- nodes ---------------------------------------------------------------------------------------


def test_shipped_loops_blocks_steps_and_guiders_are_nodes_grouped_by_family(info):
    loop = info["ModularLoop_StableDiffusionXLDenoiseLoopWrapper"]
    assert loop["category"] == "Modular Loops/diffusers/stable_diffusion_xl/denoise"
    assert "denoise" in loop["description"].lower() and "diffusers" in loop["description"]
    block = info["ModularBlock_StableDiffusionXLLoopDenoiser"]
    assert block["category"] == "Modular Loops/diffusers/stable_diffusion_xl/denoise"
    step = info["ModularStep_StableDiffusionXLTextEncoderStep"]
    assert step["category"] == "Modular Loops/diffusers/stable_diffusion_xl/encoders"
    assert step["input"]["required"]["prompt"][0] == "STRING" and step["input"]["required"]["prompt"][1]["multiline"]
    assert step["output"] == ["PIPELINE_STATE"] and step["input"]["optional"]["pipeline"][0] == "DIFFUSERS_PIPELINE"
    # diffusers' UI templates type its untyped inputs; the generator is a seed
    latents = info["ModularStep_StableDiffusionXLPrepareLatentsStep"]["input"]
    assert latents["required"]["height"][0] == "INT" and latents["required"]["generator"][0] == "INT"
    # a loop block of diffusers' shows the state values it reads, as sockets
    assert info["ModularBlock_StableDiffusionXLLoopBeforeDenoiser"]["input"]["optional"]["latents"][0] == "*"
    for family in ("stable_diffusion_3", "flux", "wan", "qwenimage"):
        assert any(v["category"].startswith(f"Modular Loops/diffusers/{family}/") for v in info.values()), family
    guiders = {k for k in info if k.startswith("ModularGuider_")}
    assert len(guiders) >= 12 and "ModularGuider_AdaptiveProjectedGuidance" in guiders
    assert info["ModularGuider_ClassifierFreeGuidance"]["input"]["required"]["guidance_scale"][1]["default"] == 7.5
    counts = {kind: sum(k.startswith(f"Modular{kind}_") and "/diffusers/" in v["category"] for k, v in info.items())
              for kind in ("Loop", "Block", "Step")}
    REPORT.append(f"diffusers' shipped classes as nodes: {counts['Loop']} loops, {counts['Block']} loop blocks, "
                  f"{counts['Step']} steps, {len(guiders)} guiders")


# --- parity with diffusers' own run ---------------------------------------------------------------


def test_sdxl_node_chain_equals_diffusers_own_pipeline(server, info):
    result, run = SDXLChain(info).against_diffusers().result(server)
    assert result["finite"] and result["std_a"] > 1e-3 and result["shape"] == [1, SIZE, SIZE, 3], result
    assert result["max_abs_diff"] <= TOL, result


def test_a_batch_given_once_equals_diffusers_pipe_with_it(server, info):
    # pipe(num_images_per_prompt=2) takes it once and every block reads it from the state. Given on the input step
    # only, the later steps that declare it too (prepare latents, additional conditioning) show it at their
    # default and so read the state's 2, as diffusers' blocks do; a value set there would be an explicit override.
    chain = SDXLChain(info)
    chain.steps["InputStep"].set(num_images_per_prompt=2)
    result, run = chain.against_diffusers(num_images_per_prompt=2).result(server)
    assert result["finite"] and result["shape"] == [2, SIZE, SIZE, 3], result
    assert result["max_abs_diff"] <= TOL, result
    latents = info["ModularStep_StableDiffusionXLPrepareLatentsStep"]["input"]["required"]["num_images_per_prompt"]
    assert latents[1]["default"] == 1 and latents[1]["min"] == 1 and "not given" in latents[1]["tooltip"]


class WorkflowRun(Chain):
    """One family's Auto blocks node (`ModularWorkflow_<Class>`) running a named workflow: the call's values given
    once on it -> State To Image -> Preview Image."""

    def __init__(self, info, blocks, workflow, folder=TINY_SDXL, negative_prompt="", **call):
        g = self.graph = Graph()
        self.info, self.folder, self.negative_prompt = info, folder, negative_prompt
        self.pipeline = g.node("ModularDiffusersLoader", folder=folder, dtype="float32")
        cls = f"ModularWorkflow_{blocks}"
        self.node = g.node(cls, **widgets(info, cls, workflow=workflow, **call), pipeline=self.pipeline)
        self.image = g.node("ModularStateToImage", state=self.node, key="images")
        self.preview = g.node("PreviewImage", images=self.image)


SDXL_CALL = {"prompt": PROMPT, "num_inference_steps": STEPS, "height": SIZE, "width": SIZE, "generator": SEED,
             "output_type": "pt"}


def test_the_workflow_node_runs_diffusers_chain_as_pipe_does(server, info):
    node = info["ModularWorkflow_StableDiffusionXLAutoBlocks"]
    assert node["category"] == "Modular Loops/diffusers/stable_diffusion_xl"
    workflows = node["input"]["required"]["workflow"][0]
    assert workflows[:3] == ["text2image", "image2image", "inpainting"] and len(workflows) == 18  # its _workflow_map
    required, optional = node["input"]["required"], node["input"]["optional"]
    # the common values and the media on inputs of their own; the rest (clip_skip, ...) in `more`, as JSON
    assert {"prompt", "negative_prompt", "height", "width", "generator", "num_inference_steps", "strength",
            "num_images_per_prompt", "more"} <= set(required) and "clip_skip" not in required, list(required)
    assert {"image", "mask_image", "control_image"} <= set(optional) and "latents_link" not in optional, list(optional)
    assert len(required) + len(optional) <= 24, (list(required), list(optional))  # was 75 (52 of them advanced)
    result, run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **SDXL_CALL).against_diffusers().result(server)
    assert result["finite"] and result["std_a"] > 1e-3 and result["shape"] == [1, SIZE, SIZE, 3], result
    assert result["max_abs_diff"] <= TOL, result
    batch, _ = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **SDXL_CALL,
                           num_images_per_prompt=2).against_diffusers(num_images_per_prompt=2).result(server)
    assert batch["shape"][0] == 2 and batch["max_abs_diff"] <= TOL, batch
    # a value of the call that is not on the node: in `more`, as pipe() takes it
    more, _ = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **SDXL_CALL,
                          more=json.dumps({"clip_skip": 1, "eta": 0.0})).against_diffusers(clip_skip=1).result(server)
    assert more["max_abs_diff"] <= TOL and more["max_abs_diff"] is not None, more
    bad = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **SDXL_CALL, more=json.dumps({"clip_skp": 1}))
    node_id, msg, _ = run_error(server, bad.against_diffusers().graph)
    assert node_id == bad.node.id and "'more': 'clip_skp': not a value of this call" in msg, msg


def test_a_workflow_node_reproduces_its_picture_from_its_seed_widget(server, info):
    # ComfyUI's seed convention (KSampler's): a value, 0 by default, up to 2^64 - 1, with its control after generate;
    # the same workflow, queued again after the cache is freed, gives the same picture: diffusers' own for that seed.
    seed = info["ModularWorkflow_StableDiffusionXLAutoBlocks"]["input"]["required"]["generator"]
    assert seed[0] == "INT" and seed[1]["default"] == 0 and seed[1]["min"] == 0, seed
    assert seed[1]["max"] == 0xFFFFFFFFFFFFFFFF and seed[1].get("control_after_generate"), seed
    step = info["ModularStep_StableDiffusionXLPrepareLatentsStep"]["input"]["required"]["generator"]
    assert step[1]["default"] == -1 and not step[1].get("control_after_generate")  # a step's: the state's generator
    call = {k: v for k, v in SDXL_CALL.items() if k != "generator"}  # the widget as it comes
    results = []
    for _ in range(2):
        run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **call).against_diffusers()
        results.append(run.result(server)[0])
        server.post("/free", {"unload_models": True, "free_memory": True})  # nothing cached: it runs again
    assert all(r["max_abs_diff"] <= TOL for r in results), results  # == pipe(generator=manual_seed(0)), twice
    big = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **{**call, "generator": 2 ** 64 - 1})
    assert big.against_diffusers().result(server)[1].status == "success"


def picture(graph, size=SIZE):
    """ComfyUI's own example image (Load Image), scaled to `size`: an IMAGE, and a MASK of its left half."""
    image = graph.node("ImageScale", image=graph.node("LoadImage", image="example.png"), upscale_method="nearest-exact",
                       width=size, height=size, crop="center")
    left = graph.node("MaskComposite", destination=graph.node("SolidMask", value=0.0, width=size, height=size),
                      source=graph.node("SolidMask", value=1.0, width=size // 2, height=size), x=0, y=0,
                      operation="add")
    return image, left


@pytest.mark.parametrize("workflow", ["image2image", "inpainting"])
def test_a_loaded_image_and_mask_go_in_as_diffusers_takes_them(server, info, workflow):
    # IMAGE -> the PIL image diffusers' image processor takes, MASK (1 = repaint) -> its mask image: the workflow
    # node == pipe(image=..., mask_image=..., strength=...).
    run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", workflow, **SDXL_CALL, strength=0.6)
    image, mask = picture(run.graph)
    given = {"image": image, **({"mask_image": mask} if workflow == "inpainting" else {})}
    run.node.set(**given)
    result, _ = run.against_diffusers(media=given, strength=0.6).result(server)
    assert result["finite"] and result["shape"] == [1, SIZE, SIZE, 3], result
    assert result["max_abs_diff"] <= TOL, result
    optional = info["ModularWorkflow_StableDiffusionXLAutoBlocks"]["input"]["optional"]
    assert optional["image"][0] == "IMAGE" and optional["mask_image"][0] == "MASK"


@pytest.mark.parametrize("case", ["rgba", "mask_size", "asked_size"])
def test_bad_media_are_named_before_anything_runs(server, info, case):
    run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "inpainting", **SDXL_CALL)
    image, mask = picture(run.graph)
    given = {"image": image, "mask_image": mask}
    if case == "rgba":
        given["image"] = run.graph.node("JoinImageWithAlpha", image=image, alpha=mask)
    elif case == "mask_size":
        given["mask_image"] = run.graph.node("SolidMask", value=1.0, width=SIZE // 2, height=SIZE)
    elif case == "asked_size":
        run.node.set(height=2 * SIZE)
    run.node.set(**given)  # (a batch into an input that takes one image: the core tier)
    node, msg, _ = run_error(server, run.graph)
    words = {"rgba": "RGBA", "mask_size": "a mask is of its image's size", "asked_size": "leave height / width at 0"}[case]
    assert node == run.node.id and words in msg and "StableDiffusionXLAutoBlocks" in msg and "'" in msg, msg
    ok, _ = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **SDXL_CALL).against_diffusers().result(server)
    assert ok["max_abs_diff"] <= TOL  # the server goes on serving


def test_every_loop_that_guides_takes_a_guider_node(server, info):
    # Loops whose own blocks use the guider (SD3's, Z-Image's, Wan's denoise steps) take a guider node, as the
    # ones that declare it themselves do; the workflow nodes too.
    for loop in ("StableDiffusion3DenoiseStep", "ZImageDenoiseStep", "WanDenoiseStep", "StableDiffusionXLDenoiseStep"):
        assert info[f"ModularLoop_{loop}"]["input"]["optional"]["guider"][0] == "DIFFUSERS_GUIDER", loop
    assert info["ModularWorkflow_ZImageAutoBlocks"]["input"]["optional"]["guider"][0] == "DIFFUSERS_GUIDER"
    # and a guider given there is the one SD3's loop runs with: CFG at a scale that changes the picture
    chain = SD3Chain(info)
    cfg = chain.graph.node("ModularGuider_ClassifierFreeGuidance", **widgets(info, "ModularGuider_ClassifierFreeGuidance",
                                                                              guidance_scale=9.0))
    chain.loop.set(guider=cfg)
    changed, _ = chain.against_diffusers(guider="ClassifierFreeGuidance", guider_params={"guidance_scale": 9.0}).result(server)
    assert changed["max_abs_diff"] <= TOL, changed


def test_a_workflow_step_that_fails_is_named_with_the_workflow(server, info):
    run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "image2image", **SDXL_CALL)  # no image given
    node, msg, _ = run_error(server, run.graph)
    assert node == run.node.id and "workflow image2image, step" in msg, msg


def test_an_image2image_that_keeps_no_step_is_named_before_the_loop(server, info):
    # strength 0.3 over 2 steps keeps int(0.6) = 0 of them: diffusers' own run fails only at decoding (a reshape
    # error); the workflow node names the strength and the steps before the loop.
    run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "image2image", **{**SDXL_CALL, "num_inference_steps": 2},
                      strength=0.3)
    image, _ = picture(run.graph)
    run.node.set(image=image)
    node, msg, _ = run_error(server, run.graph)
    assert node == run.node.id and "holds no step to run" in msg and "strength 0.3" in msg, msg


def test_call_values_have_limits_a_shared_workflow_cannot_pass(server, info):
    # A size past ComfyUI's own limit, 0 or negative steps and batches: refused by ComfyUI's validation, before
    # anything is allocated or run.
    host_max = info["EmptyLatentImage"]["input"]["required"]["width"][1]["max"]
    latents = info["ModularStep_StableDiffusionXLPrepareLatentsStep"]["input"]["required"]
    assert latents["height"][1]["max"] == latents["width"][1]["max"] == host_max  # nodes.MAX_RESOLUTION
    steps = info["ModularStep_StableDiffusionXLSetTimestepsStep"]["input"]["required"]["num_inference_steps"]
    assert steps[1]["min"] == 1
    for step, value in (("PrepareLatentsStep", {"height": 10 ** 7}), ("SetTimestepsStep", {"num_inference_steps": -3}),
                        ("InputStep", {"num_images_per_prompt": -1})):
        chain = SDXLChain(info)
        chain.steps[step].set(**value)
        with pytest.raises(ValidationError) as e:
            server.run(chain.graph)
        assert str(chain.steps[step].id) in str(e.value) and next(iter(value)) in str(e.value), e.value


def test_sd3_node_chain_equals_diffusers_own_pipeline(server, info):
    result, run = SD3Chain(info).against_diffusers().result(server)
    assert result["finite"] and result["std_a"] > 1e-3 and result["shape"] == [1, SIZE, SIZE, 3], result
    assert result["max_abs_diff"] <= TOL, result


def test_flux_node_chain_equals_diffusers_own_pipeline(server, info):
    # Flux: text encoder -> text input -> prepare latents -> set timesteps -> RoPE inputs -> loop -> unpack -> decode
    chain = Chain(info, "Flux", [("TextEncoderStep", {"prompt": PROMPT}), ("TextInputStep", {}),
                                 ("PrepareLatentsStep", LATENT_INPUTS), ("SetTimestepsStep", {"num_inference_steps": STEPS}),
                                 ("RoPEInputsStep", {})], "ModularLoop_FluxDenoiseStep", folder=TINY_FLUX,
                  after=[("UnpackLatentsStep", {})])
    result, run = chain.against_diffusers().result(server)
    assert result["finite"] and result["std_a"] > 1e-3 and result["shape"] == [1, SIZE, SIZE, 3], result
    assert result["max_abs_diff"] <= TOL, result


def test_a_pipeline_pinned_to_the_cpu_gives_the_same_image(server, info):
    chain = SDXLChain(info)
    chain.pipeline.set(device="cpu")
    result, _ = chain.against_diffusers().result(server)
    assert result["max_abs_diff"] <= TOL, result


def test_another_guider_changes_the_result_and_equals_diffusers_with_it(server, info):
    params = {"guidance_scale": 5.0, "eta": 0.5}
    chain = SDXLChain(info)
    guider = chain.graph.node("ModularGuider_AdaptiveProjectedGuidance",
                              **widgets(info, "ModularGuider_AdaptiveProjectedGuidance", guidance_scale=5.0, eta=0.5))
    chain.loop.set(guider=guider)
    result, _ = chain.against_diffusers("AdaptiveProjectedGuidance", params).result(server)
    assert result["max_abs_diff"] <= TOL, result
    with_cfg, _ = SDXLChain(info).against_diffusers("AdaptiveProjectedGuidance", params).result(server)
    assert with_cfg["max_abs_diff"] > 1e-3, with_cfg  # the swap changed the image


def test_a_scheduler_node_swaps_the_runs_scheduler_as_diffusers_does(server, info):
    chain = SDXLChain(info)
    scheduler = chain.graph.node("ModularDiffusersScheduler", scheduler="DPMSolverMultistepScheduler", options="{}")
    chain.steps["SetTimestepsStep"].set(scheduler=scheduler)  # from here on the run steps with it
    result, _ = chain.against_diffusers(scheduler="DPMSolverMultistepScheduler").result(server)
    assert result["max_abs_diff"] <= TOL, result
    euler, _ = SDXLChain(info).against_diffusers(scheduler="DPMSolverMultistepScheduler").result(server)
    assert euler["max_abs_diff"] > 1e-3, euler
    bad = SDXLChain(info)
    bad.steps["SetTimestepsStep"].set(scheduler=bad.graph.node("ModularDiffusersScheduler", scheduler="DDIMScheduler",
                                                                   options="[1]"))
    node, msg, _ = run_error(server, bad.graph)
    assert "options must be a JSON object" in msg, msg


def test_the_pipelines_modules_live_under_comfyuis_model_management(server, info):
    chain = SDXLChain(info)
    loaded = chain.graph.node("PreviewAny", source=chain.graph.node("MLTest_LoadedModels", after=chain.image))
    run = server.run(chain.graph, timeout=600)
    assert run.status == "success", run.error
    models = json.loads(run.text(loaded))
    for name in ("UNet2DConditionModel", "AutoencoderKL", "CLIPTextModel", "CLIPTextModelWithProjection"):
        assert name in models, models
    server.post("/free", {"unload_models": True, "free_memory": True})  # ComfyUI's "free models"
    check = Graph()
    after = check.node("PreviewAny", source=check.node("MLTest_LoadedModels", after=check.node("PrimitiveInt", value=1)))
    models = json.loads(server.run(check, timeout=120).text(after))
    assert "UNet2DConditionModel" not in models and "AutoencoderKL" not in models, models


def test_a_workflow_loads_each_module_when_its_step_runs(server, info):
    # As ComfyUI loads the text encoder, encodes, and only then the diffusion model: each step of a workflow asks
    # ComfyUI's model management for the modules it uses when it runs, never for all of them before the chain.
    clear = Graph()
    clear.node("PreviewAny", source=clear.node("MLTest_LoadCalls", after=clear.node("PrimitiveInt", value=1)))
    server.run(clear, timeout=120)
    server.post("/free", {"unload_models": True, "free_memory": True})
    run = WorkflowRun(info, "StableDiffusionXLAutoBlocks", "text2image", **SDXL_CALL)
    calls = run.graph.node("PreviewAny", source=run.graph.node("MLTest_LoadCalls", after=run.image))
    done = server.run(run.graph, timeout=600)
    assert done.status == "success", done.error
    asked = [c for c in json.loads(done.text(calls)) if c]
    text, unet, vae = {"CLIPTextModel", "CLIPTextModelWithProjection"}, "UNet2DConditionModel", "AutoencoderKL"
    assert asked and set(asked[0]) == text, asked  # the text encoder step: its encoders, nothing else
    first_unet = next(i for i, c in enumerate(asked) if unet in c)
    assert first_unet > 0 and not text & set(asked[first_unet]), asked  # the loop: the denoiser, on its own
    assert vae in asked[-1] and unet not in asked[-1], asked  # the decoder: the VAE, last


def test_a_block_of_ones_own_runs_in_socket_order_inside_diffusers_loop(server, info):
    sdxl = "ModularBlock_StableDiffusionXL"
    own = [(f"{sdxl}LoopBeforeDenoiser", {}), ("ModularBlock_ScaleModelInput", {"factor": 1.0}),
           (f"{sdxl}LoopDenoiser", {}), (f"{sdxl}LoopAfterDenoiser", {})]
    loop = "ModularLoop_StableDiffusionXLDenoiseLoopWrapper"
    same, _ = SDXLChain(info, loop, own).against_diffusers().result(server)
    assert same["max_abs_diff"] <= TOL, same  # factor 1: the shipped loop, block by block
    own[1] = ("ModularBlock_ScaleModelInput", {"factor": 0.8})
    changed, _ = SDXLChain(info, loop, own).against_diffusers().result(server)
    assert changed["finite"] and changed["max_abs_diff"] > 1e-3, changed
    # before the before-denoiser, the latents it scales are not there yet: that block fails at step 0
    chain = SDXLChain(info, loop, [own[1], own[0], own[2], own[3]])
    node, msg, run = run_error(server, chain.graph)
    assert node == chain.loop.id
    assert f"'block_1' (ScaleModelInput, node {chain.blocks[0]}) failed at step 0" in msg and "scaled_latents" in msg, msg


def test_progress_per_step_of_diffusers_loop(server, info):
    # ComfyUI >= 0.33 sends a progress update at most every 0.1 s (first and last always): steps of 0.15 s.
    sdxl = "ModularBlock_StableDiffusionXL"
    blocks = [(f"{sdxl}LoopBeforeDenoiser", {}), (f"{sdxl}LoopDenoiser", {}), (f"{sdxl}LoopAfterDenoiser", {}),
              ("ModularBlock_SleepBlock", {"seconds": 0.15})]
    chain = SDXLChain(info, "ModularLoop_StableDiffusionXLDenoiseLoopWrapper", blocks).against_diffusers()
    _, run = chain.result(server)
    assert [(v, m) for node, v, m in run.progress if node == chain.loop.id] == [(k, STEPS) for k in range(1, STEPS + 1)]


# --- bad input ----------------------------------------------------------------------------------


def test_pickle_only_weights_are_refused_unread(server, info):
    chain = SDXLChain(info, folder=PICKLE_ONLY)
    node, msg, _ = run_error(server, chain.graph)
    assert node == chain.pipeline.id and "component 'unet' has weights only as pickle files" in msg, msg
    assert "diffusion_pytorch_model.bin" in msg


def test_a_folder_that_is_not_there_is_a_validation_error(server, info):
    chain = SDXLChain(info, folder="not-a-pipeline")
    with pytest.raises(ValidationError) as err:
        server.queue(chain.graph)
    assert chain.pipeline.id in err.value.body["node_errors"]


def test_a_loop_missing_a_state_value_names_block_node_and_value(server, info):
    chain = SDXLChain(info)
    chain.loop.set(state=chain.latents.inputs["state"])  # the state before latents were prepared
    node, msg, run = run_error(server, chain.graph)
    assert node == chain.loop.id and "'latents'" in msg and "StableDiffusionXLDenoiseStep" in msg, msg
    assert "before_denoiser" in msg and "StableDiffusionXLLoopBeforeDenoiser" in msg, msg


def test_a_guider_that_needs_negative_embeddings_given_none(server, info):
    chain = SDXLChain(info)
    no_cfg = chain.graph.node("ModularGuider_ClassifierFreeGuidance",
                              **widgets(info, "ModularGuider_ClassifierFreeGuidance", guidance_scale=1.0))
    chain.steps["TextEncoderStep"].set(guider=no_cfg)  # encodes no negative prompt ...
    chain.loop.set(guider=chain.graph.node("ModularGuider_ClassifierFreeGuidance",
                                           **widgets(info, "ModularGuider_ClassifierFreeGuidance")))  # ... CFG 7.5 needs one
    node, msg, _ = run_error(server, chain.graph)
    assert node == chain.loop.id and "needs negative embeddings" in msg and "negative_prompt_embeds" in msg, msg


def test_cfg_without_a_negative_prompt_on_sd3_is_named_not_run_twice(server, info):
    # diffusers' SD3 encodes no negative without a negative prompt, then CFG silently runs the positive twice.
    chain = SD3Chain(info, negative_prompt="")
    node, msg, _ = run_error(server, chain.graph)
    assert node == chain.loop.id and "needs negative embeddings" in msg and "negative prompt" in msg, msg


def test_a_step_without_its_pipeline_says_what_to_connect(server, info):
    chain = SDXLChain(info)
    chain.loop.unset("pipeline")
    node, msg, _ = run_error(server, chain.graph)
    assert node == chain.loop.id and "connect a Load Diffusers Pipeline node to 'pipeline'" in msg, msg


def test_a_node_of_the_wrong_type_in_the_pipeline_socket_is_a_validation_error(server, info):
    chain = SDXLChain(info)
    guider = chain.graph.node("ModularGuider_ClassifierFreeGuidance", **widgets(info, "ModularGuider_ClassifierFreeGuidance"))
    chain.loop.set(pipeline=guider)  # a DIFFUSERS_GUIDER where the DIFFUSERS_PIPELINE goes
    with pytest.raises(ValidationError) as err:
        server.queue(chain.graph)
    errors = err.value.body["node_errors"][chain.loop.id]["errors"]
    assert any(e["extra_info"].get("input_name") == "pipeline" for e in errors), errors


def test_interrupt_stops_a_diffusers_loop_within_one_step(server, info):
    seconds = 0.3
    sdxl = "ModularBlock_StableDiffusionXL"
    blocks = [(f"{sdxl}LoopBeforeDenoiser", {}), (f"{sdxl}LoopDenoiser", {}), (f"{sdxl}LoopAfterDenoiser", {}),
              ("ModularBlock_SleepBlock", {"seconds": seconds})]
    chain = SDXLChain(info, "ModularLoop_StableDiffusionXLDenoiseLoopWrapper", blocks)
    chain.steps["SetTimestepsStep"].set(num_inference_steps=50)
    run = interrupt_at_first_step(server, chain.graph, chain.loop)
    assert run.result.status == "interrupted" and len(run.steps_after) <= 1, run.steps_after
    REPORT.append(f"diffusers loop interrupt: stopped {run.seconds:.2f} s after POST /interrupt (one step >= {seconds} s)")


def test_a_latent_goes_to_comfyui_and_back(server, info):
    # diffusers' loop -> State To LATENT (a ComfyUI LATENT: the VAE latent) -> LATENT To State -> its decode step
    chain = SDXLChain(info).against_diffusers()
    g = chain.graph
    latent = g.node("ModularStateToLatent", state=chain.loop, pipeline=chain.pipeline)
    back = g.node("ModularLatentToState", latent=latent, pipeline=chain.pipeline, state=chain.loop)
    decoded = chain.step("DecodeStep", state=back, output_type="pt")
    again = g.node("ModularStateToImage", state=decoded, key="images")
    round_trip = g.node("PreviewAny", source=g.node("MLTest_ImageDiff", a=chain.image, b=again))
    stats = g.node("PreviewAny", source=g.node("MLTest_MaxAbsDiff", a=latent, b=latent))
    result, run = chain.result(server)
    assert result["max_abs_diff"] <= TOL
    assert json.loads(run.text(round_trip))["max_abs_diff"] <= 1e-5
    # the tiny VAE's scaling factor is diffusers' default 0.18215: the LATENT is the loop's latents / 0.18215
    assert json.loads(run.text(stats))["shape"] == [1, 4, SIZE // 2, SIZE // 2]


# --- video: Wan 2.1 text-to-video, frames out ---------------------------------------------------

from comfy_host import TINY_WAN  # noqa: E402

WAN_FRAMES, WAN_HEIGHT, WAN_WIDTH, WAN_STEPS = 5, 32, 48, 2
WAN_FPS = 16.0  # diffusers declares no Wan frame rate; its pipeline_wan.py example exports at fps=16
WAN_CALL = {"num_frames": WAN_FRAMES}


def wan_text2video_chain() -> list[str]:
    """The exact chain diffusers' `WanBlocks` runs (the blocks `WanModularPipeline` loads for Wan 2.1 text-to-video;
    the family's Auto blocks with a `_workflow_map` are image-to-video only): its leaf steps and its loop, in order."""
    from diffusers.modular_pipelines import LoopSequentialPipelineBlocks
    from diffusers.modular_pipelines.wan.modular_blocks_wan import WanBlocks

    def leaves(block):
        if isinstance(block, LoopSequentialPipelineBlocks) or not getattr(block, "sub_blocks", None):
            return [type(block).__name__]
        return [name for sub in block.sub_blocks.values() for name in leaves(sub)]

    return leaves(WanBlocks())


class WanChain:
    """Load Diffusers Pipeline (tiny Wan 2.1) -> every step and the loop of `wan_text2video_chain()`, as nodes, the
    call's values given once (prompt on the text encoder, steps on set timesteps, size / frames / seed on prepare
    latents) -> one decoder step per `output_types` -> State To Image each."""

    INPUTS = {"WanTextEncoderStep": {"prompt": PROMPT}, "WanSetTimestepsStep": {"num_inference_steps": WAN_STEPS},
              "WanPrepareLatentsStep": {"height": WAN_HEIGHT, "width": WAN_WIDTH, "num_frames": WAN_FRAMES,
                                        "generator": SEED}}

    def __init__(self, info, output_types=("pt",), frames=WAN_FRAMES):
        g = self.graph = Graph()
        self.info = info
        self.pipeline = g.node("ModularDiffusersLoader", folder=TINY_WAN, dtype="float32")
        *before, decoder = wan_text2video_chain()
        state, self.nodes = None, {}
        for name in before:
            cls = f"ModularLoop_{name}" if name == "WanDenoiseStep" else f"ModularStep_{name}"
            assert cls in info, cls  # every block of diffusers' chain is a node
            inputs = dict(self.INPUTS.get(name, {}))
            if name == "WanPrepareLatentsStep":
                inputs["num_frames"] = frames
            state = self.nodes[name] = g.node(cls, **widgets(info, cls, **inputs), pipeline=self.pipeline,
                                              **({"state": state} if state else {}))
        self.loop = state
        self.decoded, self.frames = {}, {}
        for output_type in output_types:
            cls = f"ModularStep_{decoder}"
            self.decoded[output_type] = g.node(cls, **widgets(info, cls, output_type=output_type), state=self.loop,
                                               pipeline=self.pipeline)
            self.frames[output_type] = g.node("ModularStateToImage", state=self.decoded[output_type], key="videos")

    def reference(self):
        """diffusers' own run of the same folder: ModularPipeline.from_pretrained + pipe(...), its videos' frames."""
        return self.graph.node("MLTest_DiffusersReference", folder=TINY_WAN, prompt=PROMPT, steps=WAN_STEPS, seed=SEED,
                               height=WAN_HEIGHT, width=WAN_WIDTH, guider="", guider_params="{}", scheduler="",
                               negative_prompt="", call=json.dumps(WAN_CALL), output="videos")


def test_wan_text_to_video_chain_equals_diffusers_own_pipeline_for_every_output_type(server, info):
    # diffusers' decoder writes `videos` as a [B, F, C, H, W] tensor (pt), a [B, F, H, W, C] array (np) or lists of
    # PIL frames (pil); State To Image gives ComfyUI's video frames for each: an IMAGE batch [F, H, W, C] in 0..1.
    assert wan_text2video_chain() == ["WanTextEncoderStep", "WanTextInputStep", "WanSetTimestepsStep",
                                      "WanPrepareLatentsStep", "WanDenoiseStep", "WanVaeDecoderStep"]
    chain = WanChain(info, output_types=("pt", "np", "pil"))
    g = chain.graph
    ref = chain.reference()
    diffs = {t: g.node("PreviewAny", source=g.node("MLTest_ImageDiff", a=frames, b=ref))
             for t, frames in chain.frames.items()}
    fps = {t: g.node("PreviewAny", source=frames.out(1)) for t, frames in chain.frames.items()}
    g.node("PreviewImage", images=chain.frames["pt"])
    run = server.run(g, timeout=600)
    assert run.status == "success", run.error
    for output_type, diff in diffs.items():
        result = json.loads(run.text(diff))
        assert result["finite"] and result["std_a"] > 1e-3, (output_type, result)
        assert result["shape"] == [WAN_FRAMES, WAN_HEIGHT, WAN_WIDTH, 3], (output_type, result)
        tol = TOL if output_type != "pil" else 0.5 / 255 + TOL  # PIL frames are 8-bit
        assert result["max_abs_diff"] <= tol, (output_type, result)
        assert float(run.text(fps[output_type])) == WAN_FPS, run.text(fps[output_type])
    node = info["ModularStateToImage"]
    assert node["output"] == ["IMAGE", "FLOAT"] and node["output_name"] == ["image", "fps"]  # IMAGE first: old links


def test_wan_frames_go_into_comfyuis_video_nodes(server, info):
    # State To Image -> Save Animated WEBP (both hosts), and Create Video -> Save Video where the host has them,
    # each at the frame rate it gives; the files hold every frame.
    from PIL import Image

    chain = WanChain(info)
    g, frames = chain.graph, chain.frames["pt"]
    webp = g.node("SaveAnimatedWEBP", **widgets(info, "SaveAnimatedWEBP", filename_prefix="modular_loops_wan",
                                                images=frames, fps=frames.out(1)))
    video = None
    if "CreateVideo" in info and "SaveVideo" in info:
        created = g.node("CreateVideo", **widgets(info, "CreateVideo", images=frames, fps=frames.out(1)))
        fmt = info["SaveVideo"]["input"]["required"]["format"]
        container = {"format": "mp4", "format.codec": "auto"} if fmt[0] == "COMFY_DYNAMICCOMBO_V3" else \
            {"format": "mp4", "codec": "auto"}
        video = g.node("SaveVideo", video=created, filename_prefix="video/modular_loops_wan", **container)
    run = server.run(g, timeout=600)
    assert run.status == "success", run.error
    # the file it wrote (a queued node that fails validation is dropped from the run, the others run: so look)
    webps = sorted((server.base / "output").glob("modular_loops_wan_*.webp"))
    assert webps, "Save Animated WEBP wrote no file"
    saved = webps[-1]
    with Image.open(saved) as im:
        assert im.n_frames == WAN_FRAMES and im.size == (WAN_WIDTH, WAN_HEIGHT), (im.n_frames, im.size)
        im.load()  # the first frame: its duration is the frame rate's
        assert im.info["duration"] == int(1000 / WAN_FPS), im.info
    if video is not None:
        import av

        (path,) = sorted((server.base / "output" / "video").glob("modular_loops_wan_*.mp4"))
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert sum(1 for _ in container.decode(stream)) == WAN_FRAMES
            assert float(stream.average_rate) == WAN_FPS, stream.average_rate
        REPORT.append(f"Wan frames -> Save Animated WEBP and Create Video -> Save Video ({path.name})")
    else:
        REPORT.append("Wan frames -> Save Animated WEBP (this host has no Create Video / Save Video)")


def test_a_wan_video_of_zero_frames_and_a_value_that_is_no_video_are_named(server, info):
    # A state whose `videos` holds no frame (from a state file) and one whose value is latents, not frames: State To
    # Image names itself, the value and its shape; the server goes on serving.
    import torch

    from modular import compat
    from modular.state_files import save_state

    state = compat.PipelineState()
    state.set("videos", torch.zeros(1, 0, 3, WAN_HEIGHT, WAN_WIDTH))
    state.set("latents", torch.zeros(1, 16, 2, WAN_HEIGHT // 8, WAN_WIDTH // 8))
    save_state(state, server.base / "input" / "wan_no_frames.safetensors")
    for key, words in (("videos", "a video of 0 frames"), ("latents", "neither images nor video frames")):
        g = Graph()
        image = g.node("ModularStateToImage", state=g.node("ModularStateLoad", state_file="wan_no_frames.safetensors"),
                       key=key)
        g.node("PreviewImage", images=image)
        node, msg, _ = run_error(server, g)
        assert node == image.id and msg.startswith(f"State To Image: '{key}' holds a Tensor of shape") and words in msg, msg
    # frames asked of the chain are counts: a negative count is refused by ComfyUI's validation, before anything runs
    frames = info["ModularStep_WanPrepareLatentsStep"]["input"]["required"]["num_frames"]
    assert frames[0] == "INT" and frames[1]["min"] >= 0, frames
    chain = WanChain(info, frames=-1)
    chain.graph.node("PreviewImage", images=chain.frames["pt"])
    with pytest.raises(ValidationError) as err:
        server.queue(chain.graph)
    assert chain.nodes["WanPrepareLatentsStep"].id in err.value.body["node_errors"], err.value.body
    ok = WanChain(info)
    ok.graph.node("PreviewImage", images=ok.frames["pt"])
    assert server.run(ok.graph, timeout=600).status == "success"
