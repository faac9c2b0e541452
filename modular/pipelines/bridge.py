"""diffusers' loops on a host's own loaded model (ComfyUI's MODEL, with its LoRAs and patches): per bridged family,
the conventions where diffusers and the host differ, converted here once.

- The denoiser: `Denoiser`, a torch module with the family's diffusers call signature (SDXL:
  `unet(sample, t, encoder_hidden_states, added_cond_kwargs=...)`), whose forward converts diffusers' values to
  the host model's (timestep -> sigma with the host's own schedule, the scaled input -> the host's input, the
  family's added conditioning -> the host's condition arguments), calls the host's model through a `HostModel`
  (the host adapter's: the host's own model call, so that its patches apply) and converts the host's denoised
  estimate back into the prediction diffusers' scheduler expects (always epsilon: the scheduler is made for it).
- The scheduler: the family's diffusers scheduler on the host model's own noise schedule (`scheduler_for`).
- The host's conditioning (text embeddings and the pooled vector) as the state values the family's steps read
  (`conditioning_values`), checked against the model it will condition.

Nothing here imports the host: a `HostModel` gives what the conversions need."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Protocol

from ..core.errors import ConfigError

EPSILON = "epsilon"


class HostModel(Protocol):
    """What the denoiser needs of the host's model (the host adapter implements it)."""

    sigma_data: float

    def sigma(self, timestep):
        """The host model's sigma for diffusers' timestep (its own schedule, patches applied)."""

    def denoise(self, x, sigma, rows: list[dict], uncond: bool):
        """The host model's denoised estimate x0 of `x` (the host's input: latents at noise level `sigma`), each
        batch row conditioned by the host's condition arguments in `rows`; `uncond`: the batch is the guider's
        unconditional one (the host's patches see it so)."""


@dataclass(frozen=True)
class Family:
    """One bridged family: its diffusers blocks and denoiser, the host's model classes of it, its scheduler."""

    name: str  # the pack's family name (diffusers' class prefix)
    blocks: str  # diffusers' Auto blocks class: the pipeline the family's step, loop and workflow nodes take
    denoiser: str  # the pipeline's denoiser component
    host_models: tuple  # the host's model class names of this family (ComfyUI's model_base classes)
    scheduler: str  # diffusers scheduler class
    scheduler_config: dict = field(default_factory=dict)  # its family options (as the family's hub config)
    pooled: bool = True  # the conditioning carries a pooled vector

    def rows(self, sample, encoder_hidden_states, added: dict, scale_factor: int) -> list[dict]:
        return ROWS[self.name](sample, encoder_hidden_states, added, scale_factor)


def _sdxl_rows(sample, encoder_hidden_states, added: dict, scale_factor: int) -> list[dict]:
    """SDXL: per batch row, the host's condition arguments (ComfyUI's SDXL `extra_conds`): the text embeddings,
    the pooled embeds and diffusers' six size ids (`time_ids`: original h, w, crop top, left, target h, w, the
    order the host embeds them in)."""
    rows = []
    for i in range(sample.shape[0]):
        row = {"cross_attn": encoder_hidden_states[i:i + 1], "height": sample.shape[-2] * scale_factor,
               "width": sample.shape[-1] * scale_factor}
        if "text_embeds" in added:
            row["pooled_output"] = added["text_embeds"][i:i + 1]
        if "time_ids" in added:
            h, w, top, left, th, tw = (float(v) for v in added["time_ids"][i].tolist())
            row.update(height=h, width=w, crop_h=top, crop_w=left, target_height=th, target_width=tw)
        rows.append(row)
    return rows


ROWS = {"StableDiffusionXL": _sdxl_rows}

FAMILIES = (
    # SDXL's hub scheduler: Euler, "leading" spacing with steps_offset 1 (its betas are the host model's)
    Family("StableDiffusionXL", "StableDiffusionXLAutoBlocks", "unet", ("SDXL",), "EulerDiscreteScheduler",
           {"timestep_spacing": "leading", "steps_offset": 1, "interpolation_type": "linear"}),
)


def family_for(host_model: str) -> Family:
    """The bridged family of a host model class; a clear refusal naming it and the bridged ones otherwise."""
    for family in FAMILIES:
        if host_model in family.host_models:
            return family
    bridged = ", ".join(f"{f.name} ({'/'.join(f.host_models)})" for f in FAMILIES)
    raise ConfigError(f"a {host_model} model is not bridged to diffusers' loops (yet); bridged: {bridged}")


def discrete_betas(sigmas):
    """The betas of a discrete noise schedule given by its sigmas (alphas_cumprod = 1 / (1 + sigma^2)), so that a
    diffusers scheduler steps on the host model's own schedule (including zero-terminal-SNR or other patches)."""
    import torch

    alphas_cumprod = 1.0 / (1.0 + sigmas.double() ** 2)
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return (1.0 - alphas_cumprod / previous).float()


def scheduler_for(family: Family, sigmas):
    """The family's diffusers scheduler on the host model's schedule (`sigmas`: its sigma per training timestep),
    predicting epsilon (what the denoiser gives)."""
    import diffusers

    cls = getattr(diffusers, family.scheduler)
    betas = discrete_betas(sigmas)
    return cls(num_train_timesteps=len(betas), trained_betas=betas.tolist(), prediction_type=EPSILON,
               **family.scheduler_config)


