"""diffusers' loops on a host's own loaded model (ComfyUI's MODEL, with its LoRAs and patches): per bridged family,
the conventions where diffusers and the host differ, converted here once.

- The denoiser (`make_denoiser`): a torch module with the family's diffusers call signature (SDXL:
  `unet(sample, t, encoder_hidden_states, added_cond_kwargs=...)`; SD3: `transformer(hidden_states,
  encoder_hidden_states, pooled_projections, timestep)`), whose forward converts diffusers' values to the host
  model's (timestep -> sigma: the host's own table on a discrete schedule, t / 1000 in flow matching; diffusers'
  input -> the host's; the family's added conditioning -> the host's condition arguments), calls the host's model
  through a `HostModel` (the host adapter's: the host's own model call, so that its patches apply) and converts
  the host's denoised estimate back into the prediction diffusers' scheduler expects (epsilon on a discrete
  schedule: the scheduler is made for it; the flow velocity in flow matching).
- The scheduler: the family's diffusers scheduler on the host model's own noise schedule (`scheduler_for`).
- The host's conditioning (text embeddings and the pooled vector) as the state values the family's steps read
  (`conditioning_values`), checked against the model it will condition.

Nothing here imports the host: a `HostModel` gives what the conversions need."""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Protocol

from ..core import compat
from ..core.errors import ConfigError

EPSILON = "epsilon"


class HostModel(Protocol):
    """What the denoiser needs of the host's model (the host adapter implements it)."""

    sigma_data: float

    def sigma(self, timestep):
        """The host model's sigma for diffusers' timestep on a discrete schedule (its own table, patches applied)."""

    def denoise(self, x, sigma, rows: list[dict], uncond: bool, skip=()):
        """The host model's denoised estimate x0 of `x` (the host's input: latents at noise level `sigma`), each
        batch row conditioned by the host's condition arguments in `rows`; `uncond`: the batch is the guider's
        unconditional one (the host's patches see it so); `skip`: what a layer-skipping guider skips in this
        batch, as the host's patch targets: ("dit", kind, index), a whole transformer block (skip-layer guidance,
        e.g. ("dit", "double_block", 7)); ("attn1", block, number, transformer index), a self-attention whose
        scores are skipped, its output the values (perturbed attention, e.g. ("attn1", "middle", 0, 0));
        ("attn1_query", transform, block, number, transformer index), a self-attention whose query (the host's,
        [batch, tokens, inner dim]) goes through `transform` first (smoothed energy guidance's blur)."""


class HostText(Protocol):
    """The host's text encoder (ComfyUI's CLIP), for a bridged pipeline's text encoder step."""

    def encode(self, texts: dict):
        """The host's conditioning for one prompt: `texts` = {the text encoder's part (its tokenizer key, e.g. "l",
        "g", "t5xxl"): the text for it; "": the text for the rest}."""


class HostVae(Protocol):
    """The host's VAE (ComfyUI's), as a bridged pipeline's `vae`."""

    latent_channels: int

    def encode(self, images):
        """Images in diffusers' layout ([B, 3, H, W] in [-1, 1]) -> the VAE's latents (unscaled)."""

    def decode(self, latents):
        """The VAE's latents (unscaled) -> images in diffusers' layout ([B, 3, H, W] in [-1, 1])."""


@dataclass(frozen=True)
class Call:
    """One denoiser call of diffusers', in the family's own argument names, reduced to what converts."""

    sample: object  # the latents diffusers hands the denoiser, in the host model's layout ([B, C, H, W])
    timestep: object
    rows: list  # per batch row, the host's condition arguments
    back: object = None  # the prediction in the host's layout -> diffusers' layout (Flux: packed again)


