"""Host tier, denoising: loops built from block nodes on ComfyUI's own models, against its built-in
samplers. Models are tiny and random: an SD1.5-architecture UNet built in-process by a test node and
an SD3-architecture checkpoint loaded by CheckpointLoaderSimple. Skipped, loudly, without a ComfyUI."""

import json

import pytest

from comfy_host import TINY_SD3, Graph, ValidationError, interrupt_at_first_step, require_host
from conftest import REPORT

require_host()

LOOP_K, LOOP_S = "ModularKSampler_DenoiseLoop", "ModularSampler_DenoiseLoop"
PREDICT = ("ModularBlock_PredictDenoised", {})
STEPS = {
    "euler": ("ModularBlock_EulerStep", {}),
    "euler_ancestral": ("ModularBlock_EulerAncestralStep", {"eta": 1.0, "s_noise": 1.0}),
    "dpmpp_2m": ("ModularBlock_DPMPP2MStep", {}),
}
TOL = 1e-5


def diffusers_step(scheduler):
    return ("ModularBlock_DiffusersSchedulerStep", {"scheduler": scheduler, "scheduler_config": ""})


DIFFUSERS_STEPS = {  # the diffusers scheduler step: a scheduler with no history, a multistep one of each kind, a stochastic one
    "diffusers_euler": diffusers_step("EulerDiscreteScheduler"),
    "diffusers_unipc": diffusers_step("UniPCMultistepScheduler"),
    "diffusers_dpm": diffusers_step("DPMSolverMultistepScheduler"),
    "diffusers_euler_ancestral": diffusers_step("EulerAncestralDiscreteScheduler"),
}
RESUMED_STEPS = {**STEPS, **DIFFUSERS_STEPS}


class DenoiseGraph:
    """A model, two prompts and an empty latent, built with handles; `common` holds KSampler's inputs on them.
    `loop(...)` attaches block nodes to a loop node, `compare(a, b)` shows max |a - b| in `self.diff`."""

    def __init__(self, model="sd15", steps=4, seed=7, cfg=3.5, scheduler="normal", denoise=1.0):
        g = self.graph = Graph()
        if model == "sd15":
            self.model = g.node("MLTest_TinySD15", seed=0)
            width, pooled, empty = 32, 0, "EmptyLatentImage"
        else:  # the checkpoint through ComfyUI's loader; pos_embed set after it (ComfyUI 0.33.0 leaves it unloaded on CPU)
            checkpoint = g.node("CheckpointLoaderSimple", ckpt_name=TINY_SD3)
            self.model = g.node("MLTest_TinySD3PosEmbed", model=checkpoint.out(0))
            width, pooled, empty = 64, 64, "EmptySD3LatentImage"
        self.positive = g.node("MLTest_Conditioning", seed=1, tokens=8, width=width, pooled=pooled)
        self.negative = g.node("MLTest_Conditioning", seed=2, tokens=8, width=width, pooled=pooled)
        self.latent = g.node(empty, width=64, height=64, batch_size=1)
        self.common = {"model": self.model.out(0), "seed": seed, "steps": steps, "cfg": cfg, "scheduler": scheduler,
                       "positive": self.positive.out(0), "negative": self.negative.out(0),
                       "latent_image": self.latent.out(0), "denoise": denoise}
        self.loop_node, self.blocks, self.diff = None, [], None

    def loop(self, loop_class, loop_inputs, blocks):
        """Block nodes attached in order to a new loop node (`self.loop_node`, `self.blocks`)."""
        self.blocks = [self.graph.node(cls, **inputs) for cls, inputs in blocks]
        self.loop_node = self.graph.node(loop_class, **loop_inputs,
                                         **{f"block_{n}": b for n, b in enumerate(self.blocks, start=1)})
        return self.loop_node

    def compare(self, a, b):
        """max |a - b| of two LATENT outputs, shown by `self.diff` (a Preview Any)."""
        if self.diff is not None:
            self.graph.remove(self.diff, self.difference)
        self.difference = self.graph.node("MLTest_MaxAbsDiff", a=a, b=b)
        self.diff = self.graph.node("PreviewAny", source=self.difference)
        return self.diff

    def show(self, node):
        """Only `node`'s output as the graph's result (instead of a comparison)."""
        if self.diff is not None:
            self.graph.remove(self.diff, self.difference)
        self.diff = self.graph.node("PreviewAny", source=node)
        return self.diff

    def img2img_start(self):
        """A non-empty starting latent: four built-in euler steps (seed 99) from the empty latent."""
        start = self.graph.node("KSampler", **{**self.common, "seed": 99, "steps": 4, "denoise": 1.0},
                                sampler_name="euler")
        return self.graph.node("LatentMultiply", samples=start, multiplier=1.0)


