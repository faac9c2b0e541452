"""diffusers' loops on ComfyUI's own MODEL: Diffusers Pipeline From MODEL (the family's modular pipeline whose
denoiser is the MODEL, reached through ComfyUI's own model call) and CONDITIONING To State (CLIP Text Encode's
conditioning and a LATENT's size as the state the family's steps read).

The conversions are `modular.pipelines.bridge`'s; what is ComfyUI's is here: `ComfyModel` calls the MODEL the way
KSampler's CFGGuider does, inside one sampling session per node run (`sessions`): the patcher's wrappers and
callbacks merged into a clone of its model_options (`prepare_model_patcher`), the model and its additional models
loaded with their weight patches (LoRAs) by `prepare_sampling` -> `load_models_gpu`, `pre_run`, and each call
through `comfy.samplers.calc_cond_batch` (hooks, transformer_options patches, model_function_wrapper,
APPLY_MODEL / DIFFUSION_MODEL wrappers); afterwards `cleanup`, `cleanup_models`, `restore_hook_patches`."""

from __future__ import annotations

import contextlib
import functools
import types
import uuid

from ...modular import ConfigError, copy_state
from ...modular.pipelines import bridge
from ...modular.pipelines.latents import LATENT_IO
from ..widgets import PIPELINE_TYPE, STATE_TYPE
from . import CATEGORY

FROM_MODEL = "Diffusers Pipeline From MODEL"
TO_STATE = "CONDITIONING To State"
DISCRETE = ("EPS", "V_PREDICTION")  # ComfyUI model types whose denoised estimate converts to epsilon on a discrete schedule
FLOW = ("FLOW", "FLUX")  # ... to the flow velocity, with a shifted flow-matching schedule


class ComfyModel:
    """`bridge.HostModel` on a ComfyUI ModelPatcher: sigma from its (patched) model_sampling, the denoised estimate
    through `calc_cond_batch` in a sampling session."""

    def __init__(self, patcher):
        self.patcher = patcher
        self.model_options = None  # the open session's
        self._close = None
        self.sample_sigmas = lambda: None  # the run's schedule (ComfyUI's transformer_options["sample_sigmas"])

    @property
    def model_sampling(self):
        return self.patcher.get_model_object("model_sampling")

    @property
    def sigma_data(self):
        return float(self.model_sampling.sigma_data)

    def sigma(self, timestep):
        return self.model_sampling.sigma(timestep)

    def open(self, noise_shape, sigmas=None):
        """Start a sampling session as CFGGuider.sample / outer_sample do (see the module's docstring)."""
        import comfy.model_patcher
        import comfy.sampler_helpers

        if self.model_options is not None:
            return
        patcher = self.patcher
        model_options = comfy.model_patcher.create_model_options_clone(patcher.model_options)
        model_options.setdefault("transformer_options", {})
        hook_mode, conds = patcher.hook_mode, {}
        comfy.sampler_helpers.prepare_model_patcher(patcher, conds, model_options)
        _, conds, loaded = comfy.sampler_helpers.prepare_sampling(patcher, noise_shape, conds, model_options)
        if sigmas is not None:
            model_options["transformer_options"]["sample_sigmas"] = sigmas
        patcher.pre_run()

        def close():
            patcher.cleanup()
            comfy.sampler_helpers.cleanup_models(conds, loaded)
            patcher.hook_mode = hook_mode
            patcher.restore_hook_patches()

        self.model_options, self._close = model_options, close

    def close(self):
        close, self.model_options, self._close = self._close, None, None
        if close is not None:
            close()

    def denoise(self, x, sigma, rows, uncond, skip=()):
        import comfy.model_management
        import comfy.model_patcher
        import comfy.samplers

        if self.model_options is None:  # the first call of a node's run: its session, closed by `sessions`
            self.open(tuple(x.shape), self.sample_sigmas())
        comfy.model_management.throw_exception_if_processing_interrupted()
        base = self.patcher.model
        device = self.patcher.load_device
        x, sigma = x.to(device), sigma.to(device)
        per_row = [base.extra_conds(device=device, noise=x[i:i + 1], **row) for i, row in enumerate(rows)]
        merged = {k: per_row[0][k] if len(per_row) == 1 else
                  type(per_row[0][k])(per_row[0][k].concat([r[k] for r in per_row[1:]])) for k in per_row[0]}
        cond = {"model_conds": merged, "uuid": uuid.uuid4()}
        conds = [None, [cond]] if uncond else [[cond]]  # an unconditional batch: patches see cond_or_uncond [1]
        model_options = self.model_options
        if skip:  # what a layer-skipping guider skips in this batch, as ComfyUI's own Skip Layer Guidance (a "dit"
            # block handing its inputs on) and Perturbed Attention Guidance (an attn1 giving its values) patch it
            model_options = dict(model_options)
            for name, *where in skip:
                if name == "attn1_query":  # smoothed energy: the query changed, then ComfyUI's own attention
                    name, patch, where = "attn1", functools.partial(query_attention, where[0]), where[1:]
                else:
                    patch = {"dit": skip_block, "attn1": attention_values}[name]
                model_options = comfy.model_patcher.set_model_options_patch_replace(model_options, patch, name, *where)
        return comfy.samplers.calc_cond_batch(base, conds, x, sigma, model_options)[-1]


