"""Denoise loops inside ComfyUI's sampler machinery (`modular/sampling/`).

A denoise loop (a loop wrapper over sigmas, `modular/sampling/contract.py`) gets two generated nodes:
- `ModularSampler_<Class>`: a SAMPLER (`comfy.samplers.KSAMPLER`) for `SamplerCustomAdvanced` and
  every node that takes one. NOISE, GUIDER and SIGMAS stay ComfyUI's own.
- `ModularKSampler_<Class>`: the all-in-one node with KSampler's inputs: KSampler's sigmas from
  `BasicScheduler`, then ComfyUI's own `SamplerCustom` runs the same SAMPLER.
Either way the loop's `denoiser` is ComfyUI's guided model (CFG, patches, ControlNet, inpaint masks),
the progress bar, x0 previews and Interrupt are `latent_preview`'s and the ProgressBar's, and the
model is loaded by ComfyUI's model management on its device.
"""

from __future__ import annotations

import logging

import comfy.k_diffusion.sampling
import comfy.model_sampling
import comfy.samplers
from comfy_extras.nodes_custom_sampler import BasicScheduler, SamplerCustom

from ..modular import ConfigError, compat
from ..modular.core.errors import node_where
from ..modular.core.state import copy_value
from ..modular.sampling import (DENOISE_NO_BLOCKS_HINT, HostValues, continued_schedule, is_denoise_loop, plan_denoise,
                                provided_in_loop, resumable, stopped_at)
from ..modular.state_files import Autosave
from . import host
from .names import NODE_PREFIXES
from .factory import BlockSocketsNode, attached_blocks, block_sockets, make_node
from .state_files import STATES_PREFIX, new_state_file, shown_name
from .widgets import STATE_TYPE

log = logging.getLogger("modular_loops")

CATEGORY = "Modular Loops/sampling"


