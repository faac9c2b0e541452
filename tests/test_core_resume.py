"""Core tier, stopping and resuming a denoise loop without ComfyUI: the state a loop would leave mid-run
(`StepHooks.step_done`), the file `Autosave` keeps of it while a loop runs, and a resumed run continuing the
schedule where the state stopped (`continued_schedule`). The same through ComfyUI's server is in test_denoise.py."""

import pytest
import torch

from modular import BlockConfig, ConfigError, StepHooks, compat
from modular.blocks import denoise as blocks
from modular.blocks import diffusers_step as scheduler_step
from modular.sampling import (SCHEDULER_STATE, STEP_HISTORY, HostValues, continued_schedule, plan_denoise, resumable,
                              stopped_at)
from modular.state_files import Autosave, load_state, read_info, save_state

from test_core_denoise import NOISE, SIGMAS, denoiser

STEPS = len(SIGMAS) - 1


def attached(step_block):
    return [(f"block_{k}", b if isinstance(b, BlockConfig) else BlockConfig(b))
            for k, b in enumerate([blocks.PredictDenoised, step_block], start=1)]


def run(step_block, sigmas=SIGMAS, hooks=None, state=None, latents=None, start_step=0):
    values = HostValues(latents=NOISE * SIGMAS[0] if latents is None else latents, sigmas=sigmas, denoiser=denoiser,
                        noise_seed=3, start_step=start_step)
    return plan_denoise(blocks.DenoiseLoop, attached(step_block)).run(values, hooks, state=state)


class Stop(Exception):
    """Stands in for a host's Interrupt."""


def stop_after(steps):
    def interrupt_hook():
        interrupt_hook.calls += 1
        if interrupt_hook.calls > steps:
            raise Stop()

    interrupt_hook.calls = 0
    return interrupt_hook


def test_a_snapshot_is_the_state_the_loop_would_leave_there_and_stays_put():
    snaps = {}
    hooks = StepHooks(step_done=lambda position, snapshot: snaps.__setitem__(position, snapshot()))
    final = run(blocks.DPMPP2MStep, hooks=hooks).state
    assert sorted(snaps) == list(range(1, STEPS + 1))
    last = snaps[STEPS]
    assert compat.made_by(last) == {"loop": "DenoiseLoop", "blocks": ["PredictDenoised", "DPMPP2MStep"], "step": STEPS}
    for name in ("latents", "denoised", "old_denoised"):
        assert torch.equal(last.get(name), final.get(name)), name
    # At step k it is what a run of the first k steps leaves ...
    for k in (1, 3):
        shorter = run(blocks.DPMPP2MStep, sigmas=SIGMAS[: k + 1]).state
        assert torch.equal(snaps[k].get("latents"), shorter.get("latents"))
        assert torch.equal(snaps[k].get("old_denoised"), shorter.get("old_denoised"))
    # ... and a copy of what the loop wrote: changing the loop's own tensors in place leaves it as it was.
    kept = last.get("latents").clone()
    final.get("latents").mul_(0)
    assert torch.equal(last.get("latents"), kept)
    assert snaps[1].get("sigmas") is snaps[2].get("sigmas")  # what the loop did not write is shared, not copied


@pytest.mark.parametrize("step_block", [blocks.EulerStep, blocks.DPMPP2MStep])
def test_stop_save_load_resume_equals_one_run(tmp_path, step_block):
    whole = run(step_block).state.get("latents")
    k = 2
    stopped = resumable(run(step_block, sigmas=SIGMAS[: k + 1]).state)
    save_state(stopped, tmp_path / "s.safetensors")
    loaded, info = load_state(tmp_path / "s.safetensors")
    assert info["step"] == k
    schedule, first = continued_schedule(loaded, SIGMAS[k:], "DenoiseLoop")
    assert first == k and torch.equal(schedule, SIGMAS)
    resumed = run(step_block, sigmas=schedule, state=loaded, latents=loaded.get("latents"), start_step=k)
    assert resumed.steps == STEPS - k
    assert torch.equal(resumed.state.get("latents"), whole)