def skip_block(args, extra_args):
    """A transformer block that hands its inputs on unchanged (ComfyUI's Skip Layer Guidance's `skip`)."""
    return args


def attention_values(q, k, v, extra_options, mask=None):
    """An attention whose scores are skipped: its values (ComfyUI's Perturbed Attention Guidance's attention)."""
    return v


def query_attention(transform, q, k, v, extra_options, mask=None):
    """A self-attention on a changed query (smoothed energy guidance: diffusers' own blur of it), by ComfyUI's own
    attention for the model (its override, e.g. SDPA, applies), as ComfyUI's Self-Attention Guidance replaces one."""
    import comfy.ldm.modules.attention as attention

    return attention.optimized_attention(transform(q), k, v, extra_options["n_heads"], mask=mask,
                                         attn_precision=extra_options.get("attn_precision"),
                                         transformer_options=extra_options)


def unet_attention(base) -> dict:
    """A ComfyUI UNet's self-attention layers, {diffusers' module path: ComfyUI's attn1 key (block, number,
    transformer index)}, from ComfyUI's own key map (`unet_to_diffusers`)."""
    import comfy.utils

    blocks = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}
    found = {}
    for diffusers_key, comfy_key in comfy.utils.unet_to_diffusers(base.model_config.unet_config).items():
        if not diffusers_key.endswith(".attn1.to_q.weight"):
            continue
        parts = comfy_key.split(".")
        block = blocks[parts[0]]
        found[diffusers_key[:-len(".to_q.weight")]] = (block, 0 if block == "middle" else int(parts[1]),
                                                        int(parts[parts.index("transformer_blocks") + 1]))
    return found


def model_family(model, label: str) -> bridge.Family:
    """The bridged family of a ComfyUI MODEL, refused by name when it is none or cannot be bridged."""
    base = getattr(model, "model", None)
    if base is None or not hasattr(model, "model_options"):
        raise ConfigError(f"{label}: 'model' is not a ComfyUI MODEL")
    family = bridge.family_for(type(base).__name__, type(getattr(base, "model_config", None)).__name__)
    model_type = getattr(getattr(base, "model_type", None), "name", "?")
    sampling = model.get_model_object("model_sampling")
    types_, needs, kind = (FLOW, "shift", "flow-matching") if family.flow else (DISCRETE, "sigmas", "discrete")
    if model_type not in types_ or not hasattr(sampling, needs):
        raise ConfigError(f"{label}: a {type(base).__name__} model with {model_type} prediction on "
                          f"{type(sampling).__name__}: only {' / '.join(types_)} on a {kind} schedule is bridged for "
                          f"{family.name}")
    unet = base.model_config.unet_config
    channels = unet.get("in_channels", unet.get("in_dim")) // family.host_packing
    latent = base.latent_format.latent_channels
    if channels != latent:
        raise ConfigError(f"{label}: a {type(base).__name__} model taking {channels} input channels for latents of "
                          f"{latent} (an inpainting or other conditioned model: it takes the image beside the "
                          f"latents); only the base model is bridged")
    return family