@dataclass(frozen=True)
class Family:
    """One bridged family: its diffusers blocks and denoiser, the host's model classes of it, its scheduler, and how
    its denoiser's call converts (`unpack`: diffusers' arguments -> a `Call`; `flow`: flow matching, where diffusers'
    timestep is sigma x `timestep_scale` and the input is the latents as they are, else a discrete schedule, where
    the timestep indexes the host's sigma table and the input is variance-preserving)."""

    name: str  # the pack's family name (diffusers' class prefix)
    blocks: str  # diffusers' Auto blocks class: the pipeline the family's step, loop and workflow nodes take
    denoiser: str  # the pipeline's denoiser component
    host_models: tuple  # the host's model class names of this family (ComfyUI's model_base classes)
    scheduler: str  # diffusers scheduler class
    unpack: object  # (args, kwargs, scale_factor) -> Call
    scheduler_config: dict = field(default_factory=dict)  # its family options (as the family's hub config)
    flow: bool = False
    timestep_scale: float = 1000.0  # flow: diffusers' denoiser gets sigma x this (SD3: 1000; Flux: sigma itself)
    exponential_shift: bool = False  # flow: the host's shift is mu of exp(mu) / (exp(mu) + 1 / sigma - 1) (Flux)
    pooled: bool = True  # the conditioning carries a pooled vector
    options: dict = field(default_factory=dict)  # the host's conditioning options -> state values (Flux: guidance)
    prompts: dict = field(default_factory=dict)  # diffusers' prompt inputs -> the host text encoder's part for each
    # diffusers' transformer block stacks -> (the host's kind of block, the config key of their count): where a
    # guider's layer-skip hooks land (skip-layer guidance), the host's model skips those blocks
    block_stacks: dict = field(default_factory=dict)
    # a guider's attention-score skips (perturbed attention) on the family's self-attention layers: the host's
    # model takes them (the bridge is given the layers: diffusers' module path -> the host's attention key)
    attention_scores: bool = False
    shift_option: str = "shift"  # flow: the scheduler's name for the shift (UniPC with flow sigmas: flow_shift)
    # the latents are a video's ([B, C, frames, H, W]): a LATENT gives the call's num_frames and videos per prompt
    video: bool = False
    embeds_mask: bool = False  # the family's steps also read a mask of the text embeddings (Qwen-Image)
    host_packing: int = 1  # the host's model config counts its input channels over packed patches (Qwen-Image: 4)
    from_image: bool = True  # a LATENT with content (VAE Encode's) starts the family's image2image steps
    # diffusers' denoiser class: its forward's signature is the bridged denoiser's (loops that pass only the
    # arguments the denoiser declares read it, e.g. Qwen-Image's img_shapes)
    model_class: str = ""


def _argument(args, kwargs, index, name):
    return args[index] if len(args) > index else kwargs.get(name)


def _sdxl_call(args, kwargs, scale_factor: int) -> Call:
    """SDXL's `unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=...)`: per batch row, the host's
    condition arguments (ComfyUI's SDXL `extra_conds`): the text embeddings, the pooled embeds and diffusers' six
    size ids (`time_ids`: original h, w, crop top, left, target h, w, the order the host embeds them in)."""
    sample, timestep = _argument(args, kwargs, 0, "sample"), _argument(args, kwargs, 1, "timestep")
    encoder_hidden_states = _argument(args, kwargs, 2, "encoder_hidden_states")
    added = kwargs.get("added_cond_kwargs") or {}
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
    return Call(sample, timestep, rows)


def _sd3_call(args, kwargs, scale_factor: int) -> Call:
    """SD3's `transformer(hidden_states, timestep, encoder_hidden_states, pooled_projections)`: per batch row, the
    joint text embeddings and the pooled projection (ComfyUI's SD3 `extra_conds`: c_crossattn and y)."""
    sample, timestep = _argument(args, kwargs, 0, "hidden_states"), _argument(args, kwargs, 3, "timestep")
    encoder_hidden_states = _argument(args, kwargs, 1, "encoder_hidden_states")
    pooled = _argument(args, kwargs, 2, "pooled_projections")
    rows = [{"cross_attn": encoder_hidden_states[i:i + 1],
             **({"pooled_output": pooled[i:i + 1]} if pooled is not None else {})} for i in range(sample.shape[0])]
    return Call(sample, timestep, rows)


def _flux_call(args, kwargs, scale_factor: int) -> Call:
    """Flux's `transformer(hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
    guidance)`: diffusers' packed 2 x 2 latents unpacked for the host model (which packs them itself), their size
    read from `img_ids` (row, column per packed token), with diffusers' own `_unpack_latents` / `_pack_latents`;
    per batch row, the T5 embeddings, the CLIP pooled vector and the guidance (ComfyUI's Flux `extra_conds`)."""
    from diffusers import FluxPipeline

    packed = _argument(args, kwargs, 0, "hidden_states")
    encoder_hidden_states = _argument(args, kwargs, 1, "encoder_hidden_states")
    pooled = _argument(args, kwargs, 2, "pooled_projections")
    timestep = _argument(args, kwargs, 3, "timestep")
    ids = kwargs.get("img_ids")
    rows_h, cols_w = int(ids[..., 1].max()) + 1, int(ids[..., 2].max()) + 1
    height, width = 2 * rows_h, 2 * cols_w  # latent rows / columns
    sample = FluxPipeline._unpack_latents(packed, height * scale_factor, width * scale_factor, scale_factor)
    guidance = kwargs.get("guidance")
    rows = [{"cross_attn": encoder_hidden_states[i:i + 1],
             **({"pooled_output": pooled[i:i + 1]} if pooled is not None else {}),
             "guidance": None if guidance is None else float(guidance.reshape(-1)[min(i, guidance.numel() - 1)])}
            for i in range(sample.shape[0])]

    def back(pred):
        return FluxPipeline._pack_latents(pred, pred.shape[0], pred.shape[1], height, width)

    return Call(sample, timestep, rows, back)