def test_a_resume_must_continue_the_schedule_where_the_state_stopped():
    stopped = resumable(run(blocks.EulerStep, sigmas=SIGMAS[:3]).state)  # at step 2, sigma 3.0
    with pytest.raises(ConfigError, match=r"L: the state stopped at step 2, sigma 3, but the sigmas given start "
                                              r"at 14\.6: give the rest of the same schedule from step 2"):
        continued_schedule(stopped, SIGMAS, "L")
    with pytest.raises(ConfigError, match="L: the state to resume is not one a denoise loop stopped with"):
        continued_schedule(compat.PipelineState(), SIGMAS[2:], "L")


def autosaved(tmp_path, every, hooks_for):
    """A run whose state is kept by an Autosave every `every` steps (`hooks_for(autosave)`: its hooks); ->
    (written steps, the file, the run's outcome)."""
    written = []
    autosave = Autosave(every, lambda: tmp_path / "auto.safetensors", written=lambda position, path: written.append(position))
    try:
        outcome = run(blocks.DPMPP2MStep, hooks=hooks_for(autosave))
    except Stop as stop:
        outcome = stop
    finally:
        autosave.finish()
    return written, autosave.file, outcome


def keep(autosave, **hooks):
    return StepHooks(step_done=lambda position, snapshot: autosave.step_done(position, lambda: resumable(snapshot(), False)),
                     **hooks)


def test_autosave_writes_every_n_steps_and_the_last_finished_one(tmp_path):
    written, path, _ = autosaved(tmp_path, 2, keep)
    assert written == [2, 4, 5]  # every 2 steps, then where the loop ended
    assert read_info(path)["step"] == STEPS
    written, _, _ = autosaved(tmp_path, 1, keep)
    assert written == [1, 2, 3, 4, 5]  # the end is written once


def test_autosave_after_an_interrupt_holds_the_last_finished_step_and_resumes_to_the_whole_run(tmp_path):
    written, path, outcome = autosaved(
        tmp_path, 2, lambda a: keep(a, interrupt=stop_after(3), passthrough=(Stop,)))
    assert isinstance(outcome, Stop) and written == [2, 3]
    loaded, info = load_state(path)
    assert info["step"] == 3
    schedule, first = continued_schedule(loaded, SIGMAS[3:], "DenoiseLoop")
    resumed = run(blocks.DPMPP2MStep, sigmas=schedule, state=loaded, latents=loaded.get("latents"), start_step=first)
    assert torch.equal(resumed.state.get("latents"), run(blocks.DPMPP2MStep).state.get("latents"))


def test_autosave_refuses_a_step_count_below_one():
    with pytest.raises(ValueError, match="save every 0 steps"):
        Autosave(0, lambda: None)


def test_the_hosts_callables_are_left_out_and_never_copied():
    copied = []

    class GuidedModel:  # stands in for ComfyUI's guided model: copying it would copy the model's weights
        def __deepcopy__(self, memo):
            copied.append(self)
            return GuidedModel()

    state = compat.PipelineState()
    state.set("latents", torch.ones(2))
    state.set("denoiser", GuidedModel())
    state.set("noise_sampler", lambda s, n: None)
    kept = resumable(state)
    assert set(compat.state_values(kept)) == {"latents"} and copied == []
    assert kept.get("latents") is not state.get("latents") and torch.equal(kept.get("latents"), state.get("latents"))


def diffusers_step(scheduler, **config):
    return BlockConfig(scheduler_step.DiffusersSchedulerStep, {"scheduler": scheduler, "scheduler_config": config or None})


def resumed_from(state, step_block, until=STEPS, hooks=None):
    """A run that resumes `state` (one a loop stopped with) on the rest of SIGMAS, up to step `until`."""
    at = stopped_at(state)
    schedule, first = continued_schedule(state, SIGMAS[at: until + 1], "DenoiseLoop")
    return run(step_block, sigmas=schedule, state=state, latents=state.get("latents"), start_step=first, hooks=hooks)


@pytest.mark.parametrize("step_block", [blocks.EulerStep, blocks.DPMPP2MStep, diffusers_step("EulerAncestralDiscreteScheduler")],
                         ids=["EulerStep", "DPMPP2MStep", "diffusers_euler_ancestral"])
