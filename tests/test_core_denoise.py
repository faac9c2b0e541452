"""Core tier, denoising: the denoise loop and its blocks on an analytic denoiser, without ComfyUI.

The exact-parity tests against ComfyUI's samplers are in the host tier (test_denoise.py); here the
update rules are checked against k-diffusion's formulas written out in the test, and the contract's
checks (sigmas, block order, NaN) against their messages."""

import pytest
import torch

from modular import BlockConfig, BlockStepError, ConfigError, StepHooks
from modular.blocks import denoise as blocks
from modular.blocks.diffusers_step import SCHEDULERS, DiffusersSchedulerStep
from modular.sampling import HostValues, check_sigmas, run_denoise

SIGMAS = torch.tensor([14.6, 7.0, 3.0, 1.2, 0.4, 0.0])
X0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
NOISE = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def denoiser(x, sigma, **kwargs):
    """An x0 predictor that depends on x and sigma, so that the solvers differ."""
    return X0 + 0.1 * x / (1 + sigma[:, None, None, None] ** 2)


def run(*step_blocks, sigmas=SIGMAS, den=denoiser, seed=3, hooks=None, **host):
    attached = [(f"block_{k}", b if isinstance(b, BlockConfig) else BlockConfig(b))
                for k, b in enumerate([blocks.PredictDenoised, *step_blocks], start=1)]
    values = HostValues(latents=NOISE * sigmas[0], sigmas=sigmas, denoiser=den, noise_seed=seed,
                        latent_image=torch.zeros_like(NOISE), noise=NOISE, **host)
    return run_denoise(blocks.DenoiseLoop, attached, values, hooks=hooks)


def reference_euler(sigmas=SIGMAS):
    x = NOISE * sigmas[0]
    for i in range(len(sigmas) - 1):
        d = (x - denoiser(x, sigmas[i] * x.new_ones([1]))) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def reference_dpmpp_2m(sigmas=SIGMAS):
    x, old = NOISE * sigmas[0], None
    t = lambda s: s.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        den = denoiser(x, sigmas[i] * x.new_ones([1]))
        h = t(sigmas[i + 1]) - t(sigmas[i])
        if old is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * den
        else:
            r = (t(sigmas[i]) - t(sigmas[i - 1])) / h
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old)
        old = den
    return x


def test_euler_and_dpmpp_2m_follow_k_diffusion():
    result = run(blocks.EulerStep)
    assert result.steps == len(SIGMAS) - 1
    assert torch.allclose(result.state.get("latents"), reference_euler(), atol=1e-5)
    assert torch.allclose(run(blocks.DPMPP2MStep).state.get("latents"), reference_dpmpp_2m(), atol=1e-5)


def reference_dpmpp_2m_first_order(sigmas=SIGMAS):
    """DPM-Solver++ with no history: what DPMPP2MStep would do if `old_denoised` were lost between steps."""
    x = NOISE * sigmas[0]
    for i in range(len(sigmas) - 1):
        den = denoiser(x, sigmas[i] * x.new_ones([1]))
        h = sigmas[i].log() - sigmas[i + 1].log() if sigmas[i + 1] > 0 else None
        x = den if h is None else (sigmas[i + 1] / sigmas[i]) * x + (1 - (sigmas[i + 1] / sigmas[i])) * den
    return x


def test_dpmpp_2m_keeps_its_history_in_the_shared_state():
    denoised, history = [], []

    def step_start(i, block_state):
        history.append(getattr(block_state, "old_denoised", None))

    hooks = StepHooks(step_start=step_start, progress=lambda *a: None,
                      preview=lambda step, bs: denoised.append(bs.denoised))
    out = run(blocks.DPMPP2MStep, hooks=hooks).state.get("latents")
    # Each step starts with the previous step's x0 in the shared state, the very tensor that step wrote.
    assert history[0] is None and all(history[i] is denoised[i - 1] for i in range(1, len(denoised)))
    assert torch.allclose(out, reference_dpmpp_2m(), atol=1e-5)

    # ... and it is used: with the history dropped at every step the solver is first order, another result.
    def forget(i, block_state):
        block_state.old_denoised = None

    forgetful = run(blocks.DPMPP2MStep, hooks=StepHooks(step_start=forget)).state.get("latents")
    assert torch.allclose(forgetful, reference_dpmpp_2m_first_order(), atol=1e-5)
    assert (forgetful - out).abs().max() > 1e-3


