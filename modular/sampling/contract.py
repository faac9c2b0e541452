"""Denoise loops: the contract between a sampler host and the denoise loop wrapper / step blocks.

A *denoise loop* is a loop wrapper whose `loop_inputs` include `latents` and `sigmas`. It walks the
sigmas, calling `loop_step(components, block_state, i=i, t=sigmas[i])` once per step, and its
blocks read and write one shared block state. The host (e.g. ComfyUI's sampler machinery) provides
the values of `HostValues` (below); no node gives them. Blocks write `denoised` (the x0 prediction
of this step) and the next `latents`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.compat import SCHEDULER_STEPPING
from ..core.errors import ConfigError
from ..core.runner import BlockConfig, LoopResult, StepHooks, require_blocks, run_loop


@dataclass(frozen=True)
class HostValues:
    """What a sampler host hands a denoise loop, each set in the block state as it is (not copied).

    - `latents`: the sample x, in the host's space (ComfyUI: `x = x0 + sigma * noise` for eps / v models,
      `x = (1 - sigma) * x0 + sigma * noise` for flow models), noised to `sigmas[0]`;
    - `sigmas`: the 1-D schedule, strictly decreasing, one step per consecutive pair;
    - `denoiser`: `denoiser(x, sigma_batch, **denoiser_kwargs) -> x0` (ComfyUI: the guided model, with
      CFG, patches, ControlNet and inpaint masks applied); `denoiser_kwargs`: its keyword arguments
      (ComfyUI's `extra_args`);
    - `noise_seed`: the seed of the sampler's noise (None: unseeded);
    - `noise_sampler`: `noise_sampler(sigma, sigma_next) -> noise shaped like latents`, the host's ancestral
      noise stream (ComfyUI: its `default_noise_sampler` for the sampler's seed). Ancestral steps draw from
      it, so a host that changes how it seeds or draws its noise keeps parity with its own samplers. None:
      `torch.randn` from one generator seeded with `noise_seed` (what a plain script expects);
    - `flow_matching`: True when the model is a flow model (the second form of `latents` above);
    - `latent_image`, `noise`: the clean starting latent and the noise it was noised with (inpainting);
    - `start_step`: the first step to run (0, or the step a resumed state stopped at): steps are numbered in the
      whole schedule `sigmas`, so a step block's history (`i > 0`, `sigmas[i - 1]`) holds across a resume.
    """

    latents: Any
    sigmas: Any
    denoiser: Callable
    denoiser_kwargs: dict = field(default_factory=dict)
    noise_seed: int | None = None
    noise_sampler: Callable | None = None
    flow_matching: bool = False
    latent_image: Any = None
    noise: Any = None
    start_step: int = 0

    def as_state_values(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["denoiser_kwargs"] = dict(self.denoiser_kwargs or {})
        values["flow_matching"] = bool(self.flow_matching)
        if self.noise_sampler is None:
            values["noise_sampler"] = seeded_noise_sampler(self.latents, self.noise_seed)
        return values


HOST_VALUES = tuple(f.name for f in dataclasses.fields(HostValues))
# The history step blocks keep in the state from step to step (so that a state a run stopped with holds it, and a
# resumed run steps on from it): DPM++ 2M's `old_denoised`, and a diffusers scheduler as plain values
# (`blocks/diffusers_step.py`): its class, config and stepping numbers (JSON), its history tensors (one value per
# `compat.SCHEDULER_STEPPING` entry of kind "tensors") and the state of its generator (a uint8 tensor).
SCHEDULER_STATE = "scheduler_state"
SCHEDULER_TENSORS = {name: f"{SCHEDULER_STATE}.{name}" for name, kind in SCHEDULER_STEPPING.items() if kind == "tensors"}
GENERATOR_STATE = "noise_generator_state"
STEP_HISTORY = ("old_denoised", SCHEDULER_STATE, *SCHEDULER_TENSORS.values(), GENERATOR_STATE)
# The values a denoise loop's blocks find in the block state with no node giving them: the host's, `denoised`,
# which the prediction block writes each step, and the step blocks' history. Block nodes written for a denoise loop (its `model_name`) hide them.
PROVIDED_IN_LOOP = HOST_VALUES + ("denoised",) + STEP_HISTORY
CHECKED_OUTPUTS = ("latents", "denoised")
DENOISE_NO_BLOCKS_HINT = "connect a prediction block and a step block"


def is_denoise_loop(entry) -> bool:
    """A loop wrapper (a registry entry) that walks a sampler's sigmas: its loop inputs include latents and sigmas."""
    return entry.role == "loop" and {"latents", "sigmas"} <= {s.name for s in entry.input_specs()}


def provided_in_loop(registry, entry) -> set[str]:
    """The inputs of `entry` that the loop it runs in provides, so its node does not show them: a denoise loop's
    host values; for a block written for a denoise loop's pipeline (the same `model_name`), those and `denoised`
    (`PROVIDED_IN_LOOP`). Nothing for any other block: in a plain loop a block is given what it reads (`latents`
    included)."""
    if entry.role == "loop":
        return set(HOST_VALUES) if is_denoise_loop(entry) else set()
    names = {loop.model_name for loop in registry.loops()  # diffusers' own loops run on pipelines, never as samplers
             if loop.origin != "diffusers" and is_denoise_loop(loop) and loop.model_name is not None}
    return set(PROVIDED_IN_LOOP) if entry.model_name in names else set()


def check_sigmas(sigmas, label: str):
    """A clear error for a schedule a denoise loop cannot walk."""
    if getattr(sigmas, "ndim", None) != 1:
        raise ConfigError(f"{label}: sigmas must be a 1-D schedule, got shape {tuple(getattr(sigmas, 'shape', ()))}")
    if len(sigmas) < 2:
        raise ConfigError(
            f"{label}: zero steps: the sigmas hold {len(sigmas)} value(s), a denoise loop needs at least two "
            f"(steps >= 1 and denoise > 0)")
    values = [float(v) for v in sigmas]
    bad = [i for i in range(len(values) - 1) if not values[i + 1] < values[i]]
    if bad:
        i = bad[0]
        shown = ", ".join(f"{v:.4g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ConfigError(
            f"{label}: sigmas must be strictly decreasing, but sigma[{i + 1}] = {values[i + 1]:.4g} follows "
            f"sigma[{i}] = {values[i]:.4g} ({shown})")
    if any(v != v for v in values) or values[-1] < 0:
        raise ConfigError(f"{label}: sigmas must be finite and not negative ({values})")


def check_blocks(blocks: Sequence[tuple[str, BlockConfig]], label: str, available=()):
    """The attached blocks must form a denoise loop: every required input of a block is provided by the
    host, the loop or an earlier block, and some block writes the next `latents` (a step block)."""
    require_blocks(blocks, label, DENOISE_NO_BLOCKS_HINT)
    have = set(HOST_VALUES) | set(available)
    writes_latents = False
    for name, cfg in blocks:
        block = cfg.cls()
        missing = [p.name for p in block.inputs if p.name and p.required and p.name not in have and p.name not in cfg.values]
        if missing:
            hint = " (attach a prediction block such as PredictDenoised before it)" if "denoised" in missing else ""
            raise ConfigError(
                f"{label}: block {cfg.where(name)} reads {', '.join(repr(m) for m in missing)}, which no earlier block "
                f"writes{hint}", block_node=cfg.node)
        outputs = {o.name for o in block.intermediate_outputs if o.name}
        writes_latents |= "latents" in outputs
        have |= outputs
    if not writes_latents:
        raise ConfigError(
            f"{label}: no step block: none of the attached blocks writes 'latents', so the loop would never "
            f"move (attach a step block such as EulerStep after the prediction block)")


def check_finite(block, block_state):
    """After a block: the latents / x0 it wrote must be finite (stop at the step, not at a black image)."""
    import torch

    for name in CHECKED_OUTPUTS:
        if not any(o.name == name for o in block.intermediate_outputs):
            continue
        value = getattr(block_state, name, None)
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            nan = bool(torch.isnan(value).any())
            raise FloatingPointError(f"'{name}' holds {'NaN' if nan else 'infinite'} values after this block")


@dataclass(frozen=True)
class DenoisePlan:
    """A denoise loop whose blocks were checked (once): run it with `run(host_values)` as often as a host
    samples. `label` names the loop in messages."""

    wrapper_cls: type
    blocks: tuple
    label: str
    loop_values: dict = field(default_factory=dict)
    components: dict = field(default_factory=dict)

    def run(self, host: HostValues, hooks: StepHooks | None = None, device=None, state=None) -> LoopResult:
        """Run over `host.sigmas` from `host.latents` (from step `host.start_step`), on a copy of `state` (a state a
        run stopped with: a step block's history); the result's state holds the final `latents`. Positions are in
        the whole schedule `host.sigmas`: the result's state records the one it stopped at (`stopped_at`, here
        `host.start_step` + the steps run) and `hooks.step_done` is told each one."""
        check_sigmas(host.sigmas, self.label)
        hooks = hooks or StepHooks()
        if hooks.check_block is None:
            hooks = dataclasses.replace(hooks, check_block=check_finite)
        return run_loop(self.wrapper_cls, self.blocks, loop_values=self.loop_values, state=state,
                        components=self.components, hooks=hooks, device=device, label=self.label,
                        host_values=host.as_state_values(), start_position=host.start_step)


def plan_denoise(wrapper_cls, blocks: Sequence[tuple[str, BlockConfig]], loop_values: dict | None = None,
                 components: dict | None = None, label: str | None = None) -> DenoisePlan:
    """Check that `blocks` form a denoise loop under `wrapper_cls` (before any model loads) -> a plan to run."""
    label = label or wrapper_cls.__name__
    loop_values = dict(loop_values or {})
    check_blocks(blocks, label, available=set(loop_values))
    return DenoisePlan(wrapper_cls, tuple(blocks), label, loop_values, dict(components or {}))


def run_denoise(wrapper_cls, blocks: Sequence[tuple[str, BlockConfig]], host: HostValues, *,
                loop_values: dict | None = None, components: dict | None = None, hooks: StepHooks | None = None,
                device=None, label: str | None = None) -> LoopResult:
    """Check and run a denoise loop in one call (what a plain script does)."""
    return plan_denoise(wrapper_cls, blocks, loop_values, components, label).run(host, hooks, device)


def seeded_generator(device, seed):
    """A `torch.Generator` on `device` seeded with `seed`; None (unseeded) when `seed` is None."""
    import torch

    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def seeded_noise_sampler(like, seed):
    """noise_sampler(sigma, sigma_next): standard normal noise shaped like `like`, from one generator seeded with
    `seed` (unseeded when None)."""
    import torch

    generator = seeded_generator(like.device, seed)
    return lambda sigma, sigma_next: torch.randn(like.size(), dtype=like.dtype, layout=like.layout, device=like.device,
                                                 generator=generator)