def sdxl_config(base) -> dict:
    """What diffusers' SDXL blocks read of `unet.config`, from ComfyUI's SDXL model (SDXL's size ids are embedded
    by its `embedder`, a Timestep(256))."""
    unet = base.model_config.unet_config
    return {"in_channels": unet["in_channels"], "out_channels": unet["out_channels"],
            "sample_size": unet.get("image_size") or 128, "cross_attention_dim": unet["context_dim"],
            "addition_time_embed_dim": base.embedder.dim, "addition_embed_type": "text_time",
            "projection_class_embeddings_input_dim": unet["adm_in_channels"], "time_cond_proj_dim": None}


def sd3_config(base) -> dict:
    """What diffusers' SD3 blocks read of `transformer.config`, from ComfyUI's SD3 model (MMDiT)."""
    unet = base.model_config.unet_config
    return {"in_channels": unet["in_channels"], "out_channels": unet.get("out_channels") or unet["in_channels"],
            "patch_size": unet["patch_size"], "sample_size": 128, "num_layers": unet["depth"],
            "joint_attention_dim": unet["context_embedder_config"]["params"]["in_features"],
            "pooled_projection_dim": unet["adm_in_channels"]}


def flux_config(base) -> dict:
    """What diffusers' Flux blocks read of `transformer.config`, from ComfyUI's Flux model: diffusers' transformer
    takes the 2 x 2 packed latents (in_channels 4 x the latent channels)."""
    unet = base.model_config.unet_config
    return {"in_channels": unet["in_channels"] * 4, "out_channels": unet["in_channels"] * 4, "patch_size": 1,
            "latent_channels": unet["in_channels"], "joint_attention_dim": unet["context_in_dim"],
            "pooled_projection_dim": unet["vec_in_dim"], "guidance_embeds": bool(unet.get("guidance_embed")),
            "num_layers": unet["depth"], "num_single_layers": unet["depth_single_blocks"]}


