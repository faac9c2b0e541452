"""Core tier, stopping and resuming a denoise loop without ComfyUI: the state a loop would leave mid-run
(`StepHooks.step_done`), the file `Autosave` keeps of it while a loop runs, and a resumed run continuing the
schedule where the state stopped (`continued_schedule`). The same through ComfyUI's server is in test_denoise.py."""

import pytest
import torch

from modular import BlockConfig, LoopConfigError, StepHooks, compat
from modular.blocks import denoise as blocks
from modular.sampling import HostValues, continued_schedule, plan_denoise, resumable, stopped_at
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
    with pytest.raises(LoopConfigError, match=r"L: the state stopped at step 2, sigma 3, but the sigmas given start "
                                              r"at 14\.6: give the rest of the same schedule from step 2"):
        continued_schedule(stopped, SIGMAS, "L")
    with pytest.raises(LoopConfigError, match="L: the state to resume is not one a denoise loop stopped with"):
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


def resumed_from(state, step_block, until=STEPS, hooks=None):
    """A run that resumes `state` (one a loop stopped with) on the rest of SIGMAS, up to step `until`."""
    at = stopped_at(state)
    schedule, first = continued_schedule(state, SIGMAS[at: until + 1], "DenoiseLoop")
    return run(step_block, sigmas=schedule, state=state, latents=state.get("latents"), start_step=first, hooks=hooks)


@pytest.mark.parametrize("step_block", [blocks.EulerStep, blocks.DPMPP2MStep])
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