def ksampler_vs_blocks(model, sampler, blocks, denoise=1.0, img2img=False, steps=4):
    """The built-in KSampler (`builtin`) against the loop's KSampler node with `blocks`, compared."""
    d = DenoiseGraph(model, steps=steps, denoise=denoise)
    if img2img:
        d.start = d.img2img_start()
        d.common["latent_image"] = d.start.out(0)
    d.builtin = d.graph.node("KSampler", **d.common, sampler_name=sampler)
    d.loop(LOOP_K, d.common, blocks)
    d.compare(d.builtin, d.loop_node)
    return d


def measured(server, d):
    result = server.run(d.graph, timeout=300)
    assert result.status == "success", result.error
    return json.loads(result.text(d.diff)), result


def assert_still_serving(server):
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=2)
    assert measured(server, d)[0]["max_abs_diff"] <= TOL


# --- nodes ------------------------------------------------------------------------------------


def test_denoise_loop_nodes_and_block_inputs(server):
    info = server.object_info()
    assert LOOP_K in info and LOOP_S in info
    assert "ModularLoop_DenoiseLoop" not in info  # a denoise loop runs inside a sampler, not as a state loop
    assert info[LOOP_S]["output"] == ["SAMPLER"]
    assert info[LOOP_K]["output"] == ["LATENT", "LATENT", "PIPELINE_STATE"]
    required = info[LOOP_K]["input"]["required"]
    for name in ("model", "seed", "steps", "cfg", "scheduler", "positive", "negative", "latent_image", "denoise"):
        assert name in required, name
    # The values the sampler provides (latents, sigmas, the model, its seed) are not inputs of any block node.
    assert info["ModularBlock_PredictDenoised"]["input"].get("required", {}) == {}
    assert set(info["ModularBlock_EulerAncestralStep"]["input"]["required"]) == {"eta", "s_noise"}
    diffusers_inputs = info["ModularBlock_DiffusersSchedulerStep"]["input"]
    choices = diffusers_inputs["required"]["scheduler"][0]
    assert "EulerDiscreteScheduler" in choices and "DPMSolverMultistepScheduler" in choices
    # What it keeps in the state from step to step (its scheduler and generator, as plain values) has no input either.
    shown = set(diffusers_inputs["required"]) | set(diffusers_inputs.get("optional", {}))
    assert {"scheduler", "scheduler_config"} <= shown
    assert not [n for n in shown if n.startswith(("scheduler_state", "noise_generator"))], shown


# --- parity with the built-in samplers ---------------------------------------------------------


@pytest.mark.parametrize("model", ["sd15", "sd3"])
@pytest.mark.parametrize("sampler", list(STEPS))
@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_blocks_equal_builtin_ksampler(server, model, sampler, denoise):
    d = ksampler_vs_blocks(model, sampler, [PREDICT, STEPS[sampler]], denoise=denoise, img2img=denoise < 1)
    result, _ = measured(server, d)
    assert result["finite"] and result["std_a"] > 0.01, result  # a real, moving sample
    assert result["max_abs_diff"] <= TOL, result


def test_the_comparison_can_fail(server):
    # The same loop against a different built-in sampler must differ: the parity tests can fail.
    d = ksampler_vs_blocks("sd15", "euler_ancestral", [PREDICT, STEPS["euler"]])
    assert measured(server, d)[0]["max_abs_diff"] > 1e-2


def masked(d, latent):
    """`latent` with an inpaint mask (SetLatentNoiseMask): its left half is generated, the right half kept."""
    g = d.graph
    left_half = g.node("MaskComposite", destination=g.node("SolidMask", value=0.0, width=64, height=64),
                       source=g.node("SolidMask", value=1.0, width=32, height=64), x=0, y=0, operation="add")
    return g.node("SetLatentNoiseMask", samples=latent, mask=left_half)


