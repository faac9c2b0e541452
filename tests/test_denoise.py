"""Host tier, denoising: loops built from block nodes on ComfyUI's own models, against its built-in
samplers. Models are tiny and random: an SD1.5-architecture UNet built in-process by a test node and
an SD3-architecture checkpoint loaded by CheckpointLoaderSimple. Skipped, loudly, without a ComfyUI."""

import json

import pytest

from comfy_host import TINY_SD3, ValidationError, require_host
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


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def base_prompt(model="sd15", steps=4, seed=7, cfg=3.5, scheduler="normal", denoise=1.0):
    """Model (1), prompts (2, 3), empty latent (4); returns (prompt, the KSampler-style inputs)."""
    loaded = {}
    if model == "sd15":
        loader, width, pooled, empty = {"class_type": "MLTest_TinySD15", "inputs": {"seed": 0}}, 32, 0, "EmptyLatentImage"
    else:  # the checkpoint through ComfyUI's loader; pos_embed set after it (ComfyUI 0.33.0 leaves it unloaded on CPU)
        loaded = {"0": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD3}}}
        loader = {"class_type": "MLTest_TinySD3PosEmbed", "inputs": {"model": ["0", 0]}}
        width, pooled, empty = 64, 64, "EmptySD3LatentImage"
    prompt = {
        **loaded,
        "1": loader,
        "2": {"class_type": "MLTest_Conditioning", "inputs": {"seed": 1, "tokens": 8, "width": width, "pooled": pooled}},
        "3": {"class_type": "MLTest_Conditioning", "inputs": {"seed": 2, "tokens": 8, "width": width, "pooled": pooled}},
        "4": {"class_type": empty, "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    common = {"model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg, "scheduler": scheduler,
              "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": denoise}
    return prompt, common


def attach(prompt, loop_id, loop_class, loop_inputs, blocks, first_id=20):
    """Block nodes first_id.. attached in order to a loop node `loop_id`."""
    ids = []
    for k, (cls, inputs) in enumerate(blocks):
        bid = str(first_id + k)
        prompt[bid] = {"class_type": cls, "inputs": dict(inputs)}
        ids.append(bid)
    prompt[loop_id] = {"class_type": loop_class,
                       "inputs": {**loop_inputs, **{f"block_{n}": [b, 0] for n, b in enumerate(ids, start=1)}}}
    return prompt


def compare(prompt, a, b, out="91"):
    prompt["90"] = {"class_type": "MLTest_MaxAbsDiff", "inputs": {"a": [a, 0], "b": [b, 0]}}
    prompt[out] = {"class_type": "PreviewAny", "inputs": {"source": ["90", 0]}}
    return prompt


def measured(server, prompt, out="91"):
    result = server.run(prompt, timeout=300)
    assert result.status == "success", result.error
    return json.loads(result.text(out)), result


def ksampler_vs_blocks(model, sampler, blocks, denoise=1.0, start=None, steps=4):
    prompt, common = base_prompt(model, steps=steps, denoise=denoise)
    if start is not None:
        prompt.update(start)
        common["latent_image"] = ["6", 0]
    prompt["10"] = {"class_type": "KSampler", "inputs": {**common, "sampler_name": sampler}}
    attach(prompt, "30", LOOP_K, common, blocks)
    return compare(prompt, "10", "30")


def img2img_start(model):
    """A non-empty starting latent (6): four built-in euler steps from the empty latent."""
    prompt, common = base_prompt(model, seed=99)
    return {"5": {"class_type": "KSampler", "inputs": {**common, "sampler_name": "euler"}},
            "6": {"class_type": "LatentMultiply", "inputs": {"samples": ["5", 0], "multiplier": 1.0}}}


def assert_still_serving(server):
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=2)
    assert measured(server, prompt)[0]["max_abs_diff"] <= TOL


# --- nodes ------------------------------------------------------------------------------------


