"""A local diffusers folder loaded as the family's `ModularPipeline` (the `components` every one of diffusers' own
blocks takes).

Loading is diffusers' own (`ModularPipeline.from_pretrained` + `load_components`) with the doors shut: files
from the folder only (`local_files_only`), weights from `.safetensors` only (`use_safetensors`, and a folder
whose model weights are only pickle files is refused before anything is read), and no code from the folder
(`trust_remote_code=False`: a folder that ships blocks of its own is refused by diffusers).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core import compat
from ..core.errors import ModularError

INDEX_FILES = ("modular_model_index.json", "model_index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_SUFFIX = ".safetensors"
MODEL_LIBRARIES = ("diffusers", "transformers")


class PipelineLoadError(ModularError):
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
        if (name.startswith("_") or not isinstance(value, (list, tuple)) or len(value) < 2
                or not isinstance(value[0], str) or not isinstance(value[1], str)):
            continue  # a config value (e.g. Cosmos' `distilled_sigmas` [1.0, 0.5]), or [null, null]: no component
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


def cached_pipelines(cache_dir=None) -> dict[str, Path]:
    """{repo id: snapshot folder} of the diffusers pipelines already in the local Hugging Face cache (found by
    `huggingface_hub.scan_cache_dir`, which reads the cache folder only: nothing is fetched): each model repository
    whose snapshot holds an index file, its `main` revision (else its newest). Loaded as any folder is
    (`load_pipeline`: local files, safetensors, no code)."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir(cache_dir).repos
    except Exception:  # no cache yet, or one huggingface_hub cannot read: nothing listed from it
        return {}
    found = {}
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified), reverse=True)
        for revision in revisions[:1]:
            snapshot = Path(revision.snapshot_path)
            if any((snapshot / name).is_file() for name in INDEX_FILES):
                found[repo.repo_id] = snapshot
    return found


def ip_adapter_file(folder, name: str) -> tuple[str, str]:
    """(subfolder, weight name) of an IP-Adapter weights file given relative to a pipeline folder: a .safetensors
    file inside it (never a pickle, never a path out of it)."""
    folder = Path(folder).resolve()
    path = (folder / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or folder not in path.parents:
        raise PipelineLoadError(f"{folder}: the IP-Adapter file {name!r} must be a path inside the pipeline folder")
    if path.suffix != SAFE_SUFFIX or not path.is_file():
        raise PipelineLoadError(f"{folder}: no IP-Adapter file {name!r} (a .safetensors file of the folder, e.g. "
                                f"ip_adapter/ip-adapter_sdxl.safetensors)")
    relative = path.relative_to(folder)
    return str(relative.parent) if relative.parent != Path(".") else "", relative.name


def load_pipeline(folder, dtype=None, ip_adapter: str = ""):
    """The family's ModularPipeline for a local folder, its components loaded (diffusers' own loading); with
    `ip_adapter` (a .safetensors file of the folder), those IP-Adapter weights loaded into its denoiser (diffusers'
    `load_ip_adapter`), for the ip_adapter_* workflows."""
    import torch
    from diffusers.modular_pipelines import ModularPipeline

    folder = Path(folder)
    components = check_folder(folder)
    try:
        pipeline = ModularPipeline.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as e:
        raise PipelineLoadError(f"{folder}: diffusers could not make a pipeline of it: {type(e).__name__}: {e}") from e
    specs = compat.component_specs(pipeline)
    names = [n for n in components if n in specs]  # what the folder has ([null, null]: nothing)
    models = [n for n in names if _is_model(specs[n].type_hint)]
    kwargs = {"local_files_only": True, "use_safetensors": {n: True for n in models}}
    if dtype is not None:
        kwargs["dtype"] = {"default": dtype} if isinstance(dtype, torch.dtype) else dtype
    pipeline.load_components(names=names, **kwargs)
    missing = [n for n in components if n in specs and getattr(pipeline, n, None) is None]
    if missing:
        raise PipelineLoadError(f"{folder}: could not load component(s) {', '.join(missing)} (see the log for why)")
    if ip_adapter:
        subfolder, weight_name = ip_adapter_file(folder, ip_adapter)
        if not hasattr(pipeline, "load_ip_adapter"):
            raise PipelineLoadError(f"{folder}: {type(pipeline).__name__} takes no IP-Adapter")
        try:
            pipeline.load_ip_adapter(str(folder), subfolder=subfolder, weight_name=weight_name, local_files_only=True)
        except Exception as e:
            raise PipelineLoadError(f"{folder}: could not load the IP-Adapter {ip_adapter!r}: {type(e).__name__}: "
                                    f"{e}") from e
    return pipeline


def _is_model(type_hint) -> bool:
    import torch

    return isinstance(type_hint, type) and issubclass(type_hint, torch.nn.Module)