def wan_config(base) -> dict:
    """What diffusers' Wan blocks read of `transformer.config`, from ComfyUI's Wan model (WanModel)."""
    unet = base.model_config.unet_config
    heads = unet.get("num_heads", 16)
    return {"in_channels": unet["in_dim"], "out_channels": unet.get("out_dim", unet["in_dim"]),
            "patch_size": list(unet.get("patch_size", (1, 2, 2))), "text_dim": unet.get("text_dim", 4096),
            "num_layers": unet["num_layers"], "num_attention_heads": heads,
            "attention_head_dim": unet.get("dim", 2048) // heads}


def qwenimage_config(base) -> dict:
    """What diffusers' Qwen-Image blocks read of `transformer.config`, from ComfyUI's Qwen-Image model: its
    transformer takes the 2 x 2 packed latents (in_channels 4 x the latent channels), as ComfyUI's config says."""
    unet = base.model_config.unet_config
    channels = base.latent_format.latent_channels
    return {"in_channels": unet.get("in_channels", 4 * channels), "out_channels": unet.get("out_channels", channels),
            "latent_channels": channels, "patch_size": unet.get("patch_size", 2),
            "joint_attention_dim": unet.get("joint_attention_dim", 3584), "num_layers": unet["num_layers"],
            "guidance_embeds": bool(unet.get("guidance_embeds", False))}


DENOISER_CONFIG = {"StableDiffusionXL": sdxl_config, "StableDiffusion3": sd3_config, "Flux": flux_config,
                   "Wan": wan_config, "QwenImage": qwenimage_config}


class ComfyText:
    """`bridge.HostText` on a ComfyUI CLIP: each part of the prompt tokenized by its own tokenizer (as CLIP Text
    Encode SDXL / SD3 / Flux do for their separate texts), encoded by `encode_from_tokens_scheduled` (its LoRAs,
    hooks and CLIP Set Last Layer apply)."""

    def __init__(self, clip):
        self.clip = clip

    def encode(self, texts):
        tokens = self.clip.tokenize(texts[""])
        for part, text in texts.items():
            if part and part in tokens and text != texts[""]:
                tokens[part] = self.clip.tokenize(text)[part]
        return self.clip.encode_from_tokens_scheduled(tokens)


class ComfyVae:
    """`bridge.HostVae` on a ComfyUI VAE: its own encode and decode (tiling, model management), images converted
    between diffusers' layout ([B, 3, H, W] in [-1, 1]) and ComfyUI's IMAGE ([B, H, W, 3] in [0, 1])."""

    def __init__(self, vae):
        self.vae = vae
        self.latent_channels = vae.latent_channels

    def encode(self, images):
        return self.vae.encode(((images.float() + 1.0) / 2.0).movedim(1, -1)).to(images.device)

    def decode(self, latents):
        return (self.vae.decode(latents).movedim(-1, 1) * 2.0 - 1.0).to(latents.device)


def bridged_pipeline(model, label: str = FROM_MODEL, clip=None, vae=None):
    """The family's diffusers modular pipeline with `model` (a ComfyUI MODEL) as its denoiser and the family's
    scheduler on the model's own schedule; its LATENTs convert with the model's latent format. With a `clip`, the
    family's text encoder step runs on it; with a `vae`, that VAE is the pipeline's (its latent channels must be the
    model's)."""
    import diffusers

    family = model_family(model, label)
    base = model.model
    config = DENOISER_CONFIG[family.name](base)
    host = ComfyModel(model)
    denoiser = bridge.make_denoiser(family, host, config, model.model_dtype(), model.load_device,
                                    attention=unet_attention(base) if family.attention_scores else None)
    pipeline = getattr(diffusers, family.blocks)().init_pipeline()
    sampling = host.model_sampling
    scheduler = (bridge.scheduler_for(family, shift=float(sampling.shift), exponential=exponential_shift(sampling))
                 if family.flow else bridge.scheduler_for(family, sampling.sigmas.detach().cpu()))
    components = {family.denoiser: denoiser, "scheduler": scheduler}
    latent_format = base.latent_format
    if vae is not None:
        channels = getattr(vae, "latent_channels", None)
        if channels != latent_format.latent_channels:
            raise ConfigError(f"{label}: 'vae' gives latents of {channels} channels, but this {type(base).__name__} "
                              f"model's have {latent_format.latent_channels}: connect this checkpoint's VAE")
        downscale, temporal = vae_factors(vae)
        components["vae"] = bridge.make_vae(ComfyVae(vae), float(latent_format.scale_factor),
                                            getattr(latent_format, "shift_factor", None), downscale,
                                            temporal=temporal, **per_channel(latent_format))
    pipeline.update_components(**components)
    setattr(pipeline, LATENT_IO, types.SimpleNamespace(to_host=base.process_latent_out,
                                                       from_host=lambda samples: base.process_latent_in(
                                                           with_frames(samples, latent_format))))
    if clip is not None:
        setattr(pipeline, bridge.HOST_TEXT, ComfyText(clip))
    return pipeline


def exponential_shift(sampling) -> bool:
    """Whether a MODEL's flow-matching schedule shifts exponentially by mu (ComfyUI's ModelSamplingFlux: Flux's, and
    Qwen-Image's own) or linearly by its shift (ModelSamplingDiscreteFlow: SD3's, Wan's, and what
    ModelSamplingAuraFlow / ModelSamplingSD3 set)."""
    import comfy.model_sampling

    return isinstance(sampling, comfy.model_sampling.ModelSamplingFlux)


def with_frames(samples, latent_format):
    """A 4-D LATENT of a model whose latents have a frame axis (Qwen-Image's Wan VAE latents: [B, C, 1, H, W]) with
    that axis, as ComfyUI's samplers add it (`fix_empty_latent_channels`)."""
    if getattr(latent_format, "latent_dimensions", 2) == 3 and samples.ndim == 4:
        return samples.unsqueeze(2)
    return samples


def vae_factors(vae) -> tuple:
    """(spatial, temporal) compression of a ComfyUI VAE (a video VAE's downscale_index_formula: (4, 8, 8) for Wan
    2.1's; an image VAE's downscale_ratio, no temporal)."""
    formula = getattr(vae, "downscale_index_formula", None)
    if isinstance(formula, tuple) and len(formula) == 3:
        return int(formula[-1]), int(formula[0])
    ratio = getattr(vae, "downscale_ratio", 8)
    return (int(ratio) if isinstance(ratio, (int, float)) else 8), None


def per_channel(latent_format) -> dict:
    """A latent format's per-channel mean and std (Wan's), for the bridged VAE's latents_mean / latents_std."""
    mean, std = getattr(latent_format, "latents_mean", None), getattr(latent_format, "latents_std", None)
    if mean is None or std is None:
        return {}
    return {"mean": mean.flatten().tolist(), "std": (std / latent_format.scale_factor).flatten().tolist()}


@contextlib.contextmanager
def sessions(pipeline, components):
    """The run's bridged denoisers see its components (their guider) and share one sampling session, closed when
    the node's run ends, also after a failure or an Interrupt."""
    denoisers = bridge.bridged_denoisers(pipeline) if pipeline is not None else []
    for denoiser in denoisers:
        denoiser.run = components
        denoiser.host.sample_sigmas = lambda: getattr(getattr(components, "scheduler", None), "sigmas", None)
    try:
        yield
    finally:
        for denoiser in denoisers:
            denoiser.run = None
            denoiser.host.sample_sigmas = lambda: None
            denoiser.host.close()


class PipelineFromModel:
    DESCRIPTION = ("A ComfyUI MODEL (from Load Checkpoint, with its LoRAs and patches) as the family's diffusers "
                   "pipeline, for diffusers' step, loop and guider nodes of that family: its denoiser is the MODEL "
                   "called through ComfyUI's own model call (as KSampler calls it, so LoRAs, model patches and "
                   "wrappers apply), its scheduler the family's diffusers scheduler on the MODEL's own noise schedule. "
                   "Prompts come in as CONDITIONING (CONDITIONING To State), latents go out as a LATENT (State To "
                   "LATENT -> VAE Decode). Bridged: " + ", ".join(f"{f.name} ({'/'.join(f.host_models)})"
                                                                   for f in bridge.FAMILIES) + ".")
    CATEGORY = CATEGORY
    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "The model to run diffusers' loop on (Load Checkpoint's, "
                                                            "after any LoRA Loader or model patch)."})},
                "optional": {"clip": ("CLIP", {"tooltip": "Its CLIP (Load Checkpoint's, after any LoRA Loader): the "
                                                          "family's text encoder step, and so its workflow node, "
                                                          "encode prompts with it."}),
                             "vae": ("VAE", {"tooltip": "Its VAE (Load Checkpoint's): the family's VAE encoder and "
                                                        "decode steps, and so its workflow node, use it (images in, "
                                                        "images out)."})}}

    def make(self, model, clip=None, vae=None):
        return (bridged_pipeline(model, clip=clip, vae=vae),)