def denoise_sampler(plan, schedule_so_far=None, start_step=0, resume=None, out=None, save=None) -> comfy.samplers.KSAMPLER:
    """A KSAMPLER whose sampler function runs the checked denoise loop `plan` (`modular.sampling.plan_denoise`).

    To run part of a schedule (KSampler's start / end step): `schedule_so_far` is the whole schedule up to the end
    step (ComfyUI hands the sampler `schedule_so_far[start_step:]`), so steps keep their numbers. `resume`: the
    state a run stopped with (its latents, a step block's history, how many noise draws it took), which this run
    continues exactly from the sigmas it is given. `save`: (every, filename prefix, node id) to keep where the loop
    stands in a state file (`Autosave`). The final state is left in `out["state"]`."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        # model: ComfyUI's KSamplerX0Inpaint (inpaint blending) around the guider around the model; x: the
        # noised latent at sigmas[0] (k-diffusion's name for it).
        base = model.inner_model.inner_model
        extra_args = dict(extra_args or {})
        channels = base.latent_format.latent_channels
        if x.ndim >= 2 and x.shape[1] != channels:
            raise ConfigError(
                f"{plan.label}: the latent has {x.shape[1]} channels but the model ({type(base).__name__}) works on "
                f"{channels}; use a latent made for this model (its VAE, or Empty Latent Image)")

        initial, latents, drawn = None, x, 0
        whole, first = (schedule_so_far if schedule_so_far is not None else sigmas), start_step
        if resume is not None:  # the state's own x: ComfyUI's LATENT round trip (process_latent_in) is not exact
            whole, first = continued_schedule(resume, sigmas, plan.label)
            initial = on_device(resume, x)
            latents = initial.get("latents")
            if getattr(latents, "shape", None) != x.shape:
                raise ConfigError(f"{plan.label}: the state's latents are {tuple(getattr(latents, 'shape', ()))}, "
                                      f"the latent given is {tuple(x.shape)}: resume with a latent of the same size")
            drawn = int(initial.get("noise_draws") or 0)
            restore_inpaint_noise(model, initial.get("noise"), plan.label)
        noise = CountedNoise(host_noise_sampler(base, x, extra_args.get("seed"), flow := is_flow(base)), skip=drawn)

        def kept(state, copy=True):  # what a state file holds of a state (the runner recorded where it stopped)
            state = resumable(state, copy)
            state.set("noise_draws", noise.count)
            return state

        autosave = None
        if save is not None:
            every, prefix, node = save
            autosave = Autosave(every, lambda: new_state_file(prefix)[0], label=plan.label,
                                written=lambda position, path: host.tell_node(
                                    node, f"step {position} saved: {shown_name(path)}"))
        callbacks = denoise_callbacks(sigmas, callback)
        if autosave is not None:
            callbacks["step_done"] = lambda position, snapshot: autosave.step_done(
                position, lambda: kept(snapshot(), copy=False))
        hooks = host.step_hooks(**callbacks)
        values = HostValues(
            latents=latents, sigmas=whole, denoiser=model, denoiser_kwargs=extra_args, noise_seed=extra_args.get("seed"),
            noise_sampler=noise, flow_matching=flow, latent_image=getattr(model, "latent_image", None),
            noise=getattr(model, "noise", None), start_step=first)
        try:
            with host.failed_block_reported():
                result = plan.run(values, hooks, device=x.device, state=initial)
        except BaseException:
            if autosave is not None:  # Interrupt or an error: the last finished step, kept
                saved_last(autosave, plan.label)
            raise
        final = kept(result.state, copy=False)  # this run's own state: no copy
        if autosave is not None:
            autosave.finish()
        if out is not None:
            out["state"] = final
        return result.state.get("latents")

    return comfy.samplers.KSAMPLER(sample)


def restore_inpaint_noise(model, kept, label):
    """Give ComfyUI's inpaint wrapper (`KSamplerX0Inpaint`, which noises the region an inpaint mask keeps with the
    run's noise at every model call) the noise of the run a state stopped with: a resumed run is sampled without
    adding noise (its x comes from the state), so ComfyUI hands the wrapper zeros. The state keeps it anyway
    (`HostValues.noise`), and this run's state keeps it on for the next resume."""
    import torch

    if not torch.is_tensor(kept) or not hasattr(model, "noise"):
        return
    if torch.is_tensor(model.noise) and tuple(kept.shape) != tuple(model.noise.shape):
        raise ConfigError(f"{label}: the state's noise is {tuple(kept.shape)}, the latent given is "
                              f"{tuple(model.noise.shape)}: resume with a latent of the same size")
    like = model.noise if torch.is_tensor(model.noise) else kept
    model.noise = kept.to(device=like.device, dtype=like.dtype)


def denoise_callbacks(sigmas, callback):
    """The step hooks that feed ComfyUI's sampler callback (progress bar, x0 previews) what its own samplers give it
    for step i: x before the step, sigma, the x0 prediction; none without a callback."""
    if callback is None:
        return {}
    step_x = {}

    def step_start(i, block_state):
        step_x[i] = block_state.latents

    def payload(done, block_state):  # after `done` steps of this run: step i of ComfyUI's sigmas
        i = done - 1
        x_i = step_x.pop(i, block_state.latents)
        return {"x": x_i, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i],
                "denoised": getattr(block_state, "denoised", x_i)}

    return {"progress": lambda done, total, p: callback(p), "preview": payload, "step_start": step_start}


def saved_last(autosave, label):
    """After an Interrupt or an error: write the last finished step; a failure to write is logged, not raised (the
    run's own error is the one to report)."""
    try:
        autosave.finish()
    except Exception as e:  # noqa: BLE001
        log.error("[Modular Loops] %s: could not save the last finished step: %s", label, e)
    else:
        if autosave.file is not None:
            log.warning("[Modular Loops] %s: stopped; step %s is saved in %s (Load State, then resume from it)",
                        label, autosave.saved_at, shown_name(autosave.file))


def is_flow(base) -> bool:
    return isinstance(base.model_sampling, comfy.model_sampling.CONST)