def test_a_resumed_run_resumed_again_equals_one_run_and_records_where_it_stopped(tmp_path, step_block):
    # 0..k, then k..m from its state, then m..N from that one's, each through a file: the run 0..N exactly. Each
    # state records the step of the whole schedule it stopped at (k, m, N), and `step_done` is told those steps.
    whole = run(step_block).state.get("latents")
    state, results = None, []
    for part, (start, end) in enumerate([(0, 2), (2, 4), (4, STEPS)]):
        told = []
        hooks = StepHooks(step_done=lambda at, snapshot: told.append((at, stopped_at(snapshot()))))
        if state is None:
            result = run(step_block, sigmas=SIGMAS[: end + 1], hooks=hooks)
        else:
            result = resumed_from(state, step_block, until=end, hooks=hooks)
        assert result.steps == end - start
        assert told == [(at, at) for at in range(start + 1, end + 1)], part
        save_state(resumable(result.state), tmp_path / f"part{part}.safetensors")
        state, info = load_state(tmp_path / f"part{part}.safetensors")
        assert info["step"] == stopped_at(state) == end, part
        results.append(result)
    assert (state.get("latents") - whole).abs().max().item() == 0
    assert [(r.stopped_at, stopped_at(r.state)) for r in results] == [(2, 2), (4, 4), (STEPS, STEPS)]


DIFFUSERS_CASES = {  # (scheduler, config): each kind of history a scheduler carries, and a generator
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpm": ("DPMSolverMultistepScheduler", {}),
    "dpm_order3": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    "dpm_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "unipc_order3": ("UniPCMultistepScheduler", {"solver_order": 3}),
}


def interrupted_and_saved(tmp_path, step_block, stop_at, state=None):
    """A run over the whole schedule (resuming `state` when given) with save_every 1, interrupted after the step that
    reaches position `stop_at` -> (the positions written, the state loaded back from its file)."""
    written, start = [], 0 if state is None else stopped_at(state)
    path = tmp_path / f"auto_{stop_at}.safetensors"
    autosave = Autosave(1, lambda: path, written=lambda at, file: written.append(at))
    hooks = keep(autosave, interrupt=stop_after(stop_at - start), passthrough=(Stop,))
    with pytest.raises(Stop):
        if state is None:
            run(step_block, hooks=hooks)
        else:
            resumed_from(state, step_block, hooks=hooks)
    autosave.finish()
    loaded, info = load_state(path)
    assert info["step"] == stopped_at(loaded) == stop_at
    return written, loaded


@pytest.mark.parametrize("case", list(DIFFUSERS_CASES))
def test_the_diffusers_scheduler_step_saved_as_it_runs_resumes_to_one_run(tmp_path, case):
    # save_every 1 over the whole schedule, Interrupt after step 2, Load, resume, Interrupt after step 4, Load, resume
    # to the end == one run 0..N exactly: the scheduler's position and history, and a stochastic one's generator, are
    # in the files (as tensors and JSON values).
    scheduler, config = DIFFUSERS_CASES[case]
    step = diffusers_step(scheduler, **config)
    whole = run(step).state.get("latents")
    written, at_2 = interrupted_and_saved(tmp_path, step, 2)
    assert written == [1, 2]
    written, at_4 = interrupted_and_saved(tmp_path, step, 4, at_2)
    assert written == [3, 4]
    resumed = resumed_from(at_4, step).state.get("latents")
    assert (resumed - whole).abs().max().item() == 0, case
    if case != "euler":  # the kept history is what makes it exact: without it the resumed run is another one
        forgot = compat.map_state(at_2, lambda v: v)
        for name in STEP_HISTORY:
            compat.state_values(forgot).pop(name, None)
        assert (resumed_from(forgot, step).state.get("latents") - whole).abs().max().item() > 1e-5, case