def custom_advanced(model, sampler, step_blocks, denoise=1.0, mask=False, steps=4, scheduler="normal"):
    """SamplerCustomAdvanced with the built-in `sampler` (`builtin`) and with the loop's SAMPLER (`ours`)."""
    d = DenoiseGraph(model, steps=steps, denoise=denoise)
    g, latent = d.graph, d.latent
    if denoise < 1 or mask:
        latent = d.start = d.img2img_start()
    if mask:
        latent = masked(d, latent)
    noise = g.node("RandomNoise", noise_seed=11)
    guider = g.node("CFGGuider", model=d.model, positive=d.positive, negative=d.negative, cfg=3.0)
    d.sigmas = g.node("BasicScheduler", model=d.model, scheduler=scheduler, steps=steps, denoise=denoise)
    d.loop(LOOP_S, {}, [PREDICT, *step_blocks])
    d.builtin = g.node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=g.node("KSamplerSelect", sampler_name=sampler),
                       sigmas=d.sigmas, latent_image=latent)
    d.ours = g.node("SamplerCustomAdvanced", noise=noise, guider=guider, sampler=d.loop_node, sigmas=d.sigmas,
                    latent_image=latent)
    d.compare(d.builtin, d.ours)
    return d


@pytest.mark.parametrize("model", ["sd15", "sd3"])
@pytest.mark.parametrize("sampler", list(STEPS))
def test_sampler_socket_equals_builtin_in_sampler_custom_advanced(server, model, sampler):
    result, run = measured(server, custom_advanced(model, sampler, [STEPS[sampler]], denoise=0.6))
    assert result["finite"] and result["max_abs_diff"] <= TOL, result


@pytest.mark.parametrize("sampler", list(STEPS))
def test_inpaint_mask_parity(server, sampler):
    result, _ = measured(server, custom_advanced("sd15", sampler, [STEPS[sampler]], mask=True))
    assert result["finite"] and result["max_abs_diff"] <= TOL, result


# Bounds on max |diff| relative to max |latent|. Measured on ComfyUI 0.3.64 / diffusers 0.42.1, fp32
# CPU, 6 steps: EulerDiscrete 0 (the same operations); DPMSolverMultistep vs dpmpp_2m 1.2e-4 absolute
# on latents up to ~300 (4e-7 relative: the same solver, its own float order).
DIFFUSERS_CASES = [
    ("sd15", "euler", "EulerDiscreteScheduler", 0.0),
    ("sd15", "dpmpp_2m", "DPMSolverMultistepScheduler", 1e-5),
    ("sd3", "euler", "FlowMatchEulerDiscreteScheduler", 1e-5),
    ("sd3", "euler", "EulerDiscreteScheduler", None),  # refused: an eps-model scheduler on a flow model
]


@pytest.mark.parametrize("model,sampler,scheduler,bound", DIFFUSERS_CASES)
def test_diffusers_scheduler_step_vs_builtin(server, model, sampler, scheduler, bound):
    step = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": scheduler, "scheduler_config": ""})
    d = custom_advanced(model, sampler, [step], steps=6)
    if bound is None:
        result = server.run(d.graph)
        assert result.status == "error"
        assert "flow model" in result.error["exception_message"] and "FlowMatchEulerDiscreteScheduler" in result.error["exception_message"]
        return
    result, _ = measured(server, d)
    relative = result["max_abs_diff"] / result["max_abs_a"]
    REPORT.append(f"diffusers {scheduler} step vs built-in {sampler} ({model}, 6 steps): max |diff| = "
                  f"{result['max_abs_diff']:.3g} (relative to max |latent| {relative:.2g})")
    assert result["finite"] and relative <= bound, result


# diffusers' UniPC (order 2, bh2) vs ComfyUI's uni_pc_bh2, 4 steps on the tiny SD1.5, max |diff| relative to max
# |latent|: 6.2e-4 (two implementations of one solver, not bit-equal); the same step vs euler: 3.1e-3 (ComfyUI 0.33.0).
UNIPC_BOUND = 1e-3


# --- blocks change the loop -------------------------------------------------------------------