class CountedNoise:
    """A host noise sampler that counts its draws (a resumable state records them) and first skips `skip` draws (a
    resumed run takes up the stream where the saved run left it)."""

    def __init__(self, draw, skip=0):
        self.draw, self.skip, self.count = draw, skip, skip

    def __call__(self, sigma, sigma_next):
        while self.skip:
            self.draw(sigma, sigma_next)
            self.skip -= 1
        self.count += 1
        return self.draw(sigma, sigma_next)


def on_device(state, like):
    """A copy of `state` with its tensors on `like`'s device (a loaded state is on the CPU): one copy per tensor,
    made by the move itself where it moves."""
    import torch

    def moved(value):
        if not torch.is_tensor(value):
            return copy_value(value)
        there = value.to(like.device)
        return there.clone() if there is value else there

    return compat.map_state(state, moved)


def host_noise_sampler(base, x, seed, flow):
    """ComfyUI's own ancestral noise stream for this run, as its samplers make it: `default_noise_sampler(x, seed)`
    (how it seeds changed between versions; that is why it is ComfyUI's), for flow models times the model's
    `noise_scale` (ComfyUI >= 0.33 scales the RF samplers' noise by it; 1 for every model but a few)."""
    draw = comfy.k_diffusion.sampling.default_noise_sampler(x, seed=seed)
    scale = getattr(base.model_sampling, "noise_scale", 1.0) if flow else 1.0
    if scale == 1.0:
        return draw
    return lambda sigma, sigma_next: draw(sigma, sigma_next) * scale


class DenoiseLoopNode(BlockSocketsNode):
    """What both sampler nodes share: the loop's own inputs, the block sockets, building the SAMPLER."""

    NO_BLOCKS_HINT = DENOISE_NO_BLOCKS_HINT

    @classmethod
    def loop_inputs(cls):
        required, optional = cls.declared_inputs()
        return required, {**optional, **block_sockets()}

    @staticmethod
    def save_inputs():
        """The inputs that keep where the loop stands in a state file while it runs (both nodes)."""
        return {
            "save_every": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": (
                "0: off. Every N steps, write where the loop stands to a state file in the output folder, and once "
                "more when the loop stops (at its end, on Interrupt, on an error) with the last finished step: an "
                "Interrupt or a crash loses at most N steps. Resume it with Load State.")}),
            "save_prefix": ("STRING", {"default": f"{STATES_PREFIX}_autosave",
                                       "tooltip": "Folder and name of the file inside the output folder (one file per run)."}),
        }

    def make_sampler(self, unique_id, kwargs, save_every=0, save_prefix=None, **options):
        """The SAMPLER (`options`: those of `denoise_sampler`), its blocks checked here: before the model loads, not
        at step 0."""
        if save_every:
            prefix = save_prefix or f"{STATES_PREFIX}_autosave"
            try:
                new_state_file(prefix)  # ComfyUI's own check of the name, before the run rather than at step N
            except Exception as e:
                raise ConfigError(f"{node_where(self.ENTRY.name, unique_id)}: save_prefix {prefix!r}: "
                                      f"{str(e).strip('* ')}") from e
            options["save"] = (save_every, prefix, unique_id)
        given, components = self.given(kwargs)
        with host.failed_block_reported():
            plan = plan_denoise(self.ENTRY.cls, attached_blocks(kwargs), given, components,
                                node_where(self.ENTRY.name, unique_id))
        return denoise_sampler(plan, **options), plan.label