def _wan_call(args, kwargs, scale_factor: int) -> Call:
    """Wan's `transformer(hidden_states, timestep, encoder_hidden_states)`: the video latents as they are ([B, C,
    frames, H, W], the host model's layout too); per batch row, the UMT5 embeddings (ComfyUI's Wan `extra_conds`:
    c_crossattn). An image embedding (image2video's `encoder_hidden_states_image`) is not bridged."""
    sample, timestep = _argument(args, kwargs, 0, "hidden_states"), _argument(args, kwargs, 1, "timestep")
    encoder_hidden_states = _argument(args, kwargs, 2, "encoder_hidden_states")
    if kwargs.get("encoder_hidden_states_image") is not None:
        raise ConfigError("Wan: an image embedding (image2video) reached the bridged denoiser; only text2video "
                          "(WanBlocks) is bridged")
    return Call(sample, timestep, [{"cross_attn": encoder_hidden_states[i:i + 1]} for i in range(sample.shape[0])])


def _qwenimage_call(args, kwargs, scale_factor: int) -> Call:
    """Qwen-Image's `transformer(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_mask,
    img_shapes)`: diffusers' packed 2 x 2 latents unpacked for the host model (which packs them itself: [B, C, 1, H,
    W]), their size read from `img_shapes`, with diffusers' own `_unpack_latents` / `_pack_latents`; per batch row,
    the text embeddings (ComfyUI's Qwen-Image `extra_conds`: c_crossattn), which a mask must keep whole."""
    from diffusers import QwenImagePipeline

    packed, timestep = _argument(args, kwargs, 0, "hidden_states"), kwargs.get("timestep")
    encoder_hidden_states = kwargs.get("encoder_hidden_states")
    mask = kwargs.get("encoder_hidden_states_mask")
    if mask is not None and not bool(mask.bool().all()):
        raise ConfigError("Qwen-Image: text embeddings with padding (prompts of different lengths in one batch) are "
                          "not bridged: run one prompt at a time")
    shapes = kwargs.get("img_shapes")
    frames, rows_h, cols_w = shapes[0][0]
    height, width = 2 * rows_h, 2 * cols_w  # latent rows / columns
    if frames != 1 or packed.shape[1] != rows_h * cols_w:
        raise ConfigError("Qwen-Image: image latents beside the generated one (edit, layered) are not bridged")
    sample = QwenImagePipeline._unpack_latents(packed, height * scale_factor, width * scale_factor, scale_factor)
    rows = [{"cross_attn": encoder_hidden_states[i:i + 1]} for i in range(sample.shape[0])]

    def back(pred):
        return QwenImagePipeline._pack_latents(pred, pred.shape[0], pred.shape[1], height, width)

    return Call(sample, timestep, rows, back)


