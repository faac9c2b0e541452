"""diffusers' own pipelines: a local folder loaded as the family's `ModularPipeline` (the `components` every
shipped block takes), the components one run sees, and one pipeline step run on a state.

Loading is diffusers' own (`ModularPipeline.from_pretrained` + `load_components`) with the doors shut: files
from the folder only (`local_files_only`), weights from `.safetensors` only (`use_safetensors`, and a folder
whose model weights are only pickle files is refused before anything is read), and no code from the folder
(`trust_remote_code=False`: a folder that ships blocks of its own is refused by diffusers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import compat
from .errors import LoopConfigError, LoopError, loop_where
from .state import ValueSource, seed_state

INDEX_FILES = ("modular_model_index.json", "model_index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_SUFFIX = ".safetensors"
MODEL_LIBRARIES = ("diffusers", "transformers")


class PipelineLoadError(LoopError):
    """A model folder that cannot be loaded; the message names the folder and the problem."""


def _index(folder: Path) -> tuple[str, dict]:
    for name in INDEX_FILES:
        path = folder / name
        if path.is_file():
            try:
                return name, json.loads(path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise PipelineLoadError(f"{folder}: {name} is not valid JSON ({e})") from e
    raise PipelineLoadError(
        f"{folder}: not a diffusers model folder: it has no model_index.json (nor modular_model_index.json); "
        f"save one with `pipeline.save_pretrained(folder)`")


def check_folder(folder) -> dict:
    """Refuse, with the reason, a folder that is not a loadable local diffusers pipeline: no index file, a
    component subfolder missing, model weights only as pickle files. -> {component: subfolder}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineLoadError(f"{folder}: no such folder")
    index_name, index = _index(folder)
    components = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, (list, tuple)) or len(value) < 2 or value[0] is None:
            continue
        library = value[0]
        spec = value[2] if len(value) == 3 and isinstance(value[2], dict) else {}
        repo = spec.get("pretrained_model_name_or_path") or spec.get("repo")
        if repo not in (None, "", str(folder)) and not (folder / name).is_dir():
            raise PipelineLoadError(f"{folder}: component '{name}' is read from {repo!r}, not from this folder; "
                                    f"only local files are loaded")
        sub = folder / (spec.get("subfolder") or name)
        if not sub.is_dir():
            raise PipelineLoadError(f"{folder}: {index_name} names component '{name}', but its subfolder {sub.name}/ "
                                    f"is missing")
        if library in MODEL_LIBRARIES:
            files = [p for p in sub.rglob("*") if p.is_file()]
            pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
            if pickles and not any(p.suffix == SAFE_SUFFIX for p in files):
                raise PipelineLoadError(
                    f"{folder}: component '{name}' has weights only as pickle files ({', '.join(sorted(pickles))}), "
                    f"which are never loaded (they can run code); convert them to .safetensors")
        components[name] = sub
    return components


def load_pipeline(folder, dtype=None):
    """The family's ModularPipeline for a local folder, its components loaded (diffusers' own loading)."""
    import torch
    from diffusers.modular_pipelines import ModularPipeline

    folder = Path(folder)
    components = check_folder(folder)
    try:
        pipeline = ModularPipeline.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as e:
        raise PipelineLoadError(f"{folder}: diffusers could not make a pipeline of it: {type(e).__name__}: {e}") from e
    names = [n for n in components if n in pipeline._component_specs]  # what the folder has ([null, null]: nothing)
    models = [n for n in names if _is_model(pipeline._component_specs[n].type_hint)]
    kwargs = {"local_files_only": True, "use_safetensors": {n: True for n in models}}
    if dtype is not None:
        kwargs["dtype"] = {"default": dtype} if isinstance(dtype, torch.dtype) else dtype
    pipeline.load_components(names=names, **kwargs)
    missing = [n for n in components if n in pipeline._component_specs and getattr(pipeline, n, None) is None]
    if missing:
        raise PipelineLoadError(f"{folder}: could not load component(s) {', '.join(missing)} (see the log for why)")
    return pipeline


def _is_model(type_hint) -> bool:
    import torch

    return isinstance(type_hint, type) and issubclass(type_hint, torch.nn.Module)


RUN_COMPONENTS = ("scheduler", "guider")