def test_euler_ancestral_is_seeded_and_eta_zero_is_euler():
    a = run(blocks.EulerAncestralStep, seed=5).state.get("latents")
    b = run(blocks.EulerAncestralStep, seed=5).state.get("latents")
    c = run(blocks.EulerAncestralStep, seed=6).state.get("latents")
    assert torch.equal(a, b) and not torch.allclose(a, c)
    eta0 = BlockConfig(blocks.EulerAncestralStep, {"eta": 0.0})
    assert torch.allclose(run(eta0).state.get("latents"), reference_euler(), atol=1e-5)


def reference_euler_ancestral(draws, sigmas=SIGMAS):
    """k-diffusion's sample_euler_ancestral (eta 1, s_noise 1), its noise taken from `draws` in order."""
    x = NOISE * sigmas[0]
    for i in range(len(sigmas) - 1):
        den = denoiser(x, sigmas[i] * x.new_ones([1]))
        s, s_next = sigmas[i], sigmas[i + 1]
        sigma_up = min(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
        sigma_down = (s_next ** 2 - sigma_up ** 2) ** 0.5
        x = den if sigma_down == 0 else x + (x - den) / s * (sigma_down - s) + draws[i] * sigma_up
    return x


def test_euler_ancestral_draws_the_hosts_noise_and_nothing_else():
    draws = [torch.randn(NOISE.shape, generator=torch.Generator().manual_seed(100 + k)) for k in range(len(SIGMAS))]
    calls = []

    def host_noise(sigma, sigma_next):  # a host's own stream: its draws, in order, told the sigmas of each
        calls.append((float(sigma), float(sigma_next)))
        return draws[len(calls) - 1]

    out = run(blocks.EulerAncestralStep, noise_sampler=host_noise).state.get("latents")
    pairs = [(float(a), float(b)) for a, b in zip(SIGMAS[:-1], SIGMAS[1:])]
    assert calls == pairs[:-1]  # no draw for the last step, whose sigma_down is 0
    assert torch.allclose(out, reference_euler_ancestral(draws), atol=1e-5)
    seeded = run(blocks.EulerAncestralStep, seed=5).state.get("latents")  # another stream: another result
    assert not torch.allclose(out, seeded)


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if SCHEDULERS[n][0] != "flow"])
def test_every_offered_diffusers_scheduler_runs_on_given_sigmas(name):
    if name == "LMSDiscreteScheduler":
        pytest.importorskip("scipy")
    result = run(BlockConfig(DiffusersSchedulerStep, {"scheduler": name}))
    out = result.state.get("latents")
    assert torch.isfinite(out).all()
    # Every solver lands near the analytic model's fixed point x0 / (1 - 0.1) at sigma 0.
    assert (out - X0 / 0.9).abs().max() < 0.5, name


def test_diffusers_euler_equals_euler_block_and_dpm_solver_equals_dpmpp_2m():
    euler = run(BlockConfig(DiffusersSchedulerStep, {"scheduler": "EulerDiscreteScheduler"})).state.get("latents")
    assert torch.equal(euler, run(blocks.EulerStep).state.get("latents"))
    dpm = run(BlockConfig(DiffusersSchedulerStep, {"scheduler": "DPMSolverMultistepScheduler"})).state.get("latents")
    assert (dpm - run(blocks.DPMPP2MStep).state.get("latents")).abs().max() < 1e-5


def test_flow_matching_models_take_flow_schedulers():
    flow = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])

    def flow_denoiser(x, sigma, **kw):  # depends on x and sigma: only a true flow Euler step matches the reference
        return X0 * 0.9 + 0.2 * x * sigma[:, None, None, None]

    x = NOISE.clone()
    for i in range(len(flow) - 1):  # flow Euler: x moves along the velocity (x - x0) / sigma
        x = x + (x - flow_denoiser(x, flow[i:i + 1])) / flow[i] * (flow[i + 1] - flow[i])

    def flow_run(scheduler):
        attached = [("block_1", BlockConfig(blocks.PredictDenoised)),
                    ("block_2", BlockConfig(DiffusersSchedulerStep, {"scheduler": scheduler}))]
        values = HostValues(latents=NOISE, sigmas=flow, denoiser=flow_denoiser, flow_matching=True)
        return run_denoise(blocks.DenoiseLoop, attached, values).state.get("latents")

    out = flow_run("FlowMatchEulerDiscreteScheduler")
    assert torch.allclose(out, x, atol=1e-5)
    assert (out - X0 * 0.9).abs().max() > 1e-2  # not simply the final x0
    with pytest.raises(BlockStepError, match="flow model"):
        flow_run("EulerDiscreteScheduler")


