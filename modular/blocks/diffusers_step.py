"""A step block that lets a diffusers scheduler advance the latents on the host's sigmas.

The scheduler is made once per run (at the run's first step) and kept on the block state. Conversions, all
done here:
- Schedule: `set_timesteps(len(sigmas) - 1)`, then the scheduler's `sigmas` are replaced by the
  host's (ComfyUI's) and stepping starts at the run's first step, so step i goes from sigmas[i] to sigmas[i + 1]
  whatever the scheduler's own spacing would have been. Its timesteps only count steps.
- Sample space: ComfyUI's latents are `x = x0 + sigma * noise` (eps / v models). Karras-style
  schedulers (Euler, Euler ancestral, LMS) step that x directly. VP schedulers (DPM-Solver++, UniPC)
  step `alpha_t * x0 + sigma_t * noise` with `alpha_t = 1 / sqrt(sigma^2 + 1)`: the block
  scales x by alpha_t before the step and back by 1 / alpha_next after it. For flow models
  (`x = (1 - sigma) * x0 + sigma * noise`) FlowMatchEuler steps x directly and the VP schedulers run
  with `use_flow_sigmas`, where the scale is 1.
- Model output: x0 itself (`prediction_type="sample"`) where the scheduler takes it, else epsilon
  `(x - x0) / sigma`, or the flow velocity `(x - x0) / sigma` for FlowMatchEuler.
- Resume: the running loop steps with live objects (the scheduler, its generator), kept on the block state under
  names no block declares, so they never leave the loop. After every step the block writes what they carry as
  plain values (`sampling.STEP_HISTORY`: the scheduler's class, config and stepping numbers as JSON, its history
  tensors, the generator's `get_state()`), so a state that leaves the loop (a snapshot, the final state, a state
  file) holds only those. A run that starts at step i > 0 from such a state rebuilds both: the scheduler with
  diffusers' own `from_config` and `start`, then its stepping attributes (`compat.SCHEDULER_STEPPING`, the one list
  of them); the generator from its state when the noise seed is the saved one (another seed: a fresh generator
  seeded with it, a variation from step i). Starting at i > 0 with no such state starts the scheduler there.
Schedulers that call the model twice per step (Heun, KDPM2, DPM-Solver SDE) or step on discrete
training timesteps (DDIM, DDPM, PNDM) do not fit one prediction per step and are not offered; DEIS
gives NaN at the final sigma 0.
"""

import importlib
import inspect
import json

import torch
from diffusers.modular_pipelines import InputParam, ModularPipelineBlocks, OutputParam

from ..core import compat
from ..sampling import GENERATOR_STATE, SCHEDULER_STATE, SCHEDULER_TENSORS, seeded_generator
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


def start(scheduler, sigmas, first: int = 0):
    """Make `scheduler` step down `sigmas` (the host's schedule), from step `first` on (its sigmas[first])."""
    steps = len(sigmas) - 1
    scheduler.set_timesteps(steps)
    own = scheduler.sigmas
    scheduler.sigmas = sigmas.detach().to(device=own.device, dtype=torch.float32)
    if len(scheduler.timesteps) != steps:  # e.g. a scheduler that drops or repeats one: count steps only
        scheduler.timesteps = torch.arange(steps, 0, -1, dtype=scheduler.timesteps.dtype)
    scheduler.set_begin_index(first)
    if hasattr(scheduler, "is_scale_input_called"):
        scheduler.is_scale_input_called = True  # the host's model scales its own input
    compat.set_scheduler_stepping(scheduler, {"_step_index": None})  # its first step takes the begin index


def config_of(scheduler) -> dict:
    """The scheduler's config as JSON values (what diffusers' `from_config` makes it again from)."""
    return {k: v for k, v in json.loads(scheduler.to_json_string()).items() if not k.startswith("_")}


def plain_scheduler(scheduler, noise_seed=None) -> dict:
    """The state values a scheduler is kept as (no object): `SCHEDULER_STATE`, JSON: its class, config, the noise
    seed of its generator and its stepping numbers, with the layout of its history tensors; and one tensor (or None)
    per `SCHEDULER_TENSORS` name: a tensor as it is, a list of tensors stacked (its None entries marked in the
    layout)."""
    name = type(scheduler).__name__
    layout, tensors = {}, {value_name: None for value_name in SCHEDULER_TENSORS.values()}
    for attr, value in compat.scheduler_stepping(scheduler).items():
        if compat.SCHEDULER_STEPPING[attr] == "number" or value is None:
            layout[attr] = {"value": value.item() if hasattr(value, "item") else value}
        elif torch.is_tensor(value):
            layout[attr] = {"tensor": True}
            tensors[SCHEDULER_TENSORS[attr]] = value
        else:  # a list of tensors (and None)
            held = [v for v in value if v is not None]
            if any(not torch.is_tensor(v) or v.shape != held[0].shape or v.dtype != held[0].dtype for v in held):
                raise TypeError(f"{name}.{attr} holds values that are not tensors of one shape and dtype; "
                                f"a state cannot keep it")
            layout[attr] = {"items": [v is not None for v in value]}
            tensors[SCHEDULER_TENSORS[attr]] = torch.stack(held) if held else None
    plain = {"class": name, "config": config_of(scheduler), "noise_seed": noise_seed, "stepping": layout}
    return {SCHEDULER_STATE: plain, **tensors}


