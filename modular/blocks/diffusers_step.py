"""A step block that lets a diffusers scheduler advance the latents on the host's sigmas.

The scheduler is made once per run (at step 0) and kept in the shared block state. Conversions, all
done here:
- Schedule: `set_timesteps(len(sigmas) - 1)`, then the scheduler's `sigmas` are replaced by the
  host's (ComfyUI's) and stepping starts at index 0, so step i goes from sigmas[i] to sigmas[i + 1]
  whatever the scheduler's own spacing would have been. Its timesteps only count steps.
- Sample space: ComfyUI's latents are `x = x0 + sigma * noise` (eps / v models). Karras-style
  schedulers (Euler, Euler ancestral, LMS) step that x directly. VP schedulers (DPM-Solver++, UniPC)
  step `alpha_t * x0 + sigma_t * noise` with `alpha_t = 1 / sqrt(sigma^2 + 1)`: the block
  scales x by alpha_t before the step and back by 1 / alpha_next after it. For flow models
  (`x = (1 - sigma) * x0 + sigma * noise`) FlowMatchEuler steps x directly and the VP schedulers run
  with `use_flow_sigmas`, where the scale is 1.
- Model output: x0 itself (`prediction_type="sample"`) where the scheduler takes it, else epsilon
  `(x - x0) / sigma`, or the flow velocity `(x - x0) / sigma` for FlowMatchEuler.
Schedulers that call the model twice per step (Heun, KDPM2, DPM-Solver SDE) or step on discrete
training timesteps (DDIM, DDPM, PNDM) do not fit one prediction per step and are not offered; DEIS
gives NaN at the final sigma 0.
"""

import importlib
import inspect

import torch
from diffusers.modular_pipelines import InputParam, ModularPipelineBlocks, OutputParam

from ..sampling import seeded_generator
from .denoise import MODEL_NAME, denoised_param, flow_param, latents_param, sigmas_param

# name -> (space, model output) ; space: "karras" steps x as is, "vp" scales by alpha_t, "flow" as is.
SCHEDULERS = {
    "EulerDiscreteScheduler": ("karras", "sample"),
    "EulerAncestralDiscreteScheduler": ("karras", "epsilon"),
    "LMSDiscreteScheduler": ("karras", "sample"),
    "DPMSolverMultistepScheduler": ("vp", "sample"),
    "UniPCMultistepScheduler": ("vp", "sample"),
    "FlowMatchEulerDiscreteScheduler": ("flow", "velocity"),
}
FLOW_OK = ("FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")


def make_scheduler(name: str, config: dict | None, flow_matching: bool):
    """The named diffusers scheduler, configured for stepping on given sigmas."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler '{name}' is not one this block can drive; choose one of: {', '.join(SCHEDULERS)}")
    if flow_matching and name not in FLOW_OK:
        raise ValueError(
            f"{name} steps eps / v models (x = x0 + sigma * noise); this is a flow model: choose one of {', '.join(FLOW_OK)}")
    config = dict(config or {})
    space, output = SCHEDULERS[name]
    if output in ("sample", "epsilon"):
        config["prediction_type"] = output
    if flow_matching and space == "vp":
        config.update(use_flow_sigmas=True, prediction_type="sample")
    cls = getattr(importlib.import_module("diffusers"), name)
    known = set(inspect.signature(cls.__init__).parameters)
    unknown = sorted(k for k in config if k not in known)
    if unknown:
        raise ValueError(f"{name} has no config option(s) {', '.join(unknown)}")
    return cls(**config)


def start(scheduler, sigmas):
    """Make `scheduler` step from sigmas[0] down `sigmas` (the host's schedule), starting now."""
    steps = len(sigmas) - 1
    scheduler.set_timesteps(steps)
    own = scheduler.sigmas
    scheduler.sigmas = sigmas.detach().to(device=own.device, dtype=torch.float32)
    if len(scheduler.timesteps) != steps:  # e.g. a scheduler that drops or repeats one: count steps only
        scheduler.timesteps = torch.arange(steps, 0, -1, dtype=scheduler.timesteps.dtype)
    scheduler.set_begin_index(0)
    if hasattr(scheduler, "is_scale_input_called"):
        scheduler.is_scale_input_called = True  # the host's model scales its own input
    if hasattr(scheduler, "_step_index"):
        scheduler._step_index = None


class DiffusersSchedulerStep(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("Step with a diffusers scheduler on the loop's sigmas: pick the scheduler; `scheduler_config` (JSON) "
                "sets its options (e.g. {\"solver_order\": 3}). The block converts between the host's latents and "
                "the scheduler's sample space. Put it where a step block goes, after the prediction.")

    @property
    def inputs(self):
        return [
            latents_param(), denoised_param(), sigmas_param(), flow_param(),
            InputParam("noise_seed", type_hint=int, description="Seed of the sampler's noise."),
            InputParam("scheduler", type_hint=str, default="EulerDiscreteScheduler",
                       metadata={"choices": list(SCHEDULERS)}, description="The diffusers scheduler."),
            InputParam("scheduler_config", type_hint=dict, description="Options for the scheduler's constructor."),
        ]

    @property
    def intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor),
                OutputParam("diffusers_scheduler", description="The scheduler instance, kept across steps."),
                OutputParam("noise_generator", description="The seeded generator of a stochastic scheduler.")]

    def __call__(self, components, block_state, i, t):
        x, denoised, sigmas = block_state.latents, block_state.denoised, block_state.sigmas
        name = block_state.scheduler
        if i == 0 or getattr(block_state, "diffusers_scheduler", None) is None:
            block_state.diffusers_scheduler = make_scheduler(name, block_state.scheduler_config, block_state.flow_matching)
            start(block_state.diffusers_scheduler, sigmas)
        scheduler = block_state.diffusers_scheduler
        space, output = SCHEDULERS[name]
        sigma, sigma_next = sigmas[i], sigmas[i + 1]

        if output == "sample":
            model_output = denoised
        else:  # epsilon, or the flow velocity: the same expression in each space
            model_output = (x - denoised) / sigma
        scale = scale_next = 1.0
        if space == "vp" and not block_state.flow_matching:
            scale = 1 / (sigma ** 2 + 1) ** 0.5
            scale_next = 1 / (sigma_next ** 2 + 1) ** 0.5
        kwargs = {}
        generator = scheduler_generator(block_state, x)  # None when unseeded; kept in the state either way
        if "generator" in inspect.signature(scheduler.step).parameters:
            kwargs["generator"] = generator
        prev = scheduler.step(model_output, scheduler.timesteps[i], x * scale, return_dict=False, **kwargs)[0]
        block_state.latents = (prev / scale_next).to(x.dtype)
        return components, block_state


def scheduler_generator(block_state, x):
    """The generator a stochastic scheduler draws its noise from (diffusers' schedulers take a `torch.Generator`,
    not a noise sampler): made once per run, seeded with the sampler's seed (None: unseeded), kept in the state."""
    if getattr(block_state, "noise_generator", None) is None:
        block_state.noise_generator = seeded_generator(x.device, getattr(block_state, "noise_seed", None))
    return block_state.noise_generator