def test_guidance_block_and_reordering(server):
    threshold = ("ModularBlock_DynamicThreshold", {"percentile": 0.9, "threshold": 0.5})
    changed = measured(server, ksampler_vs_blocks("sd15", "euler", [PREDICT, threshold, STEPS["euler"]]))[0]
    assert changed["finite"] and changed["max_abs_diff"] > 1e-2, changed
    # Mixed: ComfyUI's prediction with a diffusers scheduler, then Euler ancestral swapped in: same loop node.
    # diffusers' UniPC (order 2, its bh2 default) steps as ComfyUI's own uni_pc_bh2 does, and not as Euler does.
    mixed = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": "UniPCMultistepScheduler", "scheduler_config": '{"solver_order": 2}'})
    as_unipc = measured(server, ksampler_vs_blocks("sd15", "uni_pc_bh2", [PREDICT, mixed]))[0]
    as_euler = measured(server, ksampler_vs_blocks("sd15", "euler", [PREDICT, mixed]))[0]
    unipc, euler = (r["max_abs_diff"] / r["max_abs_a"] for r in (as_unipc, as_euler))
    REPORT.append(f"diffusers UniPCMultistepScheduler step vs built-in uni_pc_bh2 (sd15): max |diff| relative to max "
                  f"|latent| {unipc:.2g}; vs euler {euler:.2g}")
    assert as_unipc["finite"] and unipc <= UNIPC_BOUND and euler > 3 * unipc, (as_unipc, as_euler)
    # A step block before the prediction block reads x0 nobody wrote yet.
    d = ksampler_vs_blocks("sd15", "euler", [STEPS["euler"], PREDICT])
    result = server.run(d.graph)
    assert result.status == "error"
    msg = result.error["exception_message"]
    assert f"EulerStep, node {d.blocks[0]}) reads 'denoised'" in msg and "PredictDenoised" in msg, msg
    assert [m["data"]["node"] for m in result.messages if m["type"] == "modular_loops.failed_block"] == [d.blocks[0].id]


@pytest.mark.parametrize("value,expect", [(1.0, "same as euler"), (0.0, "the start latent")])
def test_latent_blend_block(server, value, expect):
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"], ("ModularBlock_LatentBlend", {})], denoise=0.6,
                           img2img=True)
    d.blocks[2].set(mask=d.graph.node("SolidMask", value=value, width=64, height=64))
    if value == 0.0:  # all kept: the loop returns its starting latent
        d.compare(d.start, d.loop_node)
    result = measured(server, d)[0]
    assert result["max_abs_diff"] <= TOL, (expect, result)


# --- what a user sees while it runs -----------------------------------------------------------


def test_progress_and_x0_previews_per_step(server):
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=5)
    result = measured(server, d)[1]
    assert [(v, m) for node, v, m in result.progress if node == d.loop_node.id] == [(k, 5) for k in range(1, 6)]
    assert result.previews >= 10  # KSampler's five and the loop's five (--preview-method latent2rgb)


def test_the_step_callback_gets_what_comfyuis_samplers_give_it(server):
    # ComfyUI's samplers call back for step i with the x it starts from, sigma_i and that step's x0: so must the loop.
    d = custom_advanced("sd15", "euler", [STEPS["euler"]], steps=3)
    recorded = {}
    for name, sampler_node in (("builtin", d.builtin), ("ours", d.ours)):
        wrapped = d.graph.node("MLTest_RecordCallback", sampler=sampler_node.inputs["sampler"], key=name)
        sampler_node.set(sampler=wrapped)
        recorded[name] = d.graph.node("PreviewAny", source=d.graph.node("MLTest_RecordedCalls", latent=sampler_node, key=name))
    result, run = measured(server, d)
    assert result["max_abs_diff"] <= TOL
    builtin, ours = (json.loads(run.text(recorded[k])) for k in ("builtin", "ours"))
    assert [c["i"] for c in builtin] == [0, 1, 2]
    for a, b in zip(builtin, ours, strict=True):
        assert a["i"] == b["i"] and a["sigma"] == pytest.approx(b["sigma"])
        assert a["x"] == pytest.approx(b["x"], rel=1e-6, abs=1e-4) and a["denoised"] == pytest.approx(b["denoised"], rel=1e-6, abs=1e-4)