def test_denoise_loop_nodes_and_block_inputs(server):
    info = server.object_info()
    assert LOOP_K in info and LOOP_S in info
    assert "ModularLoop_DenoiseLoop" not in info  # a denoise loop runs inside a sampler, not as a state loop
    assert info[LOOP_S]["output"] == ["SAMPLER"]
    assert info[LOOP_K]["output"] == ["LATENT", "LATENT"]
    required = info[LOOP_K]["input"]["required"]
    for name in ("model", "seed", "steps", "cfg", "scheduler", "positive", "negative", "latent_image", "denoise"):
        assert name in required, name
    # The values the sampler provides (latents, sigmas, the model, its seed) are not inputs of any block node.
    assert info["ModularBlock_PredictDenoised"]["input"].get("required", {}) == {}
    assert set(info["ModularBlock_EulerAncestralStep"]["input"]["required"]) == {"eta", "s_noise"}
    choices = info["ModularBlock_DiffusersSchedulerStep"]["input"]["required"]["scheduler"][0]
    assert "EulerDiscreteScheduler" in choices and "DPMSolverMultistepScheduler" in choices


# --- parity with the built-in samplers ---------------------------------------------------------


@pytest.mark.parametrize("model", ["sd15", "sd3"])
@pytest.mark.parametrize("sampler", list(STEPS))
@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_blocks_equal_builtin_ksampler(server, model, sampler, denoise):
    start = img2img_start(model) if denoise < 1 else None
    prompt = ksampler_vs_blocks(model, sampler, [PREDICT, STEPS[sampler]], denoise=denoise, start=start)
    result, _ = measured(server, prompt)
    assert result["finite"] and result["std_a"] > 0.01, result  # a real, moving sample
    assert result["max_abs_diff"] <= TOL, result


def test_the_comparison_can_fail(server):
    # The same loop against a different built-in sampler must differ: the parity tests can fail.
    prompt = ksampler_vs_blocks("sd15", "euler_ancestral", [PREDICT, STEPS["euler"]])
    assert measured(server, prompt)[0]["max_abs_diff"] > 1e-2


def custom_advanced(model, sampler, step_blocks, denoise=1.0, mask=False, steps=4, scheduler="normal"):
    """SamplerCustomAdvanced with the built-in `sampler` (50) and with the loop's SAMPLER (60)."""
    prompt, common = base_prompt(model, steps=steps, denoise=denoise)
    latent = ["4", 0]
    if denoise < 1 or mask:
        prompt.update(img2img_start(model))
        latent = ["6", 0]
    if mask:
        prompt["7"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
        prompt["8"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}}
        prompt["9"] = {"class_type": "MaskComposite", "inputs": {"destination": ["7", 0], "source": ["8", 0],
                                                                 "x": 0, "y": 0, "operation": "add"}}
        prompt["11"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": latent, "mask": ["9", 0]}}
        latent = ["11", 0]
    prompt.update({
        "40": {"class_type": "RandomNoise", "inputs": {"noise_seed": 11}},
        "41": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                     "cfg": 3.0}},
        "42": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": scheduler, "steps": steps,
                                                          "denoise": denoise}},
        "43": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "50": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["40", 0], "guider": ["41", 0], "sampler": ["43", 0],
                                                                 "sigmas": ["42", 0], "latent_image": latent}},
        "60": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["40", 0], "guider": ["41", 0], "sampler": ["30", 0],
                                                                 "sigmas": ["42", 0], "latent_image": latent}},
    })
    attach(prompt, "30", LOOP_S, {}, [PREDICT, *step_blocks])
    return compare(prompt, "50", "60")


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
    prompt = custom_advanced(model, sampler, [step], steps=6)
    if bound is None:
        result = server.run(prompt)
        assert result.status == "error"
        assert "flow model" in result.error["exception_message"] and "FlowMatchEulerDiscreteScheduler" in result.error["exception_message"]
        return
    result, _ = measured(server, prompt)
    relative = result["max_abs_diff"] / result["max_abs_a"]
    REPORT.append(f"diffusers {scheduler} step vs built-in {sampler} ({model}, 6 steps): max |diff| = "
                  f"{result['max_abs_diff']:.3g} (relative to max |latent| {relative:.2g})")
    assert result["finite"] and relative <= bound, result