class ConditioningToState:
    DESCRIPTION = ("CLIP Text Encode's CONDITIONING (positive, and negative for guidance) as the text embeddings a "
                   "bridged pipeline's steps read (SDXL: prompt_embeds and pooled_prompt_embeds, and the negative "
                   "ones), with an Empty Latent Image's size and batch as the call's height, width and images per "
                   "prompt (a video LATENT's, e.g. Empty Hunyuan Latent Video's for Wan, also its num_frames); a LATENT with content (VAE Encode's) as the image2image steps' image_latents, and its noise mask as "
                   "the inpainting steps' mask. Areas, masks, ControlNets and timestep ranges on the conditioning are "
                   "refused.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pipeline": (PIPELINE_TYPE, {"tooltip": "A Diffusers Pipeline From MODEL's."}),
                             "positive": ("CONDITIONING",)},
                "optional": {"negative": ("CONDITIONING", {"tooltip": "For guidance (CFG and the other guiders "
                                                                       "that need an unconditional prediction)."}),
                             "latent": ("LATENT", {"tooltip": "Its size gives height and width, its batch the images "
                                                              "per prompt; VAE Encode's gives the image_latents of "
                                                              "diffusers' image2image steps, its noise mask the mask "
                                                              "of its inpainting steps."}),
                             "state": (STATE_TYPE, {"tooltip": "A state to add them to."})}}

    def convert(self, pipeline, positive, negative=None, latent=None, state=None):
        denoisers = bridge.bridged_denoisers(pipeline)
        if not denoisers:
            raise ConfigError(f"{TO_STATE}: 'pipeline' is not a Diffusers Pipeline From MODEL's (its denoiser is no "
                              f"ComfyUI MODEL); a diffusers folder's pipeline encodes prompts with its text encoder step")
        denoiser = denoisers[0]
        family, config = denoiser.family, denoiser.config
        values = bridge.conditioning_values(family, positive, negative, bridge.context_width(config),
                                            bridge.pooled_width(config), TO_STATE)
        if latent is not None:
            values.update(latent_values(latent, values["prompt_embeds"].shape[0], family, config, pipeline))
        new = copy_state(state)
        for key, value in values.items():
            new.set(key, value)
        return (new,)