FAMILIES = (
    # SDXL's hub scheduler: Euler, "leading" spacing with steps_offset 1 (its betas are the host model's)
    Family("StableDiffusionXL", "StableDiffusionXLAutoBlocks", "unet", ("SDXL",), "EulerDiscreteScheduler",
           _sdxl_call, {"timestep_spacing": "leading", "steps_offset": 1, "interpolation_type": "linear"},
           prompts={"prompt": "l", "prompt_2": "g"}, attention_scores=True, model_class="UNet2DConditionModel"),
    # SD3's hub scheduler: flow-matching Euler (its shift is the host model's)
    Family("StableDiffusion3", "StableDiffusion3AutoBlocks", "transformer", ("SD3",),
           "FlowMatchEulerDiscreteScheduler", _sd3_call, flow=True,
           prompts={"prompt": "l", "prompt_2": "g", "prompt_3": "t5xxl"},
           block_stacks={"transformer_blocks": ("double_block", "num_layers")}, model_class="SD3Transformer2DModel"),
    # Flux: flow-matching Euler with the host's exponential shift; the conditioning's guidance (Flux Guidance) is
    # diffusers' guidance_scale
    Family("Flux", "FluxAutoBlocks", "transformer", ("Flux",), "FlowMatchEulerDiscreteScheduler", _flux_call,
           flow=True, timestep_scale=1.0, exponential_shift=True, options={"guidance": "guidance_scale"},
           prompts={"prompt": "l", "prompt_2": "t5xxl"},
           block_stacks={"transformer_blocks": ("double_block", "num_layers"),
                         "single_transformer_blocks": ("single_block", "num_single_layers")},
           model_class="FluxTransformer2DModel"),
    # Wan 2.1 text2video (and Wan 2.2's 14B experts, one at a time: the same network): UniPC on flow sigmas (its hub
    # scheduler), its shift the host model's (ComfyUI's ModelSamplingSD3 sets it); no pooled vector
    Family("Wan", "WanBlocks", "transformer", ("WAN21",), "UniPCMultistepScheduler", _wan_call,
           {"prediction_type": "flow_prediction", "use_flow_sigmas": True}, flow=True, pooled=False,
           prompts={"prompt": "umt5xxl"}, block_stacks={"blocks": ("double_block", "num_layers")},
           shift_option="flow_shift", video=True, model_class="WanTransformer3DModel"),
    # Qwen-Image text2image: flow-matching Euler on the host's shift (ModelSamplingAuraFlow's, or the model's own
    # exponential one); diffusers' timestep is sigma; its text embeddings come with a mask (all kept)
    Family("QwenImage", "QwenImageAutoBlocks", "transformer", ("QwenImage",), "FlowMatchEulerDiscreteScheduler",
           _qwenimage_call, flow=True, timestep_scale=1.0, exponential_shift=True, pooled=False, embeds_mask=True,
           host_packing=4, model_class="QwenImageTransformer2DModel", from_image=False,
           block_stacks={"transformer_blocks": ("double_block", "num_layers")}),
)


def family_for(host_model: str, shown: str = "") -> Family:
    """The bridged family of a host model class; a clear refusal naming it (`shown`: the host's name for the
    model's kind, e.g. ComfyUI's supported-model config) and the bridged ones otherwise."""
    for family in FAMILIES:
        if host_model in family.host_models:
            return family
    bridged = ", ".join(f"{f.name} ({'/'.join(f.host_models)})" for f in FAMILIES)
    what = f"{shown} ({host_model})" if shown and shown != host_model else host_model
    raise ConfigError(f"a {what} model is not bridged to diffusers' loops (yet); bridged: {bridged}")


def discrete_betas(sigmas):
    """The betas of a discrete noise schedule given by its sigmas (alphas_cumprod = 1 / (1 + sigma^2)), so that a
    diffusers scheduler steps on the host model's own schedule (including zero-terminal-SNR or other patches)."""
    import torch

    alphas_cumprod = 1.0 / (1.0 + sigmas.double() ** 2)
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return (1.0 - alphas_cumprod / previous).float()


def scheduler_for(family: Family, sigmas=None, shift: float | None = None, exponential: bool | None = None):
    """The family's diffusers scheduler on the host model's schedule: a discrete one from its sigma per training
    timestep (`sigmas`), predicting epsilon (what the denoiser gives); a flow-matching one with its `shift`
    (`exponential`: the shift is mu of an exponential time shift, as the host's Flux sampling takes it; by default
    the family's)."""
    import diffusers

    cls = getattr(diffusers, family.scheduler)
    if family.flow:  # (an exponential shift mu is the static shift exp(mu): the same schedule)
        exponential = family.exponential_shift if exponential is None else exponential
        shift = math.exp(shift) if exponential else shift
        return cls(num_train_timesteps=1000, **{family.shift_option: float(shift)}, **family.scheduler_config)
    betas = discrete_betas(sigmas)
    return cls(num_train_timesteps=len(betas), trained_betas=betas.tolist(), prediction_type=EPSILON,
               **family.scheduler_config)


def make_denoiser(family: Family, host: HostModel, config: dict, dtype, device, scale_factor: int = 8,
                  attention: dict | None = None):
    """The family's denoiser module on `host`: diffusers' call signature, the conversions of this module.
    `config`: what diffusers' blocks read of the denoiser's config (e.g. SDXL's in_channels, sample_size,
    addition_time_embed_dim, projection_class_embeddings_input_dim; SD3's joint_attention_dim, patch_size).
    `attention`: the model's self-attention layers, {diffusers' module path (e.g.
    "mid_block.attentions.0.transformer_blocks.0.attn1"): the host's key for it (e.g. ("middle", 0, 0))}: stand-ins
    at those paths take a guider's attention hooks (perturbed attention, smoothed energy), which the host then
    follows."""
    return denoiser_class()(family, host, config, dtype, device, scale_factor, attention or {})


