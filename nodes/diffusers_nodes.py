"""Nodes around diffusers' own pipelines: Load Diffusers Pipeline (a local folder of `models/diffusers/`),
one node per diffusers guider (its constructor's parameters as widgets), and State To Image (a decoded
`images` value as ComfyUI's IMAGE). ComfyUI's folder list is read only when the loader is listed or run."""

from __future__ import annotations

import inspect
import json
import os

from ..modular import NOT_GIVEN, LoopConfigError, copy_state, parse_json_widget
from ..modular.pipelines import INDEX_FILES, from_host_latent, load_pipeline, to_host_latent
from ..modular.shipped import scan_guiders
from .state_nodes import value_named
from .values import GUIDER_TYPE, PIPELINE_TYPE, SCHEDULER_TYPE, STATE_TYPE

CATEGORY = "Modular Loops/diffusers"
DTYPES = ("default", "float32", "float16", "bfloat16")
DEVICES = ("default", "cpu")  # default: ComfyUI's device, through its model management
MODELS_FOLDER = "diffusers"  # ComfyUI's folder for diffusers-format models (and its extra_model_paths entries)


def pipeline_folders() -> dict[str, str]:
    """{name shown: path} of the diffusers pipelines in ComfyUI's models/diffusers folders."""
    import folder_paths

    found = {}
    for root in folder_paths.get_folder_paths(MODELS_FOLDER):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in INDEX_FILES):
                found.setdefault(name, path)
    return found


class LoadDiffusersPipeline:
    DESCRIPTION = ("Loads a diffusers pipeline folder from models/diffusers/ (as `save_pretrained` writes it: "
                   "model_index.json and a subfolder per component) as the family's modular pipeline, for the "
                   "diffusers step and loop nodes. Local files only, weights from .safetensors only, no code from "
                   "the folder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(pipeline_folders()) or ["(no pipeline in models/diffusers)"]
        return {"required": {"folder": (names, {"tooltip": "A folder of models/diffusers/."}),
                             "dtype": (list(DTYPES), {"default": "default", "tooltip": "The weights' dtype."})},
                "optional": {"device": (list(DEVICES), {"default": "default", "tooltip": (
                                 "default: ComfyUI's device (its model management loads the modules there when a node "
                                 "uses them and offloads them when others need the room); cpu: always on the CPU.")})}}

    def load(self, folder, dtype, device="default"):
        import torch

        from . import host

        path = pipeline_folders().get(folder)
        if path is None:
            raise LoopConfigError(f"Load Diffusers Pipeline: no pipeline folder '{folder}' in models/diffusers/")
        pipeline = load_pipeline(path, None if dtype == "default" else getattr(torch, dtype))
        host.set_pipeline_device(pipeline, None if device == "default" else torch.device(device))
        return (pipeline,)


class GuiderConfig:
    """A guider node's output: the class and its parameters; `make()` builds a fresh instance for each run."""

    def __init__(self, cls, params: dict):
        self.cls, self.params = cls, dict(params)

    def make(self):
        return self.cls(**self.params)


class GuiderNode:
    """One of diffusers' guiders, its constructor's parameters as widgets (JSON for the others)."""

    GUIDER = None  # a modular.shipped.ShippedGuider
    RETURN_TYPES = (GUIDER_TYPE,)
    RETURN_NAMES = ("guider",)
    FUNCTION = "make"
    CATEGORY = f"{CATEGORY}/guiders"

    @classmethod
    def parameters(cls):
        return [p for name, p in inspect.signature(cls.GUIDER.load().__init__).parameters.items()
                if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @classmethod
    def INPUT_TYPES(cls):
        required = {}
        for p in cls.parameters():
            d = p.default
            if isinstance(d, bool):
                required[p.name] = ("BOOLEAN", {"default": d})
            elif isinstance(d, int):
                required[p.name] = ("INT", {"default": d, "min": -2**31, "max": 2**31 - 1})
            elif isinstance(d, float):
                required[p.name] = ("FLOAT", {"default": d, "min": -1e9, "max": 1e9, "step": 0.01, "round": False})
            elif isinstance(d, str):
                required[p.name] = ("STRING", {"default": d})
            else:
                shown = "required" if d is inspect.Parameter.empty else json.dumps(d, default=repr)
                required[p.name] = ("STRING", {"default": "", "tooltip": f"JSON; empty: {shown}"})
        return {"required": required}

    def make(self, **kwargs):
        params = {}
        for p in self.parameters():
            value = kwargs.get(p.name)
            if isinstance(value, str) and not isinstance(p.default, str):
                try:
                    value = parse_json_widget(value)
                except ValueError as e:
                    raise LoopConfigError(f"{self.GUIDER.name}: {p.name} is not valid JSON ({e})") from e
                if value is NOT_GIVEN:
                    continue
            params[p.name] = value
        config = GuiderConfig(self.GUIDER.load(), params)
        config.make()  # a bad parameter is this node's error, now, not the loop's
        return (config,)


def scheduler_names() -> list[str]:
    """diffusers' scheduler classes, by name, from its import table (nothing imported)."""
    import diffusers

    return sorted(n for n in getattr(diffusers, "_import_structure", {}).get("schedulers", []) if n.endswith("Scheduler"))


class SchedulerConfig:
    """A scheduler node's output: `make(pipeline)` builds the scheduler from the pipeline's scheduler config (as
    diffusers swaps schedulers: `Cls.from_config(pipe.scheduler.config)`), with the node's options on top."""

    def __init__(self, name: str, options: dict):
        self.name, self.options = name, dict(options)

    def make(self, pipeline=None):
        import diffusers

        cls = getattr(diffusers, self.name)
        base = getattr(pipeline, "scheduler", None)
        return cls.from_config(base.config, **self.options) if base is not None else cls(**self.options)


class DiffusersScheduler:
    DESCRIPTION = ("Any diffusers scheduler, built from the pipeline's own scheduler config (or the class's defaults) "
                   "with `options` (JSON) on top, e.g. {\"use_karras_sigmas\": true}. Connect it to the set-timesteps "
                   "step: the run steps with it from there on.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (SCHEDULER_TYPE,)
    RETURN_NAMES = ("scheduler",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        names = scheduler_names()
        return {"required": {"scheduler": (names, {"default": "EulerDiscreteScheduler" if "EulerDiscreteScheduler" in names
                                                   else names[0]}),
                             "options": ("STRING", {"default": "{}", "tooltip": "JSON: options for the scheduler."})}}

    def make(self, scheduler, options):
        try:
            parsed = parse_json_widget(options)
            parsed = {} if parsed is NOT_GIVEN else parsed
        except ValueError as e:
            raise LoopConfigError(f"Diffusers Scheduler: options are not valid JSON ({e})") from e
        if not isinstance(parsed, dict):
            raise LoopConfigError("Diffusers Scheduler: options must be a JSON object, e.g. {\"timestep_spacing\": \"trailing\"}")
        config = SchedulerConfig(scheduler, parsed)
        config.make()  # an unknown class or a bad option is this node's error
        return (config,)


def guider_nodes() -> dict:
    """{node id: (class, display name)} of one node per diffusers guider (nothing imported here)."""
    made = {}
    for guider in scan_guiders():
        cls = type(f"ModularGuider_{guider.name}", (GuiderNode,), {
            "GUIDER": guider, "__module__": __name__,
            "DESCRIPTION": f"diffusers' {guider.name} (diffusers/guiders/{guider.module}.py): a fresh one each run."})
        made[f"ModularGuider_{guider.name}"] = (cls, guider.name)
    return made


class StateToImage:
    DESCRIPTION = ("The decoded images of a pipeline state (diffusers' decode step writes `images`) as a ComfyUI "
                   "IMAGE, for Save Image or Preview Image. Decode with output_type \"pt\" or \"np\" (or \"pil\").")
    CATEGORY = f"{CATEGORY}"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "images"})}}

    def convert(self, state, key):
        return (as_comfy_image(value_named(state, key, "State To Image"), key),)