def test_interrupt_stops_the_loop_within_one_step(server):
    seconds = 0.3
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"], ("ModularBlock_SleepBlock", {"seconds": seconds})],
                           steps=100)
    d.graph.remove(d.builtin)
    d.show(d.loop_node)
    run = interrupt_at_first_step(server, d.graph, d.loop_node, timeout=300)
    assert run.result.status == "interrupted" and len(run.steps_after) <= 1, run.steps_after
    REPORT.append(f"denoise loop interrupt: stopped {run.seconds:.2f} s after POST /interrupt (one step >= {seconds} s)")
    assert_still_serving(server)


# --- bad input ----------------------------------------------------------------------------------


def run_error(server, d):
    result = server.run(d.graph, timeout=300)
    assert result.status == "error", result.outputs
    return result.error["node_id"], result.error["exception_message"]


def test_latent_of_another_model(server):
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]])
    g = d.graph
    checkpoint = g.node("CheckpointLoaderSimple", ckpt_name=TINY_SD3)
    model = g.node("MLTest_TinySD3PosEmbed", model=checkpoint.out(0))
    conds = [g.node("MLTest_Conditioning", seed=k, tokens=8, width=64, pooled=64) for k in (1, 2)]
    sd3_latent = g.node("KSampler", model=model, seed=7, steps=4, cfg=3.5, scheduler="normal", positive=conds[0],
                        negative=conds[1], latent_image=g.node("EmptySD3LatentImage", width=64, height=64, batch_size=1),
                        denoise=1.0, sampler_name="euler")
    d.loop_node.set(latent_image=sd3_latent)
    g.remove(d.builtin)
    d.show(d.loop_node)
    node, msg = run_error(server, d)
    assert node == d.loop_node.id and "16 channels" in msg and "works on 4" in msg, msg
    assert_still_serving(server)


def test_sigmas_not_decreasing_and_zero_steps(server):
    d = custom_advanced("sd15", "euler", [STEPS["euler"]])
    d.graph.remove(d.builtin)
    d.show(d.ours)
    flipped = d.graph.node("FlipSigmas", sigmas=d.sigmas)
    d.ours.set(sigmas=flipped)
    node, msg = run_error(server, d)
    assert node == d.ours.id and "strictly decreasing" in msg and f"DenoiseLoop (node {d.loop_node})" in msg, msg
    split = d.graph.node("SplitSigmas", sigmas=d.sigmas, step=4)
    d.ours.set(sigmas=split.out(1))  # the last sigma alone: no step
    node, msg = run_error(server, d)
    assert "zero steps" in msg, msg
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], denoise=0.0)
    node, msg = run_error(server, d)
    assert node == d.loop_node.id and "zero steps" in msg, msg
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=0)
    with pytest.raises(ValidationError) as info:
        server.queue(d.graph)
    assert "steps" in json.dumps(info.value.body["node_errors"][d.loop_node.id])
    assert_still_serving(server)


def test_nan_mid_loop_names_block_and_step(server):
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=6)
    d.loop_node.set(model=d.graph.node("MLTest_NaNBelow", model=d.model, sigma=2.0))
    node, msg = run_error(server, d)
    assert node == d.loop_node.id
    for part in (f"DenoiseLoop (node {d.loop_node})", f"'block_1' (PredictDenoised, node {d.blocks[0]})", "failed at step",
                 "'denoised' holds NaN"):
        assert part in msg, (part, msg)
    assert "failed at step 0" not in msg  # it is mid-loop
    assert_still_serving(server)


def test_bad_scheduler_names_and_config(server):
    bad = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": "NopeScheduler", "scheduler_config": ""})
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, bad])
    with pytest.raises(ValidationError) as info:
        server.queue(d.graph)
    assert "NopeScheduler" in json.dumps(info.value.body["node_errors"][d.blocks[1].id])
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]])
    d.loop_node.set(scheduler="nope")
    with pytest.raises(ValidationError) as info:
        server.queue(d.graph)
    assert "scheduler" in json.dumps(info.value.body["node_errors"][d.loop_node.id])
    config = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": "EulerDiscreteScheduler", "scheduler_config": '{"nope": 1}'})
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, config])
    node, msg = run_error(server, d)
    assert f"DiffusersSchedulerStep, node {d.blocks[1]}) failed at step 0" in msg and "no config option(s) nope" in msg, msg
    assert_still_serving(server)