# --- blocks change the loop -------------------------------------------------------------------


def test_guidance_block_and_reordering(server):
    threshold = ("ModularBlock_DynamicThreshold", {"percentile": 0.9, "threshold": 0.5})
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, threshold, STEPS["euler"]])
    changed = measured(server, prompt)[0]
    assert changed["finite"] and changed["max_abs_diff"] > 1e-2, changed
    # Mixed: ComfyUI's prediction with a diffusers scheduler, then Euler ancestral swapped in: same loop node.
    mixed = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": "UniPCMultistepScheduler", "scheduler_config": '{"solver_order": 2}'})
    assert measured(server, ksampler_vs_blocks("sd15", "euler", [PREDICT, mixed]))[0]["finite"]
    # A step block before the prediction block reads x0 nobody wrote yet.
    result = server.run(ksampler_vs_blocks("sd15", "euler", [STEPS["euler"], PREDICT]))
    assert result.status == "error"
    msg = result.error["exception_message"]
    assert "EulerStep, node 20) reads 'denoised'" in msg and "PredictDenoised" in msg, msg


@pytest.mark.parametrize("value,expect", [(1.0, "same as euler"), (0.0, "the start latent")])
def test_latent_blend_block(server, value, expect):
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"], ("ModularBlock_LatentBlend", {})],
                                denoise=0.6, start=img2img_start("sd15"))
    prompt["80"] = {"class_type": "SolidMask", "inputs": {"value": value, "width": 64, "height": 64}}
    prompt["22"]["inputs"]["mask"] = ["80", 0]
    if value == 0.0:  # all kept: the loop returns its starting latent
        prompt["90"] = {"class_type": "MLTest_MaxAbsDiff", "inputs": {"a": ["6", 0], "b": ["30", 0]}}
    result = measured(server, prompt)[0]
    assert result["max_abs_diff"] <= TOL, (expect, result)


# --- what a user sees while it runs -----------------------------------------------------------


def test_progress_and_x0_previews_per_step(server):
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=5)
    result = measured(server, prompt)[1]
    assert [(v, m) for node, v, m in result.progress if node == "30"] == [(k, 5) for k in range(1, 6)]
    assert result.previews >= 10  # KSampler's five and the loop's five (--preview-method latent2rgb)


def test_interrupt_stops_the_loop_within_one_step(server):
    import time

    seconds = 0.3
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"], ("ModularBlock_SleepBlock", {"seconds": seconds})],
                                steps=100)
    del prompt["10"], prompt["90"], prompt["91"]
    prompt["91"] = {"class_type": "PreviewAny", "inputs": {"source": ["30", 0]}}
    sent = {}

    def on_message(msg, srv):
        if msg["type"] == "progress" and msg["data"]["node"] == "30" and "at" not in sent:
            sent["at"], sent["step"] = time.monotonic(), msg["data"]["value"]
            srv.post("/interrupt")

    result = server.run(prompt, on_message=on_message, timeout=300)
    stopped = time.monotonic() - sent["at"]
    assert result.status == "interrupted"
    assert len([v for node, v, _ in result.progress if node == "30" and v > sent["step"]]) <= 1
    REPORT.append(f"denoise loop interrupt: stopped {stopped:.2f} s after POST /interrupt (one step >= {seconds} s)")
    assert_still_serving(server)


# --- bad input ----------------------------------------------------------------------------------


def run_error(server, prompt):
    result = server.run(prompt, timeout=300)
    assert result.status == "error", result.outputs
    return result.error["node_id"], result.error["exception_message"]