def test_a_kept_scheduler_resumed_by_another_scheduler_or_config_is_refused(tmp_path):
    from modular import BlockStepError

    _, at_2 = interrupted_and_saved(tmp_path, diffusers_step("UniPCMultistepScheduler"), 2)
    with pytest.raises(BlockStepError, match="stepped by UniPCMultistepScheduler; this block steps with "
                                             "DPMSolverMultistepScheduler: choose UniPCMultistepScheduler"):
        resumed_from(at_2, diffusers_step("DPMSolverMultistepScheduler"))
    with pytest.raises(BlockStepError, match=r"configured with solver_order=2, this block's with solver_order=3: "
                                             r"give the same scheduler_config"):
        resumed_from(at_2, diffusers_step("UniPCMultistepScheduler", solver_order=3))
    moved = compat.map_state(at_2, lambda v: v)
    compat.set_made_by(moved, "DenoiseLoop", ["PredictDenoised", "DiffusersSchedulerStep"], 3)  # not where it stopped
    with pytest.raises(BlockStepError, match="stopped at step 2, but the loop resumes it at step 3"):
        resumed_from(moved, diffusers_step("UniPCMultistepScheduler"))


def test_a_state_that_leaves_the_loop_holds_the_scheduler_as_plain_values_only():
    # The running loop steps with the live scheduler and generator; its snapshots and its final state hold what they
    # carry as tensors and JSON values, which a state file takes as they are (no skip_unsupported).
    from modular.state_files import encode_state

    snaps = []
    hooks = StepHooks(step_done=lambda position, snapshot: snaps.append(snapshot()))
    final = run(diffusers_step("UniPCMultistepScheduler"), hooks=hooks).state
    for state in [*snaps, final]:
        kept = resumable(state)
        tensors, values, skipped = encode_state(kept)
        assert skipped == [] and set(STEP_HISTORY) - {"old_denoised"} <= set(tensors) | set(values)
        assert not any(name.startswith("_live") for name in compat.state_values(state))
    assert compat.state_values(final)[SCHEDULER_STATE]["stepping"]["_step_index"] == {"value": STEPS}


def same(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):  # a config: diffusers' own bookkeeping (`_use_default_values`) aside
        a, b = ({k: v for k, v in d.items() if not k.startswith("_")} for d in (a, b))
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


SCHEDULER_RUNS = [(name, {}) for name in scheduler_step.SCHEDULERS] + [
    ("DPMSolverMultistepScheduler", {"solver_order": 3}), ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("UniPCMultistepScheduler", {"solver_order": 3})]


@pytest.mark.parametrize("name,config", SCHEDULER_RUNS)
def test_a_scheduler_kept_as_plain_values_is_made_again_as_it_was(tmp_path, name, config):
    # Everything a scheduler the block drives changes while it steps is in compat.SCHEDULER_STEPPING (a diffusers
    # that adds a stepping attribute fails here), and after every step the scheduler made again from its plain
    # values, through a state file, equals it attribute for attribute.
    import copy

    flow = scheduler_step.SCHEDULERS[name][0] == "flow"
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]) if flow else SIGMAS
    scheduler = scheduler_step.make_scheduler(name, config, flow)
    scheduler_step.start(scheduler, sigmas)
    started = {k: copy.copy(v) for k, v in vars(scheduler).items()}
    changed, generator = set(), torch.Generator().manual_seed(0)
    for i in range(len(sigmas) - 1):
        x, output = torch.randn(2, 1, 4, 8, 8, generator=generator)
        kwargs = {"generator": generator} if scheduler_step.takes_generator(scheduler) else {}
        scheduler.step(output, scheduler.timesteps[i], x, return_dict=False, **kwargs)
        changed |= {k for k, v in vars(scheduler).items() if k not in started or not same(started[k], v)}
        kept = compat.PipelineState()
        for value_name, value in scheduler_step.plain_scheduler(scheduler).items():
            kept.set(value_name, value)
        save_state(kept, tmp_path / "s.safetensors")
        loaded = compat.state_values(load_state(tmp_path / "s.safetensors")[0])
        configured = scheduler_step.make_scheduler(name, config, flow)
        again = scheduler_step.rebuilt_scheduler(loaded[SCHEDULER_STATE], loaded, configured, sigmas, i + 1, "cpu")
        assert set(vars(again)) == set(vars(scheduler)), (name, i)
        for k, v in vars(scheduler).items():
            assert same(vars(again)[k], v), (name, i, k)
    assert changed and changed <= set(compat.SCHEDULER_STEPPING), (name, sorted(changed - set(compat.SCHEDULER_STEPPING)))