def make_denoiser(family: Family, host: HostModel, config: dict, dtype, device, scale_factor: int = 8):
    """The family's denoiser module on `host`: diffusers' call signature, the conversions of this module.
    `config`: what diffusers' blocks read of the denoiser's config (e.g. SDXL's in_channels, sample_size,
    addition_time_embed_dim, projection_class_embeddings_input_dim)."""
    import torch
    from diffusers.configuration_utils import FrozenDict

    class BridgedDenoiser(torch.nn.Module):
        HOST_MODEL = True  # loaded by the host's sampling session, never as a pipeline module

        def __init__(self):
            super().__init__()
            self.family, self.config = family, FrozenDict(config)
            self.host = host  # not a submodule: diffusers must never move or offload the host's weights
            self.run = None  # the run's components (its guider: is a batch the unconditional one)
            self.calls = 0
            adm = config.get("projection_class_embeddings_input_dim")
            if adm is not None:  # read by SDXL's _get_add_time_ids
                self.add_embedding = types.SimpleNamespace(linear_1=types.SimpleNamespace(in_features=adm))

        @property
        def dtype(self):
            return dtype

        @property
        def device(self):
            return device

        def forward(self, sample, timestep, encoder_hidden_states=None, added_cond_kwargs=None, return_dict=True,
                    **_ignored):
            self.calls += 1
            batch = sample.shape[0]
            t = torch.as_tensor(timestep).float().reshape(-1).expand(batch)
            sigma = host.sigma(t).to(sample.device, torch.float32)
            s = sigma.reshape(-1, *([1] * (sample.ndim - 1)))
            # diffusers gives the variance-preserving input x / sqrt(sigma^2 + 1) whatever its scheduler; the host
            # model scales its input itself
            x = sample.float() * (s ** 2 + host.sigma_data ** 2) ** 0.5
            rows = family.rows(sample, encoder_hidden_states, added_cond_kwargs or {}, scale_factor)
            guider = getattr(self.run, "guider", None) if self.run is not None else None
            uncond = guider is not None and getattr(guider, "is_conditional", True) is False
            denoised = host.denoise(x, sigma, rows, uncond)
            pred = ((x - denoised.float()) / s).to(sample.dtype)
            return types.SimpleNamespace(sample=pred) if return_dict else (pred,)

    return BridgedDenoiser()


def is_bridged(module) -> bool:
    return getattr(module, "HOST_MODEL", False) is True


def bridged_denoisers(pipeline) -> list:
    return [m for name in ("unet", "transformer") if is_bridged(m := getattr(pipeline, name, None))]


# --- the host's conditioning into the state -------------------------------------------------------

REFUSED = {"area": "an area (Conditioning Set Area)", "strength": None, "mask": "a mask (Conditioning Set Mask)",
           "control": "a ControlNet (Apply ControlNet)", "gligen": "GLIGEN", "start_percent": "a timestep range",
           "end_percent": "a timestep range", "timestep_start": "a timestep range", "timestep_end": "a timestep range",
           "hooks": "hooks (scheduled LoRA)", "unclip_conditioning": "unCLIP", "concat_latent_image": "a concat image",
           "reference_latents": "reference latents"}


def conditioning_values(family: Family, positive, negative, context_dim: int, pooled_dim: int | None,
                        label: str) -> dict:
    """The host's CONDITIONING (ComfyUI's [[embeddings, {"pooled_output": ..., ...}], ...]) as the state values the
    family's steps read (SDXL: prompt_embeds, pooled_prompt_embeds and the negative ones), after checking it fits
    the model (`context_dim`: its text embedding width; `pooled_dim`: its pooled vector's). What the bridge cannot
    honour (areas, masks, ControlNets, timestep ranges, hooks) is refused by name, never dropped."""
    values = {}
    for prefix, name, conditioning in (("", "positive", positive), ("negative_", "negative", negative)):
        if conditioning is None:
            continue
        embeds, pooled = _one_conditioning(conditioning, f"{label}: '{name}'", context_dim, pooled_dim, family)
        values[f"{prefix}prompt_embeds"] = embeds
        if family.pooled:
            values[f"{prefix}pooled_prompt_embeds"] = pooled
    return values


def _one_conditioning(conditioning, where: str, context_dim: int, pooled_dim, family: Family):
    import torch

    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ConfigError(f"{where}: no conditioning (connect a CLIP Text Encode)")
    if len(conditioning) > 1:
        raise ConfigError(f"{where}: {len(conditioning)} conditionings combined (Conditioning Combine / Concat "
                          f"gives several): diffusers' loop takes one prompt's embeddings; use one")
    entry = conditioning[0]
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)):
        raise ConfigError(f"{where}: not a CONDITIONING ([[embeddings, options]])")
    embeds, options = entry
    for key, value in (options or {}).items():
        if key in REFUSED and value is not None and not (key == "strength" and value == 1.0):
            what = REFUSED[key] or f"a strength of {value}"
            raise ConfigError(f"{where}: the conditioning carries {what} ('{key}'), which diffusers' loop cannot "
                              f"honour; remove that node before the bridge")
    if embeds.ndim != 3 or embeds.shape[-1] != context_dim:
        raise ConfigError(f"{where}: text embeddings of shape {tuple(embeds.shape)}, but this {family.name} model "
                          f"takes [batch, tokens, {context_dim}]: encode the prompt with this checkpoint's CLIP")
    pooled = options.get("pooled_output") if options else None
    if family.pooled:
        if pooled is None:
            raise ConfigError(f"{where}: the conditioning has no pooled output, which {family.name} needs: encode "
                              f"the prompt with this checkpoint's CLIP")
        if pooled_dim is not None and pooled.shape[-1] != pooled_dim:
            raise ConfigError(f"{where}: a pooled output of width {pooled.shape[-1]}, but this {family.name} model "
                              f"takes {pooled_dim}: encode the prompt with this checkpoint's CLIP")
    return embeds, pooled
