"""Load Diffusers Pipeline: a local diffusers folder of ComfyUI's models/diffusers/ (and its extra_model_paths
entries), or a pipeline already in the local Hugging Face cache, as the family's modular pipeline
(`modular.pipelines.load`). The folders are listed only when the node is listed or run."""

from __future__ import annotations

import os

from ...modular import ConfigError
from ...modular.pipelines.load import INDEX_FILES, cached_pipelines, load_pipeline
from ..widgets import PIPELINE_TYPE
from . import CATEGORY

DTYPES = ("default", "float32", "float16", "bfloat16")
DEVICES = ("default", "cpu")  # default: ComfyUI's device, through its model management
MODELS_FOLDER = "diffusers"  # ComfyUI's folder for diffusers-format models (and its extra_model_paths entries)


HF_CACHE = "hf-cache/"  # how a pipeline of the local Hugging Face cache is named in the list


def pipeline_folders() -> dict[str, str]:
    """{name shown: path} of the diffusers pipelines in ComfyUI's models/diffusers folders, then those already in
    the local Hugging Face cache (`hf-cache/<repo id>`; read from disk, never downloaded)."""
    import folder_paths

    found = {}
    for root in folder_paths.get_folder_paths(MODELS_FOLDER):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in INDEX_FILES):
                found.setdefault(name, path)
    for repo, snapshot in cached_pipelines().items():
        found.setdefault(HF_CACHE + repo, str(snapshot))
    return found


class LoadDiffusersPipeline:
    DESCRIPTION = ("Loads a diffusers pipeline folder from models/diffusers/ (as `save_pretrained` writes it: "
                   "model_index.json and a subfolder per component), or one already in the local Hugging Face cache "
                   "(hf-cache/<repo id>), as the family's modular pipeline, for the diffusers step, loop and "
                   "workflow nodes. Local files only (nothing is downloaded), weights from .safetensors only, no "
                   "code from the folder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(pipeline_folders()) or ["(no pipeline in models/diffusers)"]
        return {"required": {"folder": (names, {"tooltip": (
                                 "A folder of models/diffusers/, or hf-cache/<repo id>: a pipeline already in the "
                                 "local Hugging Face cache.")}),
                             "dtype": (list(DTYPES), {"default": "default", "tooltip": "The weights' dtype."})},
                "optional": {"device": (list(DEVICES), {"default": "default", "tooltip": (
                                 "default: ComfyUI's device (its model management loads the modules there when a node "
                                 "uses them and offloads them when others need the room); cpu: always on the CPU.")}),
                             "ip_adapter": ("STRING", {"default": "", "tooltip": (
                                 "An IP-Adapter's weights to load into the denoiser, for the ip_adapter_* workflows: a "
                                 ".safetensors file of the folder, e.g. ip_adapter/ip-adapter_sdxl.safetensors (the "
                                 "image encoder is the folder's image_encoder). Empty: none.")})}}

    def load(self, folder, dtype, device="default", ip_adapter=""):
        import torch

        from .. import host

        path = pipeline_folders().get(folder)
        if path is None:
            raise ConfigError(f"Load Diffusers Pipeline: no pipeline folder '{folder}' in models/diffusers/")
        pipeline = load_pipeline(path, None if dtype == "default" else getattr(torch, dtype), ip_adapter.strip())
        host.set_pipeline_device(pipeline, None if device == "default" else torch.device(device))
        return (pipeline,)