class RunComponents:
    """The components one run sees: the pipeline's, except its scheduler and guider, which keep per-run state
    (`set_timesteps`, the guider's step): those are the run's own, carried in the pipeline state from node to
    node as diffusers' one pipeline call keeps them (`compat.carried`), fresh from the pipeline's config where
    the state has none yet, or `given` (e.g. a guider node's). The pipeline itself, a cached node output shared
    by runs, is never changed."""

    def __init__(self, pipeline, given: dict | None = None):
        self._pipeline = pipeline
        self._given = {k: v for k, v in (given or {}).items() if v is not None}
        self._own = dict(self._given)
        self._hooks_before = {name: hook_names(model) for name, model in self._denoisers()}

    def _denoisers(self):
        for name in DENOISERS:
            model = getattr(self._pipeline, name, None)
            if model is not None and hasattr(model, "modules"):
                yield name, model

    def bind_state(self, state):
        """Take the run's scheduler and guider from `state` (the one this node runs on), and carry them on in it."""
        carried = compat.carried(state)
        for name in RUN_COMPONENTS:
            if name in self._given:
                carried[name] = self._given[name]
            elif carried.get(name) is None:
                base = getattr(self._pipeline, name, None)
                if base is not None and hasattr(type(base), "from_config"):
                    carried[name] = type(base).from_config(base.config)
            if carried.get(name) is not None:
                self._own[name] = carried[name]

    def guider_for(self, state):
        """The guider a run on `state` will use (given, carried in the state, or the pipeline's)."""
        return self._given.get("guider") or compat.carried(state).get("guider") or getattr(self._pipeline, "guider", None)

    def __getattr__(self, name):
        own = self.__dict__.get("_own", {})
        if name in own:
            return own[name]
        return getattr(self.__dict__["_pipeline"], name)

    def cleanup(self):
        """Remove the hooks put on the denoising model during this node's run (a guider's: PAG, SLG, SEG install
        them per step and remove them themselves only when the step ends normally), also after a failed step:
        the pipeline is shared by later runs."""
        for name, model in self._denoisers():
            added = hook_names(model) - self._hooks_before.get(name, set())
            if added:
                from diffusers.hooks import HookRegistry

                registry = HookRegistry.check_if_exists_or_initialize(model)
                for hook in added:
                    registry.remove_hook(hook, recurse=True)


DENOISERS = ("unet", "transformer")


def hook_names(model) -> set:
    """The names of the diffusers hooks (`diffusers.hooks.HookRegistry`) on `model` and its submodules."""
    names = set()
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            names |= set(registry.hooks)
    return names


@dataclass(frozen=True)
class StepResult:
    state: object
    notes: list


def run_step(block_cls, values: dict, state=None, components=None, node=None) -> StepResult:
    """Run one pipeline block (a step around a loop) on a copy of `state`, seeded with the `values` given on its
    node (node values > incoming state > defaults, as for loops)."""
    label = loop_where(block_cls.__name__, node)
    block = block_cls()
    seeded, notes = seed_state(block, [ValueSource(f"the step {label}", block.inputs, dict(values), node)],
                               initial=state, loop_label=label)
    if hasattr(components, "bind_state"):
        components.bind_state(seeded)
    try:
        _, out = block(components, seeded)
    except LoopError:
        raise
    except Exception as e:
        raise LoopError(f"{label}: the step failed: {type(e).__name__}: {e}", block_node=node) from e
    return StepResult(out, notes)


def latent_scaling(pipeline) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of the pipeline's VAE: a diffusers loop's latents are
    `(vae_latent - shift) * scaling`; a host's LATENT (ComfyUI's) holds the VAE latent itself."""
    vae = getattr(pipeline, "vae", None)
    if vae is None:
        raise LoopConfigError("this pipeline has no VAE: its latents' scaling is unknown")
    config = vae.config
    return float(getattr(config, "scaling_factor", None) or 1.0), float(getattr(config, "shift_factor", None) or 0.0)


def to_host_latent(pipeline, latents):
    """A diffusers loop's latents as the VAE latent a host's LATENT holds (ComfyUI's VAE Decode, KSampler)."""
    if latents.ndim not in (4, 5):
        raise LoopConfigError(f"the state's latents have shape {tuple(latents.shape)}: this family packs them "
                              f"(e.g. Flux); decode them with its decode step")
    scaling, shift = latent_scaling(pipeline)
    return latents / scaling + shift


def from_host_latent(pipeline, samples):
    """A host's VAE latent as a diffusers loop's latents."""
    scaling, shift = latent_scaling(pipeline)
    return (samples - shift) * scaling


def check_guidance(guider, state, label: str):
    """A clear error, before the loop, for a guider that guides with an unconditional (negative) prediction when
    the state holds the prompt's embeddings but no negative ones (diffusers' own loops crash deep inside the
    model there, SDXL's, or silently run the positive twice, SD3's): the text encoder step had no negative prompt
    where its family needs one, or ran with a guider that needed none."""
    if guider is None or getattr(guider, "num_conditions", 1) <= 1:
        return
    values = compat.state_values(state)
    positives = [k for k in values if k.endswith("prompt_embeds") and not k.startswith("negative_")]
    missing = [k for k in positives if values.get(f"negative_{k}") is None]
    if positives and len(missing) == len(positives):
        raise LoopConfigError(
            f"{label}: the guider ({type(guider).__name__}) needs negative embeddings, but the state has "
            f"{', '.join(missing)} and no {', '.join('negative_' + k for k in missing)}: give the text encoder step a "
            f"negative prompt (some families encode none without one), and the guider this loop uses (one that "
            f"needs none, e.g. with a guidance scale of 1, encodes none)")