_DENOISER = []


def denoiser_class():
    """The bridged denoiser's module class (made once, at first use: this module imports no torch at start-up)."""
    if _DENOISER:
        return _DENOISER[0]
    import torch
    from diffusers.configuration_utils import FrozenDict

    class BridgedDenoiser(torch.nn.Module):
        """A family's denoiser on the host's model (`make_denoiser`)."""

        HOST_MODEL = True  # loaded by the host's sampling session, never as a pipeline module

        def __init__(self, family: Family, host: HostModel, config: dict, dtype, device, scale_factor: int,
                     attention: dict):
            super().__init__()
            self.family, self.config = family, FrozenDict(config)
            self.host = host  # not a submodule: diffusers must never move or offload the host's weights
            self.run = None  # the run's components (its guider: is a batch the unconditional one)
            self.calls = 0
            self._dtype, self._device, self.scale_factor = dtype, device, scale_factor
            for stack, (_, count) in family.block_stacks.items():  # stand-ins for a guider's layer-skip hooks
                setattr(self, stack, torch.nn.ModuleList(host_block()() for _ in range(config[count])))
            self.attention = {path: stand_in_at(self, path) for path in attention}
            self.attention_keys = dict(attention)
            if family.model_class:  # diffusers' denoiser's forward signature, for loops that read it
                self.forward = declared_forward(self, family.model_class)
            adm = config.get("projection_class_embeddings_input_dim")
            if adm is not None:  # read by SDXL's _get_add_time_ids
                self.add_embedding = types.SimpleNamespace(linear_1=types.SimpleNamespace(in_features=adm))

        @property
        def dtype(self):
            return self._dtype

        @property
        def device(self):
            return self._device

        def skipped(self) -> list:
            """What the guider's hooks on the stand-ins ask the host to skip or change in this batch."""
            skip = [("dit", kind, i) for stack, (kind, _) in self.family.block_stacks.items()
                    for i, block in enumerate(getattr(self, stack)) if compat.hooked(block)]
            for path, layer in self.attention.items():
                if compat.hooked(layer):  # its scores skipped (perturbed attention)
                    skip.append(("attn1", *self.attention_keys[path]))
                elif compat.hooked(layer.to_q):  # its query changed first (smoothed energy: diffusers' blur)
                    skip.append(("attn1_query", query_transform(layer.to_q), *self.attention_keys[path]))
            return skip

        def forward(self, *args, **kwargs):
            self.calls += 1
            family, host = self.family, self.host
            call = family.unpack(args, kwargs, self.scale_factor)
            sample = call.sample
            batch = sample.shape[0]
            t = torch.as_tensor(call.timestep).float().reshape(-1).expand(batch)
            if family.flow:  # diffusers' timestep is sigma x 1000; the host model takes the latents as they are
                sigma = (t / family.timestep_scale).to(sample.device, torch.float32)
                s = sigma.reshape(-1, *([1] * (sample.ndim - 1)))
                x = sample.float()
            else:  # diffusers gives the variance-preserving input x / sqrt(sigma^2 + 1); the host scales its own
                sigma = host.sigma(t).to(sample.device, torch.float32)
                s = sigma.reshape(-1, *([1] * (sample.ndim - 1)))
                x = sample.float() * (s ** 2 + host.sigma_data ** 2) ** 0.5
            guider = getattr(self.run, "guider", None) if self.run is not None else None
            uncond = guider is not None and getattr(guider, "is_conditional", True) is False
            denoised = host.denoise(x, sigma, call.rows, uncond, skip=self.skipped())
            # epsilon (discrete) or the flow velocity noise - x0 (flow): both (x - x0) / sigma
            pred = ((x - denoised.float()) / s).to(sample.dtype)
            pred = call.back(pred) if call.back is not None else pred
            return types.SimpleNamespace(sample=pred) if kwargs.get("return_dict", True) else (pred,)

    _DENOISER.append(BridgedDenoiser)
    return BridgedDenoiser


def declared_forward(denoiser, model_class: str):
    """`denoiser`'s forward with the signature of diffusers' `model_class`'s forward (without `self`)."""
    import inspect

    import diffusers

    method = type(denoiser).forward
    declared = inspect.signature(getattr(diffusers, model_class).forward)

    def forward(*args, **kwargs):
        return method(denoiser, *args, **kwargs)

    forward.__signature__ = declared.replace(parameters=list(declared.parameters.values())[1:])
    return forward