def test_latent_blend_keeps_the_unmasked_region():
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1  # generate the left half (a pixel-space MASK, resized to the latent)
    out = run(blocks.EulerStep, BlockConfig(blocks.LatentBlend, {"mask": mask})).state.get("latents")
    assert torch.equal(out[..., 4:], torch.zeros_like(out[..., 4:]))  # the kept half is the start latent
    assert torch.allclose(out[..., :4], reference_euler()[..., :4], atol=1e-5)


def test_dynamic_threshold_bounds_x0():
    seen = []
    cfg = BlockConfig(blocks.DynamicThreshold, {"percentile": 0.9, "threshold": 0.5})
    run(cfg, blocks.EulerStep, hooks=StepHooks(progress=lambda *a: None,
                                               preview=lambda s, bs: seen.append(bs.denoised.abs().max().item())))
    assert max(seen) <= 0.5 + 1e-6


def test_sigmas_must_be_strictly_decreasing_with_a_step():
    with pytest.raises(ConfigError, match=r"strictly decreasing, but sigma\[2\] = 3 follows sigma\[1\] = 3"):
        check_sigmas(torch.tensor([5.0, 3.0, 3.0, 0.0]), "L")
    with pytest.raises(ConfigError, match="zero steps"):
        check_sigmas(torch.tensor([0.0]), "L")
    with pytest.raises(ConfigError, match="zero steps"):
        run(blocks.EulerStep, sigmas=torch.tensor([1.0]))


def test_blocks_must_form_a_denoise_loop():
    with pytest.raises(ConfigError, match="no step block"):
        run()
    with pytest.raises(ConfigError, match=r"'block_1' \(EulerStep, node 4\) reads 'denoised'.*PredictDenoised") as info:
        run_denoise(blocks.DenoiseLoop, [("block_1", BlockConfig(blocks.EulerStep, node="4"))],
                    HostValues(latents=NOISE, sigmas=SIGMAS, denoiser=denoiser))
    assert info.value.block_node == "4"  # the host marks that node
    with pytest.raises(ConfigError, match="no loop blocks attached; connect a prediction block and a step block"):
        run_denoise(blocks.DenoiseLoop, [], HostValues(latents=NOISE, sigmas=SIGMAS, denoiser=denoiser))


def test_blocks_are_checked_once_per_plan_not_per_run(monkeypatch):
    from modular.sampling import contract as sampling

    calls = []
    real = sampling.check_blocks
    monkeypatch.setattr(sampling, "check_blocks", lambda *a, **k: calls.append(1) or real(*a, **k))
    plan = sampling.plan_denoise(blocks.DenoiseLoop, [("block_1", BlockConfig(blocks.PredictDenoised)),
                                                      ("block_2", BlockConfig(blocks.EulerStep))])
    for _ in range(2):
        plan.run(HostValues(latents=NOISE * SIGMAS[0], sigmas=SIGMAS, denoiser=denoiser))
    assert calls == [1]


def test_shared_inputs_are_fresh_per_block():
    # diffusers writes `required` into the InputParams of a composed loop: no block may share one object.
    from modular import compat

    wrapper = compat.compose(blocks.DenoiseLoop, {"a": blocks.PredictDenoised, "b": blocks.EulerStep})
    for p in wrapper.inputs:
        p.required = False
    assert all(p.required for p in blocks.EulerStep().inputs)
    assert blocks.EulerStep().inputs[0] is not blocks.EulerStep().inputs[0]


def test_nan_mid_loop_names_block_and_step():
    def nan_below_two(x, sigma, **kw):
        out = denoiser(x, sigma)
        return out * float("nan") if float(sigma.max()) < 2 else out

    with pytest.raises(BlockStepError) as info:
        run(blocks.EulerStep, den=nan_below_two)
    msg = str(info.value)
    assert "'block_1' (PredictDenoised) failed at step 3" in msg and "'denoised' holds NaN" in msg


def test_host_values_cannot_be_given_on_a_node():
    with pytest.raises(ConfigError, match="'latents' on block 'block_2'.*provided by the loop's host") as info:
        run(BlockConfig(blocks.EulerStep, {"latents": torch.zeros(1)}, node="12"))
    assert info.value.block_node == "12"