def latent_values(latent, prompts: int, family: bridge.Family, config, pipeline) -> dict:
    """A LATENT as the call's height, width and images per prompt (a video family's: also its num_frames, and
    videos per prompt); one with content (VAE Encode's) also as the `image_latents` diffusers' image2image steps
    start from (in the model's latent space: its own `process_latent_in`), and its noise mask (Set Latent Noise
    Mask, VAE Encode (for Inpainting)) as the `mask` of its inpainting steps (1: repaint), resized to the latents by
    ComfyUI's own `reshape_mask`, as KSampler does. A LATENT it cannot take is refused."""
    import comfy.utils

    from ...modular.core import compat
    from ...modular.pipelines.latents import from_host_latent

    samples = latent.get("samples") if isinstance(latent, dict) else None
    where = f"{TO_STATE}: 'latent'"
    if not family.video and samples is not None and samples.ndim == 5 and samples.shape[2] == 1:
        samples = samples[:, :, 0]  # an image in a frame axis (Qwen-Image's LATENTs after its VAE or a sampler)
    dims, layout = (5, "[batch, channels, frames, height, width]") if family.video else (4, "[batch, channels, height, width]")
    if samples is None or samples.ndim != dims:
        shape = None if samples is None else tuple(samples.shape)
        raise ConfigError(f"{where}: not a {'video' if family.video else 'image'} LATENT {layout} for {family.name} "
                          f"(got {shape}): use an empty latent of its own (Empty "
                          f"{'Hunyuan Latent Video' if family.video else 'Latent Image'})")
    channels = config.get("latent_channels", config["in_channels"])
    if samples.shape[1] != channels:
        raise ConfigError(f"{where}: {samples.shape[1]} channels, but this model's latents have {channels}: use "
                          f"this model's latent space (its VAE's VAE Encode; Empty Latent Image / Empty SD3 Latent "
                          f"Image)")
    if samples.shape[0] % prompts:
        raise ConfigError(f"{where}: a batch of {samples.shape[0]} for {prompts} prompt(s)")
    if family.video:
        spatial, temporal = pipeline.vae_scale_factor_spatial, pipeline.vae_scale_factor_temporal
        values = {"height": samples.shape[-2] * spatial, "width": samples.shape[-1] * spatial,
                  "num_frames": (samples.shape[2] - 1) * temporal + 1,
                  "num_videos_per_prompt": samples.shape[0] // prompts}
    else:
        factor = pipeline.vae_scale_factor
        values = {"height": samples.shape[2] * factor, "width": samples.shape[3] * factor,
                  "num_images_per_prompt": samples.shape[0] // prompts}
    mask = latent.get("noise_mask")
    if mask is None and not bool(samples.abs().max() > 0):
        return values  # an empty latent: text2image
    workflows = compat.workflow_names(pipeline.blocks) if family.from_image else []
    wanted = "inpainting" if mask is not None else "image2image"
    if wanted not in workflows:
        what = "a noise mask (inpainting)" if mask is not None else "content (VAE Encode's: image2image)"
        fix = "remove Set Latent Noise Mask" if mask is not None else "use an empty latent"
        has = (f"has no {wanted} workflow (it has {', '.join(workflows) or 'none named'})" if family.from_image else
               f"is bridged for text2image only (its {wanted} from a LATENT: not yet)")
        raise ConfigError(f"{where}: a LATENT with {what}, but diffusers' {type(pipeline.blocks).__name__} {has}; "
                          f"{fix}")
    values["image_latents"] = from_host_latent(pipeline, samples)
    if mask is not None:
        values["mask"] = comfy.utils.reshape_mask(mask.float(), (samples.shape[0], 1, *samples.shape[2:]))
    return values


NODES = {"ModularPipelineFromModel": (PipelineFromModel, FROM_MODEL),
         "ModularConditioningToState": (ConditioningToState, TO_STATE)}