def query_transform(to_q):
    """What the diffusers hooks on a self-attention stand-in's query projection do to its output (smoothed energy
    guidance: `SmoothedEnergyGuidanceHook.post_forward`, its Gaussian blur of the query), as a function of the
    host's query ([batch, tokens, inner dim], as diffusers' `to_q` gives it)."""
    hooks = compat.hooks_of(to_q)

    def transform(query):
        for hook in hooks:
            query = hook.post_forward(to_q, query)
        return query

    return transform


_HOST_BLOCK = []


def host_block():
    """The stand-in module class for one of the family's transformer blocks on a bridged denoiser: never run, it
    is where diffusers' layer-skip hooks register when a guider (skip-layer guidance) picks that block, so the
    host's model is told to skip the block it stands for (registered as a transformer block for those hooks)."""
    if not _HOST_BLOCK:
        import torch

        class HostBlock(torch.nn.Module):
            """One of the host model's transformer blocks, as diffusers' layer-skip hooks see it."""

        _HOST_BLOCK.append(compat.register_transformer_block(HostBlock))
    return _HOST_BLOCK[0]


def stand_in_at(root, path: str):
    """A self-attention stand-in at diffusers' module `path` under `root` (the modules on the way made as needed:
    a numeric name is an index of a ModuleList), where diffusers' attention hooks find it (a diffusers Attention of
    size 1, never run)."""
    import torch
    from diffusers.models.attention_processor import Attention

    parent = root
    parts = path.split(".")
    for name, after in zip(parts[:-1], parts[1:]):
        if name.isdigit():
            index = int(name)
            while len(parent) <= index:
                parent.append(torch.nn.ModuleList() if after.isdigit() else torch.nn.Module())
            parent = parent[index]
        else:
            if not hasattr(parent, name):
                parent.add_module(name, torch.nn.ModuleList() if after.isdigit() else torch.nn.Module())
            parent = getattr(parent, name)
    layer = Attention(query_dim=1, heads=1, dim_head=1)
    parent.add_module(parts[-1], layer)
    return layer


def is_bridged(module) -> bool:
    return getattr(module, "HOST_MODEL", False) is True


DENOISERS = ("unet", "transformer")  # the component names of a family's denoising model


def bridged_denoisers(pipeline) -> list:
    return [m for name in DENOISERS if is_bridged(m := getattr(pipeline, name, None))]


def make_vae(host: HostVae, scaling_factor: float, shift_factor: float | None, downscale: int = 8,
             mean=None, std=None, temporal: int | None = None):
    """The host's VAE with the interface diffusers' encode and decode steps use (`encode(x).latents`: the host's
    deterministic latents, as its VAE Encode gives them; `decode(z).sample`), and the config they read (the host
    model's latent scaling and shift, so diffusers' steps scale as the host's latent format does; a video family's
    per-channel `mean` / `std` (Wan's latents_mean / latents_std) and its `temporal` compression, which diffusers'
    Wan pipeline reads as `temperal_downsample`)."""
    import torch
    from diffusers.configuration_utils import FrozenDict

    levels = int(math.log2(downscale)) + 1  # diffusers: vae_scale_factor = 2 ** (len(block_out_channels) - 1)
    config = {"scaling_factor": scaling_factor, "shift_factor": shift_factor,
              "latents_mean": None if mean is None else [float(v) for v in mean],
              "latents_std": None if std is None else [float(v) for v in std], "z_dim": host.latent_channels,
              "force_upcast": False, "latent_channels": host.latent_channels,
              "block_out_channels": [host.latent_channels] * levels}
    # diffusers' Wan: spatial factor 2 ** len(temperal_downsample), temporal 2 ** sum(temperal_downsample)
    steps = int(math.log2(temporal)) if temporal else 0
    downsample = [False] * (levels - 1 - steps) + [True] * steps

    class BridgedVae(torch.nn.Module):
        HOST_MODEL = True

        def __init__(self):
            super().__init__()
            self.config, self.host = FrozenDict(config), host
            self.temperal_downsample = downsample

        @property
        def dtype(self):
            return torch.float32

        def encode(self, x, return_dict=True):
            latents = host.encode(x)
            return types.SimpleNamespace(latents=latents) if return_dict else (latents,)

        def decode(self, z, return_dict=True, generator=None):
            images = host.decode(z)
            return types.SimpleNamespace(sample=images) if return_dict else (images,)

    return BridgedVae()


HOST_TEXT = "_modular_loops_host_text"  # a bridged pipeline's host text encoder (`HostText`), when given one


