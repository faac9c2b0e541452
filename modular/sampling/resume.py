"""Resuming a denoise loop: what a state keeps when it leaves its host, where a resumed run continues, and the
host's noise stream taken up where the saved run left it."""

from __future__ import annotations

from ..core import compat
from ..core.compat import stopped_at
from ..core.errors import ConfigError
from ..core.state import copy_state


# What a denoise loop's state keeps when it leaves its host (to be saved, and resumed): not the host's callables.
NOT_KEPT = ("denoiser", "denoiser_kwargs", "noise_sampler")


def resumable(state, copy=True):
    """A denoise loop's state without the host's callables (`NOT_KEPT`): what a state file holds. A copy (the host's
    callables, the guided model among them, are never copied), or with `copy=False` the state itself, changed (one
    that is this run's own already: a snapshot, the final state)."""
    kept = compat.map_state(state, lambda v: v) if copy else state
    for name in NOT_KEPT:
        compat.state_values(kept).pop(name, None)
    return copy_state(kept) if copy else kept


def continued_schedule(state, sigmas, label: str):
    """Where a run resumes `state`, a state a denoise loop stopped with: -> (the whole schedule so far, the position
    it stopped at, which is the resumed run's start_step). `sigmas` are the rest of the schedule, from the sigma the
    state stopped at (KSampler: its sigmas from start_step; SamplerCustomAdvanced: SplitSigmas' low_sigmas); the
    whole schedule is the state's own sigmas before that position, then these, so that steps keep their numbers and
    a step block's history holds."""
    import torch

    position = stopped_at(state)
    saved = compat.state_values(state).get("sigmas")
    if position is None or not torch.is_tensor(saved) or saved.ndim != 1 or not 0 < position < len(saved):
        raise ConfigError(
            f"{label}: the state to resume is not one a denoise loop stopped with (it records no step and schedule; "
            f"save the state output of a KSampler node, or use the file its save_every writes)")
    stopped, first = float(saved[position]), float(sigmas[0])
    if abs(stopped - first) > 1e-5 * max(abs(stopped), 1e-3):
        raise ConfigError(
            f"{label}: the state stopped at step {position}, sigma {stopped:.6g}, but the sigmas given start at "
            f"{first:.6g}: give the rest of the same schedule from step {position} (KSampler: the same steps, scheduler "
            f"and denoise, start_step {position}; SamplerCustomAdvanced: SplitSigmas at step {position}, its low_sigmas)")
    return torch.cat([saved[:position].to(device=sigmas.device, dtype=sigmas.dtype), sigmas]), position