def test_latent_of_another_model(server):
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]])
    sd3, sd3_common = base_prompt("sd3")
    prompt.update({"100": sd3["0"], "101": {**sd3["1"], "inputs": {"model": ["100", 0]}}, "102": sd3["2"],
                   "103": sd3["3"], "104": sd3["4"]})
    prompt["105"] = {"class_type": "KSampler", "inputs": {**sd3_common, "model": ["101", 0], "positive": ["102", 0],
                                                          "negative": ["103", 0], "latent_image": ["104", 0],
                                                          "sampler_name": "euler"}}
    prompt["30"]["inputs"]["latent_image"] = ["105", 0]
    del prompt["10"], prompt["90"], prompt["91"]
    prompt["91"] = {"class_type": "PreviewAny", "inputs": {"source": ["30", 0]}}
    node, msg = run_error(server, prompt)
    assert node == "30" and "16 channels" in msg and "works on 4" in msg, msg
    assert_still_serving(server)


def test_sigmas_not_decreasing_and_zero_steps(server):
    prompt = custom_advanced("sd15", "euler", [STEPS["euler"]])
    prompt["44"] = {"class_type": "FlipSigmas", "inputs": {"sigmas": ["42", 0]}}
    prompt["60"]["inputs"]["sigmas"] = ["44", 0]
    del prompt["50"], prompt["90"], prompt["91"]
    prompt["91"] = {"class_type": "PreviewAny", "inputs": {"source": ["60", 0]}}
    node, msg = run_error(server, prompt)
    assert node == "60" and "strictly decreasing" in msg and "DenoiseLoop (node 30)" in msg, msg
    prompt["44"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["42", 0], "step": 4}}
    prompt["60"]["inputs"]["sigmas"] = ["44", 1]  # the last sigma alone: no step
    node, msg = run_error(server, prompt)
    assert "zero steps" in msg, msg
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], denoise=0.0)
    node, msg = run_error(server, prompt)
    assert node == "30" and "zero steps" in msg, msg
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=0)
    with pytest.raises(ValidationError) as info:
        server.queue(prompt)
    assert "steps" in json.dumps(info.value.body["node_errors"]["30"])
    assert_still_serving(server)


def test_nan_mid_loop_names_block_and_step(server):
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]], steps=6)
    prompt["81"] = {"class_type": "MLTest_NaNBelow", "inputs": {"model": ["1", 0], "sigma": 2.0}}
    prompt["30"]["inputs"]["model"] = ["81", 0]
    node, msg = run_error(server, prompt)
    assert node == "30"
    for part in ("DenoiseLoop (node 30)", "'block_1' (PredictDenoised, node 20)", "failed at step", "'denoised' holds NaN"):
        assert part in msg, (part, msg)
    assert "failed at step 0" not in msg  # it is mid-loop
    assert_still_serving(server)


def test_bad_scheduler_names_and_config(server):
    bad = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": "NopeScheduler", "scheduler_config": ""})
    with pytest.raises(ValidationError) as info:
        server.queue(ksampler_vs_blocks("sd15", "euler", [PREDICT, bad]))
    assert "NopeScheduler" in json.dumps(info.value.body["node_errors"]["21"])
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]])
    prompt["30"]["inputs"]["scheduler"] = "nope"
    with pytest.raises(ValidationError) as info:
        server.queue(prompt)
    assert "scheduler" in json.dumps(info.value.body["node_errors"]["30"])
    config = ("ModularBlock_DiffusersSchedulerStep", {"scheduler": "EulerDiscreteScheduler", "scheduler_config": '{"nope": 1}'})
    node, msg = run_error(server, ksampler_vs_blocks("sd15", "euler", [PREDICT, config]))
    assert "DiffusersSchedulerStep, node 21) failed at step 0" in msg and "no config option(s) nope" in msg, msg
    assert_still_serving(server)


def test_blocks_that_are_not_a_denoise_loop(server):
    node, msg = run_error(server, ksampler_vs_blocks("sd15", "euler", [PREDICT]))
    assert node == "30" and "no step block" in msg, msg
    prompt = ksampler_vs_blocks("sd15", "euler", [PREDICT, STEPS["euler"]])
    del prompt["30"]["inputs"]["block_1"], prompt["30"]["inputs"]["block_2"]
    with pytest.raises(ValidationError) as info:
        server.queue(prompt)
    assert "no loop blocks attached" in json.dumps(info.value.body["node_errors"]["30"])
    assert_still_serving(server)