def context_width(config) -> int:
    """The text embedding width a bridged denoiser takes."""
    return config.get("joint_attention_dim") or config.get("text_dim") or config["cross_attention_dim"]


def pooled_width(config) -> int | None:
    """The pooled vector width a bridged denoiser takes (SDXL: its added embedding minus the six size ids)."""
    if "addition_time_embed_dim" in config:
        return config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    return config.get("pooled_projection_dim")


def stand_in(block, components):
    """The block a run on `components` runs for `block`: a bridged pipeline with the host's text encoder runs the
    family's text encoder step (the one that needs diffusers' `text_encoder`) as `host_text_step` of it."""
    pipeline = getattr(components, "_pipeline", components)
    if getattr(pipeline, HOST_TEXT, None) is None or "text_encoder" not in {c.name for c in block.expected_components}:
        return block
    return host_text_step(block)


def host_text_step(original):
    """The family's text encoder step on the host's text encoder: the same prompt inputs and embeddings out
    (diffusers' declarations, read from `original`), each prompt encoded by the host (its CLIP: tokenizer,
    weights, LoRAs, CLIP Set Last Layer) into its conditioning, read as `conditioning_values` does. An empty
    negative prompt is zeros where the family's step makes it so (SDXL's `force_zeros_for_empty_prompt`)."""
    import torch
    from diffusers.modular_pipelines import ModularPipelineBlocks

    outputs = {o.name for o in original.intermediate_outputs}
    negative = "negative_prompt_embeds" in outputs
    zeros_config = any(c.name == "force_zeros_for_empty_prompt" for c in original.expected_configs)
    where = type(original).__name__

    class HostTextEncoderStep(ModularPipelineBlocks):
        model_name = original.model_name

        @property
        def description(self):
            return f"{where} on the host's text encoder (a bridged pipeline's CLIP)"

        @property
        def expected_components(self):
            return []

        @property
        def expected_configs(self):
            return list(original.expected_configs)

        @property
        def inputs(self):
            return [p for p in original.inputs if p.name and (p.name.removeprefix("negative_") in PROMPTS
                                                              or p.name == "clip_skip")]

        @property
        def intermediate_outputs(self):
            return list(original.intermediate_outputs)

        @torch.no_grad()
        def __call__(self, components, state):
            block_state = self.get_block_state(state)
            if getattr(block_state, "clip_skip", None) is not None:
                raise ConfigError(f"{where}: clip_skip {block_state.clip_skip} on a bridged pipeline: set it on "
                                  f"the CLIP with CLIP Set Last Layer")
            denoiser = bridged_denoisers(components)[0]
            family, config = denoiser.family, denoiser.config
            host = getattr(components, HOST_TEXT)
            positive = host.encode(prompt_texts(family, block_state, ""))
            zero = negative and (zeros_config and getattr(block_state, "negative_prompt", None) is None
                                 and components.config.force_zeros_for_empty_prompt)
            unconditional = (host.encode(prompt_texts(family, block_state, "negative_"))
                             if negative and not zero else None)
            values = conditioning_values(family, positive, unconditional, context_width(config),
                                         pooled_width(config), f"{where} (the host's text encoder)")
            if zero:
                values["negative_prompt_embeds"] = torch.zeros_like(values["prompt_embeds"])
                if family.pooled:
                    values["negative_pooled_prompt_embeds"] = torch.zeros_like(values["pooled_prompt_embeds"])
            for name, value in values.items():
                if name in outputs:
                    setattr(block_state, name, value)
            self.set_block_state(state, block_state)
            return components, state

    return HostTextEncoderStep()


PROMPTS = ("prompt", "prompt_2", "prompt_3")


def prompt_texts(family: Family, block_state, prefix: str) -> dict:
    """{the host text encoder's part: text} for one prompt of the call (`prefix` "negative_" for the negative one):
    diffusers' rule, `prompt_N` defaults to `prompt` (and a missing negative prompt is "")."""
    main = getattr(block_state, f"{prefix}prompt", None) or ""
    texts = {"": main}
    for name, part in family.prompts.items():
        text = getattr(block_state, f"{prefix}{name}", None) if name != "prompt" else main
        texts[part] = text if text else main
    return texts