def test_blocks_that_are_not_a_denoise_loop(server):
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT])
    node, msg = run_error(server, d)
    assert node == d.loop_node.id and "no step block" in msg, msg
    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]])
    d.loop_node.unset("block_1", "block_2")
    with pytest.raises(ValidationError) as info:
        server.queue(d.graph)
    details = [e["details"] for e in info.value.body["node_errors"][d.loop_node.id]["errors"]]
    # once, and ComfyUI prefixes the input it filed it under
    assert len(details) == 1 and details[0].endswith(
        "DenoiseLoop: no loop blocks attached; connect a prediction block and a step block"), details
    assert_still_serving(server)


# --- stop, save, resume ---------------------------------------------------------------------------


def stop_save_and_resume(server, step_block, name, steps=6, k=3, inpaint=False):
    """KSampler node 0..k (end_step k), Save State of its state output; then Load State + start_step k against the
    run 0..N -> (the comparison, the second graph, the resumed node)."""
    def graph():
        d = DenoiseGraph("sd15", steps=steps)
        if inpaint:  # an img2img start with SetLatentNoiseMask: ComfyUI's inpaint blend at every model call
            d.common["latent_image"] = masked(d, d.img2img_start())
        return d, d.graph, lambda: {f"block_{n}": d.graph.node(cls, **inputs) for n, (cls, inputs) in enumerate([PREDICT, step_block], 1)}

    d, g, attach = graph()
    first = g.node(LOOP_K, **d.common, end_step=k, **attach())
    saved = g.node("ModularStateSave", state=first.out(2), filename_prefix=f"states/resume_{name}", skip_unsupported=False)
    run = server.run(g, timeout=300)
    assert run.status == "success", run.error
    (file,) = run.outputs[saved.id]["text"]

    d, g, attach = graph()
    whole = g.node(LOOP_K, **d.common, **attach())
    resumed = g.node(LOOP_K, **d.common, start_step=k, state=g.node("ModularStateLoad", state_file=file), **attach())
    d.compare(whole, resumed)
    result, _ = measured(server, d)
    return result, d, resumed


@pytest.mark.parametrize("sampler", list(STEPS) + ["diffusers_euler", "diffusers_euler_ancestral"])
def test_stop_save_load_and_resume_equals_one_run(server, sampler):
    # 0..k, Save State, Load State, k..N == 0..N exactly: the latents, DPM++ 2M's history, the noise stream's place, a
    # diffusers scheduler and its generator (as plain values: Save State needs no skip_unsupported).
    k = 3
    result, d, resumed = stop_save_and_resume(server, RESUMED_STEPS[sampler], sampler, k=k)
    assert result["finite"] and result["max_abs_diff"] == 0, result

    resumed.set(start_step=k - 1)  # a state resumed from another step than it stopped at
    node, msg = run_error(server, d)
    assert node == resumed.id and f"the state stopped at step {k}; set start_step to {k}" in msg, msg


@pytest.mark.parametrize("sampler", list(STEPS))
def test_an_inpaint_stopped_saved_and_resumed_equals_one_run(server, sampler):
    # SetLatentNoiseMask: ComfyUI blends the kept region with the run's noise at every model call; the resumed run
    # (SamplerCustom without add_noise) gets that noise back from the state, so 0..k + k..N == 0..N exactly.
    result, _, _ = stop_save_and_resume(server, STEPS[sampler], f"inpaint_{sampler}", inpaint=True)
    assert result["finite"] and result["max_abs_diff"] == 0, result