def as_comfy_image(images, key="images"):
    """diffusers' images (a [B, C, H, W] tensor in 0..1, a [B, H, W, C] array, or a list of PIL images) as
    ComfyUI's IMAGE: a float32 [B, H, W, C] tensor in 0..1."""
    import numpy as np
    import torch

    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        images = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
        return images.float() if images.ndim == 4 else images.float()[None]
    if torch.is_tensor(images) and images.ndim == 4:
        return images.detach().float().permute(0, 2, 3, 1).cpu().contiguous()
    raise TypeError(f"State To Image: '{key}' holds {type(images).__name__}, not decoded images; decode first")


class StateToLatent:
    DESCRIPTION = ("The latents of a pipeline state as a ComfyUI LATENT (undoing the pipeline VAE's scaling and "
                   "shift), for VAE Decode, KSampler and every node that takes a LATENT.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "pipeline": (PIPELINE_TYPE,)}}

    def convert(self, state, pipeline):
        latents = value_named(state, "latents", "State To LATENT")
        if latents is None:
            raise KeyError("State To LATENT: the state's 'latents' is empty")
        try:
            return ({"samples": to_host_latent(pipeline, latents).detach().cpu()},)
        except LoopConfigError as e:
            raise LoopConfigError(f"State To LATENT: {e}") from e


class LatentToState:
    DESCRIPTION = ("A ComfyUI LATENT as the `latents` of a pipeline state (with the pipeline VAE's scaling and "
                   "shift), for diffusers' decode step or loops; into a copy of `state` when one is connected.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "pipeline": (PIPELINE_TYPE,)}, "optional": {"state": (STATE_TYPE,)}}

    def convert(self, latent, pipeline, state=None):
        new = copy_state(state)
        new.set("latents", from_host_latent(pipeline, latent["samples"]))
        return (new,)


NODES = {"ModularDiffusersLoader": (LoadDiffusersPipeline, "Load Diffusers Pipeline"),
         "ModularDiffusersScheduler": (DiffusersScheduler, "Diffusers Scheduler"),
         "ModularStateToImage": (StateToImage, "State To Image"),
         "ModularStateToLatent": (StateToLatent, "State To LATENT"),
         "ModularLatentToState": (LatentToState, "LATENT To State")}