def check_guider(guider, pipeline, label: str):
    """Refuse, before the loop, a guider that patches the denoiser's own layers (it overrides `prepare_models`:
    diffusers' layer hooks) in a way the host's model cannot follow on a bridged pipeline. Followed (`followed`):
    skipping whole transformer blocks (skip-layer guidance, auto guidance with a dropout of 1) of a family whose
    blocks the host can skip (SD3, Flux, Wan: ComfyUI's "dit" block replacement, as its own Skip Layer Guidance
    nodes do), and changing the self-attention of a family whose attention the host can replace (SDXL: ComfyUI's
    attn1 replacement, as its own Perturbed Attention Guidance node does): its scores skipped (perturbed attention)
    or its query blurred by diffusers' own hook (smoothed energy). Refused: partial dropout (random), partial skips,
    other combinations."""
    if guider is None or pipeline is None or not bridged_denoisers(pipeline):
        return
    from diffusers.guiders.guider_utils import BaseGuidance

    if type(guider).prepare_models is BaseGuidance.prepare_models:
        return
    denoiser = bridged_denoisers(pipeline)[0]
    family = denoiser.family
    configs = next((c for c in (getattr(guider, name, None) for name in LAYER_CONFIGS) if c), None)
    why = [followed(c, family, denoiser) for c in configs] if configs else ["it hooks layers the bridge cannot map"]
    if not any(why):
        return
    can = [*(["whole blocks skipped (skip-layer guidance; auto guidance with a dropout of 1)"]
             if family.block_stacks else []),
           *(["self-attention changed (perturbed attention, smoothed energy), with its layers named by `fqn`"]
             if family.attention_scores else [])]
    raise ConfigError(f"{label}: the guider {type(guider).__name__} works by hooking the denoiser's own layers "
                      f"(diffusers' layer hooks) in a way a ComfyUI MODEL behind Diffusers Pipeline From MODEL cannot "
                      f"follow ({next(w for w in why if w)})"
                      + (f"; on {family.name} the bridge follows {' and '.join(can)}" if can else "")
                      + "; or use a guider that combines predictions (ClassifierFreeGuidance, "
                        "AdaptiveProjectedGuidance, TangentialClassifierFreeGuidance, ...)")


# a layer-hooking guider's configs of the layers it hooks (skip-layer, perturbed attention, auto guidance: diffusers'
# LayerSkipConfig; smoothed energy: its SmoothedEnergyGuidanceConfig)
LAYER_CONFIGS = ("skip_layer_config", "auto_guidance_config", "seg_guidance_config")


def followed(config, family: Family, denoiser) -> str:
    """Why the host's model cannot follow a layer config on `denoiser` ("" where it can)."""
    if not hasattr(config, "dropout"):  # smoothed energy: the query of the blocks' self-attention blurred
        return "" if _names_attention(config, family, denoiser) else (
            f"a query blurred in {config.fqn!r}" + ("" if family.attention_scores else
                                                    f" (no {family.name} self-attention the host can replace)"))
    if not math.isclose(config.dropout, 1.0):
        return f"a dropout of {config.dropout}"
    if config.skip_attention and config.skip_ff and not config.skip_attention_scores:
        if family.block_stacks and config.fqn in ("auto", *family.block_stacks):
            return ""
        return f"whole blocks of {config.fqn!r} skipped"
    if config.skip_attention_scores and not config.skip_attention and not config.skip_ff:
        if _names_attention(config, family, denoiser):
            return ""
        return (f"attention scores skipped in {config.fqn!r}" if config.fqn != "auto" else
                f"attention scores skipped in 'auto' blocks (diffusers' UNet has none: name them with `fqn`, e.g. "
                f"'mid_block.attentions.0.transformer_blocks')")
    return "a partial skip (attention or feed-forward alone)"


def _names_attention(config, family: Family, denoiser) -> bool:
    """The config's `fqn` names blocks holding self-attention stand-ins of a family whose attention the host takes."""
    prefix = f"{config.fqn}."
    return family.attention_scores and any(path.startswith(prefix) for path in denoiser.attention)


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
    import torch

    values = {}
    for prefix, name, conditioning in (("", "positive", positive), ("negative_", "negative", negative)):
        if conditioning is None:
            continue
        embeds, pooled = _one_conditioning(conditioning, f"{label}: '{name}'", context_dim, pooled_dim, family)
        values[f"{prefix}prompt_embeds"] = embeds
        if family.embeds_mask:  # the host's embeddings are the prompt's own tokens: all kept
            values[f"{prefix}prompt_embeds_mask"] = torch.ones(embeds.shape[:2], dtype=torch.long,
                                                               device=embeds.device)
        if family.pooled:
            values[f"{prefix}pooled_prompt_embeds"] = pooled
        if not prefix:
            options = conditioning[0][1] or {}
            values.update({state: options[key] for key, state in family.options.items() if key in options})
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