class SamplerNode(DenoiseLoopNode):
    """The denoise loop as a SAMPLER, for SamplerCustomAdvanced (or any node taking a SAMPLER)."""

    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.loop_inputs()
        resume = {"state": (STATE_TYPE, {"tooltip": (
            "A state this loop stopped with (Load State of its save_every file): resume it. Give the rest of the same "
            "schedule: SplitSigmas at the step it stopped at, its low_sigmas. The same noise seed continues the run "
            "exactly; another seed branches a variation.")})}
        return {"required": required, "optional": {**optional, **cls.save_inputs(), **resume},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def build(self, unique_id=None, state=None, save_every=0, save_prefix=None, **kwargs):
        return (self.make_sampler(unique_id, kwargs, save_every, save_prefix, resume=state)[0],)


class KSamplerNode(DenoiseLoopNode):
    """The denoise loop with KSampler's inputs: model, prompts, latent, seed, steps, cfg, scheduler, denoise."""

    RETURN_TYPES = ("LATENT", "LATENT", STATE_TYPE)
    RETURN_NAMES = ("output", "denoised_output", "state")
    OUTPUT_TOOLTIPS = ("The denoised latent.", "The x0 prediction of the last step.",
                       "Where the loop stopped: save it (Save State) and resume from it (state, start_step).")
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.loop_inputs()
        own = {
            "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "The random seed used for creating the noise."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of denoising steps."}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "How the sigmas are spaced."}),
            "positive": ("CONDITIONING", {"tooltip": "What to include in the image."}),
            "negative": ("CONDITIONING", {"tooltip": "What to exclude from the image."}),
            "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the schedule to run; below 1 keeps part of the input (img2img)."}),
        }
        resume = {
            "start_step": ("INT", {"default": 0, "min": 0, "max": 10000,
                                   "tooltip": "The first step to run (as KSamplerAdvanced); with `state`, where it stopped."}),
            "end_step": ("INT", {"default": 10000, "min": 0, "max": 10000, "tooltip": "Stop before this step."}),
            "state": (STATE_TYPE, {"tooltip": (
                "A state this loop stopped with (its state output, or Load State): resume it from start_step. The same "
                "seed continues the run exactly; another seed branches a variation.")}),
        }
        return {"required": {**own, **required}, "optional": {**optional, **resume, **cls.save_inputs()},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def sample(self, model, seed, steps, cfg, scheduler, positive, negative, latent_image, denoise, unique_id=None,
               start_step=0, end_step=10000, state=None, save_every=0, save_prefix=None, **kwargs):
        """KSampler's sigmas (BasicScheduler) and ComfyUI's own SamplerCustom with this loop as its SAMPLER; steps
        start_step .. end_step of them, continuing `state` when given."""
        label = node_where(self.ENTRY.name, unique_id)
        sigmas = schedule(model, scheduler, steps, denoise)
        if len(sigmas) < 2:
            raise ConfigError(f"{label}: zero steps: denoise {denoise} with {steps} steps leaves nothing to run")
        end = min(end_step, len(sigmas) - 1)
        if start_step >= end:
            raise ConfigError(f"{label}: start_step {start_step} leaves no step before end_step {end} "
                                  f"({len(sigmas) - 1} steps in all)")
        if state is not None:
            position = stopped_at(state)
            if position is not None and position != start_step:
                raise ConfigError(f"{label}: the state stopped at step {position}; set start_step to {position} to "
                                      f"resume it (it is {start_step})")
        out = {}
        sampler, _ = self.make_sampler(unique_id, kwargs, save_every, save_prefix, schedule_so_far=sigmas[: end + 1],
                                       start_step=start_step, resume=state, out=out)
        ran = SamplerCustom().sample(model, state is None, seed, cfg, positive, negative, sampler,
                                     sigmas[start_step: end + 1], latent_image)
        return (ran[0], ran[1], out["state"])


def schedule(model, scheduler, steps, denoise):
    """The sigmas KSampler uses for these steps and denoise: ComfyUI's BasicScheduler computes them."""
    return BasicScheduler().get_sigmas(model, scheduler, steps, denoise)[0]


def entry_nodes(entry, registry) -> dict | None:
    """{node id: (class, display name)} of the two nodes of a denoise loop; None for any other entry."""
    if not is_denoise_loop(entry):
        return None
    hidden = provided_in_loop(registry, entry)
    return {NODE_PREFIXES[kind] + entry.name: (make_node(entry, base, NODE_PREFIXES[kind] + entry.name, hidden),
                                                f"{entry.name} {shown}")
            for kind, base, shown in (("sampler", SamplerNode, "Sampler"), ("ksampler", KSamplerNode, "KSampler"))}