def autosaved_files(server, prefix):
    """The state files a run's save_every wrote under output/states/ with `prefix`, newest last, as Load State
    names them."""
    folder = server.base / "output" / "states"
    found = sorted(folder.glob(f"{prefix}_*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
    return [f"states/{p.name} [output]" for p in found], found


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m", *DIFFUSERS_STEPS])
def test_save_every_and_interrupt_leave_a_file_that_resumes_to_the_uninterrupted_result(server, sampler):
    # save_every 3 on 8 steps, Interrupt after step 4: the file holds the last finished step (4 or later: where the
    # Interrupt landed), and Load State + resume from it gives exactly the uninterrupted run.
    from modular.state_files import read_info

    steps, prefix = 8, f"auto_{sampler}"
    blocks = [PREDICT, RESUMED_STEPS[sampler], ("ModularBlock_SleepBlock", {"seconds": 0.15})]
    d = DenoiseGraph("sd15", steps=steps)
    d.loop(LOOP_K, {**d.common, "save_every": 3, "save_prefix": f"states/{prefix}"}, blocks)
    d.show(d.loop_node)
    run = interrupt_at_first_step(server, d.graph, d.loop_node, timeout=300, after_steps=4).result
    assert run.status == "interrupted", run.status
    names, paths = autosaved_files(server, prefix)
    assert len(names) == 1, names  # one file per run, replaced as the run goes on
    stopped = read_info(paths[-1])["step"]
    assert 4 <= stopped < steps, stopped

    d = DenoiseGraph("sd15", steps=steps)
    g = d.graph
    attach = lambda: {f"block_{n}": g.node(cls, **inputs) for n, (cls, inputs) in enumerate(blocks[:2], 1)}  # noqa: E731
    whole = g.node(LOOP_K, **d.common, **attach())
    resumed = g.node(LOOP_K, **d.common, start_step=stopped, state=g.node("ModularStateLoad", state_file=names[-1]),
                     **attach())
    d.compare(whole, resumed)
    result, _ = measured(server, d)
    assert result["finite"] and result["max_abs_diff"] == 0, result
    REPORT.append(f"save_every 3 + Interrupt after step 4 ({sampler}): file at step {stopped}, resumed max |diff| 0")


def test_save_every_writes_every_n_steps_and_a_failed_run_keeps_its_last_finished_step(server):
    # A NaN at a step fails the run there; with save_every the file holds the step before it, named in the log.
    from modular.state_files import read_info

    d = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=6)
    d.loop_node.set(model=d.graph.node("MLTest_NaNBelow", model=d.model, sigma=2.0), save_every=1,
                    save_prefix="states/failed_run")
    node, msg = run_error(server, d)
    failed_at = int(msg.split("failed at step ")[1].split()[0].strip(":,"))
    names, paths = autosaved_files(server, "failed_run")
    assert failed_at > 0 and len(paths) == 1 and read_info(paths[0])["step"] == failed_at, (msg, names)
    assert f"step {failed_at} is saved in {names[0]}" in (server.base / "comfyui.log").read_text()
    d.loop_node.set(save_prefix="../outside")  # a name out of the output folder: refused before the run
    node, msg = run_error(server, d)
    assert node == d.loop_node.id and "save_prefix '../outside'" in msg and "outside the output folder" in msg, msg
    assert_still_serving(server)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m"])
def test_the_sampler_node_resumes_a_state_from_the_rest_of_the_schedule(server, sampler):
    # SamplerCustomAdvanced: the first k sigmas (SplitSigmas' high_sigmas) with save_every on writes the state at
    # step k; the loop's SAMPLER given that state resumes on the low_sigmas, equal to one run over all of them.
    steps, k, prefix = 6, 3, f"split_{sampler}"
    d = custom_advanced("sd15", sampler, [STEPS[sampler]], steps=steps)
    g = d.graph
    split = g.node("SplitSigmas", sigmas=d.sigmas, step=k)
    d.loop_node.set(save_every=100, save_prefix=f"states/{prefix}")
    d.ours.set(sigmas=split.out(0))
    d.show(d.ours)
    result = server.run(g, timeout=300)
    assert result.status == "success", result.error
    names, _ = autosaved_files(server, prefix)

    d = custom_advanced("sd15", sampler, [STEPS[sampler]], steps=steps)  # builtin: the loop over all the sigmas
    g = d.graph
    d.builtin.set(sampler=g.node(LOOP_S, block_1=g.node(PREDICT[0], **PREDICT[1]), block_2=g.node(STEPS[sampler][0], **STEPS[sampler][1])))
    split = g.node("SplitSigmas", sigmas=d.sigmas, step=k)
    d.loop_node.set(state=g.node("ModularStateLoad", state_file=names[-1]))
    d.ours.set(sigmas=split.out(1))
    result, _ = measured(server, d)
    assert result["finite"] and result["max_abs_diff"] == 0, result

    d.ours.set(sigmas=d.sigmas)  # the whole schedule again: not where the state stopped
    node, msg = run_error(server, d)
    assert f"the state stopped at step {k}" in msg and "SplitSigmas at step 3, its low_sigmas" in msg, msg