def rebuilt_scheduler(plain: dict, tensors: dict, configured, sigmas, i: int, device):
    """The scheduler a state kept (`plain_scheduler`'s values), made again to take step `i` of `sigmas`: diffusers'
    `from_config`, `start`, then its stepping attributes. `configured`: the scheduler this block's widgets make, which
    the kept one must match (its class, and the config options both know)."""
    name, kept_name = type(configured).__name__, plain.get("class")
    if kept_name != name:
        raise ValueError(f"the state to resume was stepped by {kept_name}; this block steps with {name}: choose "
                         f"{kept_name} to resume it")
    kept, wanted = plain.get("config") or {}, config_of(configured)
    differ = sorted(k for k in set(kept) & set(wanted) if kept[k] != wanted[k])
    if differ:
        raise ValueError(f"the state's {name} was configured with "
                         f"{', '.join(f'{k}={kept[k]!r}' for k in differ)}, this block's with "
                         f"{', '.join(f'{k}={wanted[k]!r}' for k in differ)}: give the same scheduler_config to resume it")
    scheduler = type(configured).from_config(kept)
    start(scheduler, sigmas)
    values = {}
    for attr, entry in (plain.get("stepping") or {}).items():
        held = tensors.get(SCHEDULER_TENSORS.get(attr))
        if "value" in entry:
            values[attr] = entry["value"]
        elif "tensor" in entry:
            values[attr] = held.to(device)
        else:
            rows = iter(held.to(device) if held is not None else ())
            values[attr] = [next(rows) if present else None for present in entry["items"]]
    compat.set_scheduler_stepping(scheduler, values)
    at = values.get("_step_index")
    if at != i:
        raise ValueError(f"the state's {name} stopped at step {at}, but the loop resumes it at step {i}")
    return scheduler


# The live objects, on the block state only: no block declares these names, so they never leave the loop.
LIVE_SCHEDULER, LIVE_GENERATOR = "_live_diffusers_scheduler", "_live_noise_generator"


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
            *self.kept_params(InputParam),
        ]

    @staticmethod
    def kept_params(param):
        """The plain values the scheduler and its generator are kept as: written after every step, read back by a
        run that resumes a state."""
        return [param(SCHEDULER_STATE, type_hint=dict,
                      description="The scheduler where the loop stands: its class, config and stepping numbers."),
                *[param(value_name, type_hint=torch.Tensor, description=f"The scheduler's {attr}, kept.")
                  for attr, value_name in SCHEDULER_TENSORS.items()],
                param(GENERATOR_STATE, type_hint=torch.Tensor,
                      description="The state of a stochastic scheduler's generator (torch.Generator.get_state()).")]

    @property
    def intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor), *self.kept_params(OutputParam)]

    def __call__(self, components, block_state, i, t):
        x, denoised, sigmas = block_state.latents, block_state.denoised, block_state.sigmas
        name = block_state.scheduler
        if getattr(block_state, LIVE_SCHEDULER, None) is None:  # this run's first step (0, or where it resumes)
            scheduler, generator = live_objects(block_state, i, x)
            setattr(block_state, LIVE_SCHEDULER, scheduler)
            setattr(block_state, LIVE_GENERATOR, generator)
        scheduler, generator = getattr(block_state, LIVE_SCHEDULER), getattr(block_state, LIVE_GENERATOR)
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
        kwargs = {"generator": generator} if takes_generator(scheduler) else {}
        prev = scheduler.step(model_output, scheduler.timesteps[i], x * scale, return_dict=False, **kwargs)[0]
        block_state.latents = (prev / scale_next).to(x.dtype)
        for value_name, value in plain_scheduler(scheduler, getattr(block_state, "noise_seed", None)).items():
            setattr(block_state, value_name, value)
        setattr(block_state, GENERATOR_STATE, generator.get_state() if generator is not None else None)
        return components, block_state


def takes_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


def live_objects(block_state, i, x):
    """(scheduler, generator) for a run's first step `i`: made from the block's widgets and started at step i, or, when
    i > 0 and the state keeps a scheduler (a run that resumes it), both made again from what it keeps. The generator
    (diffusers' schedulers take a `torch.Generator`, not a noise sampler; None when the scheduler takes none or the
    run is unseeded) is seeded with the sampler's seed, or, resuming with the seed it was saved with, set to the
    saved state."""
    sigmas = block_state.sigmas
    configured = make_scheduler(block_state.scheduler, block_state.scheduler_config, block_state.flow_matching)
    plain = getattr(block_state, SCHEDULER_STATE, None)
    seed = getattr(block_state, "noise_seed", None)
    resuming = i > 0 and plain is not None
    if resuming:
        tensors = {value_name: getattr(block_state, value_name, None) for value_name in SCHEDULER_TENSORS.values()}
        scheduler = rebuilt_scheduler(plain, tensors, configured, sigmas, i, x.device)
    else:
        scheduler = configured
        start(scheduler, sigmas, first=i)
    generator = seeded_generator(x.device, seed) if takes_generator(scheduler) else None
    saved = getattr(block_state, GENERATOR_STATE, None)
    if generator is not None and resuming and saved is not None and plain.get("noise_seed") == seed:
        try:
            generator.set_state(saved.to("cpu"))
        except RuntimeError as e:  # a CPU generator's state resumed on a GPU, or the other way round
            raise ValueError(f"the state's noise generator cannot be set on {x.device} ({e}); resume it on the kind "
                             f"of device it was saved on") from e
    return scheduler, generator
