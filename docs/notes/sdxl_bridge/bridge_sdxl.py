"""Prototype: diffusers' modular SDXL denoise loop on a ComfyUI MODEL (a ModelPatcher), through ComfyUI's own
model call so that the patcher's weight patches, model_options wrappers and transformer_options patches apply.

    nice -n 19 <comfy venv>/bin/python bridge_sdxl.py [--comfy /path/to/ComfyUI]

Builds a tiny SDXL UNet in diffusers (seeded), the same weights in ComfyUI's SDXL network wrapped in a ModelPatcher,
and `ComfyUNet`: a torch module with diffusers' UNet2DConditionModel call signature whose forward goes through
`comfy.samplers.calc_cond_batch` (the path KSampler's CFGGuider takes) inside a sampling session that mirrors
`CFGGuider.sample` / `outer_sample` (prepare_model_patcher, prepare_sampling -> load_models_gpu, pre_run, cleanup).
Prints the measurements listed in REPORT.md.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import types
import uuid

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH") or sorted(
    glob.glob(os.path.expanduser("~/.cache/modular-loops-ci/hosts/comfyui-0.33.0-*/ComfyUI")))[-1])
parser.add_argument("--steps", type=int, default=4)
cli = parser.parse_args()
sys.argv = sys.argv[:1]  # ComfyUI's own cli parsing (if switched on) must not see ours
sys.path.insert(0, cli.comfy)
os.chdir(cli.comfy)

from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.model_management as mm  # noqa: E402
import comfy.conds  # noqa: E402
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import comfy.sampler_helpers  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402

import diffusers  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.configuration_utils import FrozenDict  # noqa: E402

torch.set_num_threads(1)
print(f"ComfyUI at {cli.comfy}")
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, ComfyUI default attention: "
      f"{comfy_attention.optimized_attention.__name__}")

# ---------------------------------------------------------------------------------------------------------------------
# 1. The tiny SDXL UNet, in diffusers and in ComfyUI

TEXT_DIM = 32  # pooled text embeds (text_encoder_2's projection_dim)
TIME_ID_DIM = 256  # ComfyUI hard-codes SDXL's size-id embedder as Timestep(256)
DIFFUSERS_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=TIME_ID_DIM, transformer_layers_per_block=(1, 1),
    projection_class_embeddings_input_dim=TEXT_DIM + 6 * TIME_ID_DIM, cross_attention_dim=64,
    norm_num_groups=32)  # ComfyUI hard-codes GroupNorm(32, ...)
# The same network in ComfyUI's terms (what model_detection.detect_unet_config would give, written by hand: detection
# finds no supported model for these sizes). diffusers' attention_head_dim=(2, 4) is really a head count; only the
# second level and the middle block have attention, both 4 heads.
COMFY_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": TEXT_DIM + 6 * TIME_ID_DIM, "in_channels": 4,
    "model_channels": 32, "num_res_blocks": [1, 1], "transformer_depth": [0, 1], "channel_mult": [1, 2],
    "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 64,
    "transformer_depth_output": [0, 0, 1, 1], "use_temporal_attention": False, "use_temporal_resblock": False,
}
HEADS = {"num_heads": 4, "num_head_channels": -1}


def seeded(module, seed=0, scale=0.1):
    """Every float parameter / buffer from one seeded generator in name order (norm weights 1, biases 0)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted([*module.named_parameters(), *module.named_buffers()]):
        if not p.is_floating_point():
            continue
        if "norm" in name and name.endswith("weight"):
            p.data.fill_(1.0)
        elif name.endswith("bias"):
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)  # non-zero: the key map must get biases right too
        else:
            p.data.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def diffusers_unet(seed=0):
    return seeded(UNet2DConditionModel(**DIFFUSERS_UNET), seed).eval()


def comfy_sdxl_patcher(diffusers_state_dict):
    """ComfyUI's own SDXL BaseModel (model_base.SDXL, openaimodel.UNetModel) with the diffusers weights, in a
    ModelPatcher, as comfy.sd.load_diffusion_model_state_dict builds one."""
    config = comfy.supported_models.SDXL(dict(COMFY_UNET))
    config.unet_config.update(HEADS)  # BASE.__init__ resets num_heads / num_head_channels to -1 / 64
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device="cpu")  # model_base.SDXL, EPS prediction
    key_map = comfy.utils.unet_to_diffusers(config.unet_config)  # diffusers key -> ComfyUI key
    unmapped = [k for k in diffusers_state_dict if k not in key_map]
    assert not unmapped, unmapped
    sd = {key_map[k]: v for k, v in diffusers_state_dict.items()}
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    return patcher, key_map


# ---------------------------------------------------------------------------------------------------------------------
# 2. The adapter

class ComfyUNet(torch.nn.Module):
    """diffusers' UNet2DConditionModel call on a ComfyUI MODEL.

    Conventions converted (SDXL, EPS / V prediction, ModelSamplingDiscrete):
    - timestep -> sigma: the MODEL's own `model_sampling.sigma(t)` (after loading: object patches applied);
    - input: diffusers hands the UNet the variance-preserving input x_t = x / sqrt(sigma^2 + 1) whatever its
      scheduler (Euler scales with scale_model_input, DDIM / DPM keep latents in that form); ComfyUI's apply_model
      wants x (it does calculate_input itself), so x = sample * sqrt(sigma^2 + sigma_data^2);
    - output: apply_model returns the denoised x0; eps = (x - x0) / sigma, or v (diffusers' v_prediction);
    - `y`: the MODEL's own `extra_conds` (SDXL.encode_adm: pooled + Timestep(256) of the six size ids) per batch
      row, from diffusers' `text_embeds` and `time_ids` (orig h, w, crop top, left, target h, w);
      `c_crossattn`: encoder_hidden_states.
    The call is `comfy.samplers.calc_cond_batch(model, [conds], x, sigma, model_options)`: CALC_COND_BATCH wrappers,
    hooks, transformer_options (+ per-cond patches, cond_or_uncond, sigmas), model_function_wrapper, then
    `BaseModel.apply_model` (APPLY_MODEL wrappers) -> diffusion_model (DIFFUSION_MODEL wrappers, attention patches).
    """

    def __init__(self, patcher, prediction_type="epsilon", sample_size=None, guider=None, io_dtype=torch.float32):
        super().__init__()
        self.guider = guider  # diffusers guider: its public `is_conditional` gives ComfyUI's cond_or_uncond
        self.io_dtype = io_dtype  # dtype of ComfyUI's x / x0 (KSampler: float32; float64 makes the round trip exact)
        self.patcher = patcher  # not a submodule: diffusers must not .to() / offload ComfyUI's weights
        base = patcher.model
        unet_config = base.model_config.unet_config
        adm = unet_config["adm_in_channels"]
        self.prediction_type = prediction_type
        # What diffusers' SDXL blocks read from `components.unet` besides calling it.
        self.config = FrozenDict(dict(
            in_channels=unet_config["in_channels"], out_channels=unet_config["out_channels"],
            sample_size=sample_size or unet_config.get("image_size", 128), addition_time_embed_dim=TIME_ID_DIM,
            projection_class_embeddings_input_dim=adm, cross_attention_dim=unet_config["context_dim"],
            time_cond_proj_dim=None, addition_embed_type="text_time"))
        self.add_embedding = types.SimpleNamespace(linear_1=types.SimpleNamespace(in_features=adm))
        self.cond_or_uncond = None  # list like [0] / [1] for transformer_options; None -> all "cond" (0)
        self._session = None
        self.calls = 0

    @property
    def dtype(self):
        return self.patcher.model_dtype()

    @property
    def device(self):
        return self.patcher.load_device

    # The sampling session: what CFGGuider.sample + outer_sample do around KSampler's steps.
    @contextlib.contextmanager
    def session(self, noise_shape, sigmas=None):
        patcher = self.patcher
        model_options = comfy.model_patcher.create_model_options_clone(patcher.model_options)
        model_options.setdefault("transformer_options", {})
        orig_hook_mode = patcher.hook_mode
        conds = {}
        # merges patcher.wrappers / callbacks into model_options["transformer_options"] (without this,
        # add_wrapper(_with_key) wrappers never run) and registers hooks of conds (none here)
        comfy.sampler_helpers.prepare_model_patcher(patcher, conds, model_options)
        _, conds, loaded = comfy.sampler_helpers.prepare_sampling(patcher, noise_shape, conds, model_options)
        if sigmas is not None:
            model_options["transformer_options"]["sample_sigmas"] = sigmas
        patcher.pre_run()  # sets model.current_patcher (calc_cond_batch needs it), ON_PRE_RUN callbacks
        self._session = model_options
        try:
            yield self
        finally:
            self._session = None
            patcher.cleanup()
            comfy.sampler_helpers.cleanup_models(conds, loaded)
            patcher.hook_mode = orig_hook_mode
            patcher.restore_hook_patches()

    def forward(self, sample, timestep, encoder_hidden_states, class_labels=None, timestep_cond=None,
                attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=True, **unused):
        if self._session is None:  # called outside a session: open one for this call
            with self.session(sample.shape):
                return self.forward(sample, timestep, encoder_hidden_states, class_labels, timestep_cond,
                                    attention_mask, cross_attention_kwargs, added_cond_kwargs, return_dict)
        self.calls += 1
        model_options = self._session
        base = self.patcher.model
        ms = base.model_sampling
        device = self.patcher.load_device
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, device=ms.sigmas.device).float().reshape(-1).expand(batch)
        sigma = ms.sigma(t).to(device, self.io_dtype)
        s = sigma.reshape(-1, *([1] * (sample.ndim - 1)))
        x = sample.to(device, self.io_dtype) * (s ** 2 + ms.sigma_data ** 2) ** 0.5

        added = added_cond_kwargs or {}
        width, height = sample.shape[-1] * 8, sample.shape[-2] * 8
        model_conds = []
        for i in range(batch):
            kw = {"device": device, "noise": x[i:i + 1], "cross_attn": encoder_hidden_states[i:i + 1],
                  "width": width, "height": height}
            if "text_embeds" in added:
                kw["pooled_output"] = added["text_embeds"][i:i + 1]
            if "time_ids" in added:
                h, w, top, left, th, tw = [float(v) for v in added["time_ids"][i].tolist()]
                kw.update(height=h, width=w, crop_h=top, crop_w=left, target_height=th, target_width=tw)
            model_conds.append(base.extra_conds(**kw))  # {"y": CONDRegular, "c_crossattn": CONDCrossAttn}
        # one batch: ComfyUI's CONDs concatenate themselves (CONDCrossAttn pads differing token counts)
        merged = {k: model_conds[0][k] if batch == 1 else
                  type(model_conds[0][k])(model_conds[0][k].concat([m[k] for m in model_conds[1:]]))
                  for k in model_conds[0]}
        cond = {"model_conds": merged, "uuid": uuid.uuid4()}
        conds = [[cond]]
        cond_or_uncond = self.cond_or_uncond
        if cond_or_uncond is None and self.guider is not None and hasattr(self.guider, "is_conditional"):
            cond_or_uncond = [0] if self.guider.is_conditional else [1]
        if cond_or_uncond and cond_or_uncond[0] == 1:
            conds = [None, [cond]]  # an "uncond" batch: transformer_options["cond_or_uncond"] == [1]
        out = comfy.samplers.calc_cond_batch(base, conds, x, sigma, model_options)
        denoised = out[-1]
        if self.prediction_type == "epsilon":
            pred = (x - denoised) / s
        elif self.prediction_type == "v_prediction":
            eps = (x - denoised) / s
            alpha, sig = 1 / (s ** 2 + 1) ** 0.5, s / (s ** 2 + 1) ** 0.5
            pred = alpha * eps - sig * denoised
        else:
            raise ValueError(self.prediction_type)
        pred = pred.to(sample.dtype)
        return (pred,) if not return_dict else types.SimpleNamespace(sample=pred)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Measurements


def sdpa(func, *a, **kw):
    return comfy_attention.attention_pytorch(*a, **kw)


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def main():
    ref = diffusers_unet()
    dsd = ref.state_dict()
    patcher, key_map = comfy_sdxl_patcher(dsd)
    print(f"model_sampling: {type(patcher.model.model_sampling).__name__}, "
          f"latent_format {type(patcher.model.latent_format).__name__}")

    # one forward, as the modular loop calls the UNet (scaled latents, integer timestep, SDXL time ids)
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 16, 16, generator=g)
    ehs = torch.randn(2, 7, 64, generator=g)
    added = {"text_embeds": torch.randn(2, TEXT_DIM, generator=g),
             "time_ids": torch.tensor([[128., 128., 0., 0., 128., 128.], [96., 112., 4., 8., 128., 120.]])}
    sd_patcher = patcher.clone()
    sd_patcher.model_options["transformer_options"]["optimized_attention_override"] = sdpa
    with torch.no_grad():
        for t in (999, 501, 21):
            want = ref(sample, torch.tensor(t), ehs, added_cond_kwargs=added, return_dict=False)[0]
            got = {}
            for label, p, io in (("SDPA", sd_patcher, torch.float32), ("SDPA float64 io", sd_patcher, torch.float64),
                                 ("CPU default", patcher, torch.float32),
                                 ("CPU default float64 io", patcher, torch.float64)):
                got[label] = ComfyUNet(p, io_dtype=io)(sample, torch.tensor(t), ehs, added_cond_kwargs=added,
                                                       return_dict=False)[0]
            # the bare network (no conversions), for attribution only: what the adapter must NOT call in the feature
            y = torch.cat([patcher.model.encode_adm(pooled_output=added["text_embeds"][i:i + 1], height=h, width=w,
                                                    crop_h=c0, crop_w=c1, target_height=th, target_width=tw)
                           for i, (h, w, c0, c1, th, tw) in enumerate(added["time_ids"].tolist())])
            bare = patcher.model.diffusion_model(sample, torch.tensor([float(t)] * 2), context=ehs, y=y,
                                                 transformer_options={"optimized_attention_override": sdpa})
            print(f"[forward t={t}] |eps| max {want.abs().max().item():.3f}; max|diff| vs diffusers UNet: "
                  + ", ".join(f"{k} {maxdiff(v, want):.3g}" for k, v in got.items())
                  + f"; bare network (SDPA, no conversion) {maxdiff(bare, want):.3g}")
        # fractional timestep: ComfyUI's model_sampling.timestep() rounds to the nearest integer t
        t = torch.tensor(500.4)
        want = ref(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        got = ComfyUNet(sd_patcher)(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        want_round = ref(sample, torch.tensor(500.0), ehs, added_cond_kwargs=added, return_dict=False)[0]
        print(f"[forward t=500.4] vs diffusers at 500.4: {maxdiff(got, want):.3g}; vs diffusers at 500: "
              f"{maxdiff(got, want_round):.3g}  (ComfyUI quantises t)")

    run_pipeline(ref, patcher)
    lora_check(ref, patcher, key_map, sample, ehs, added)
    wrapper_check(patcher, sample, ehs, added)


def tiny_sdxl_components(unet, seed=0):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "fixtures"))
    from tiny_diffusers import tiny_tokenizer  # the pack's tiny byte-level CLIP tokenizer
    from diffusers import AutoencoderKL, EulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    text = CLIPTextConfig(bos_token_id=514, eos_token_id=515, hidden_size=32, intermediate_size=37,
                          layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, pad_token_id=1,
                          vocab_size=516, hidden_act="gelu", projection_dim=TEXT_DIM, max_position_embeddings=16)
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
                        norm_num_groups=8, down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], sample_size=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    tok = tiny_tokenizer()
    return dict(unet=unet, vae=vae.eval(), text_encoder=CLIPTextModel(text).eval(),
                text_encoder_2=CLIPTextModelWithProjection(text).eval(), tokenizer=tok, tokenizer_2=tok,
                scheduler=scheduler)


def run_pipeline(ref, patcher):
    import time
    from diffusers import StableDiffusionXLAutoBlocks
    from diffusers.guiders import ClassifierFreeGuidance

    comps = tiny_sdxl_components(ref)
    pipe = StableDiffusionXLAutoBlocks().init_pipeline()
    pipe.update_components(**comps, guider=ClassifierFreeGuidance(guidance_scale=5.0))
    call = dict(prompt="a tiny red cube", negative_prompt="blurry", num_inference_steps=cli.steps, height=32,
                width=32, output="latents")
    seen = []

    def record(apply_model, a):  # a model_function_wrapper: records what ComfyUI's patches would see
        seen.append(tuple(a["cond_or_uncond"]))
        return apply_model(a["input"], a["timestep"], **a["c"])

    with torch.no_grad():
        t0 = time.perf_counter()
        want = pipe(**call, generator=torch.Generator().manual_seed(0))
        t_ref = time.perf_counter() - t0
        print(f"[modular SDXL pipe, {cli.steps} steps, CFG 5] diffusers UNet: {t_ref:.3f} s")
        for label, attn, io, use_session in (("SDPA", sdpa, torch.float32, True),
                                             ("SDPA float64 io", sdpa, torch.float64, True),
                                             ("CPU default", None, torch.float32, True),
                                             ("SDPA, no session (one per call)", sdpa, torch.float32, False)):
            p = patcher.clone()
            if attn is not None:
                p.model_options["transformer_options"]["optimized_attention_override"] = attn
            if label == "SDPA":
                p.set_model_unet_function_wrapper(record)
            adapter = ComfyUNet(p, sample_size=ref.config.sample_size, guider=pipe.guider, io_dtype=io)
            pipe.update_components(unet=adapter)
            t0 = time.perf_counter()
            if use_session:
                with adapter.session((1, 4, 16, 16), sigmas=pipe.scheduler.sigmas):  # one load / pre_run per loop
                    got = pipe(**call, generator=torch.Generator().manual_seed(0))
            else:
                got = pipe(**call, generator=torch.Generator().manual_seed(0))
            dt = time.perf_counter() - t0
            print(f"[modular SDXL pipe] ComfyUNet ({label}) latents vs diffusers UNet's max|diff| "
                  f"{maxdiff(got, want):.3g} (|latents| max {want.abs().max().item():.3f}; adapter calls "
                  f"{adapter.calls}; {dt:.3f} s)")
        print(f"[modular SDXL pipe] cond_or_uncond per call, as ComfyUI's patches saw it: {seen}")
        # other diffusers schedulers: DPM++ (no scale_model_input: latents stay variance-preserving) and Euler with
        # Karras sigmas (fractional timesteps, which ComfyUI's model_sampling.timestep rounds to integers)
        from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
        base_scheduler = pipe.scheduler
        p = patcher.clone()
        p.model_options["transformer_options"]["optimized_attention_override"] = sdpa
        for label, sched in (("DPMSolverMultistep", DPMSolverMultistepScheduler.from_config(base_scheduler.config)),
                             ("Euler karras", EulerDiscreteScheduler.from_config(base_scheduler.config,
                                                                                 use_karras_sigmas=True))):
            pipe.update_components(unet=ref, scheduler=sched)
            want = pipe(**call, generator=torch.Generator().manual_seed(0))
            timesteps = sched.timesteps.tolist()
            adapter = ComfyUNet(p, sample_size=ref.config.sample_size, guider=pipe.guider)
            pipe.update_components(unet=adapter)
            with adapter.session((1, 4, 16, 16)):
                got = pipe(**call, generator=torch.Generator().manual_seed(0))
            print(f"[modular SDXL pipe, {label}, timesteps {[round(t, 2) for t in timesteps]}] ComfyUNet (SDPA) vs "
                  f"diffusers UNet max|diff| {maxdiff(got, want):.3g} (|latents| max {want.abs().max().item():.3f})")
        pipe.update_components(unet=ref, scheduler=base_scheduler)


def lora_check(ref, patcher, key_map, sample, ehs, added):
    """A LoRA-style weight patch on the MODEL (ModelPatcher.add_patches, 'diff' patches) vs the same delta merged
    into the diffusers UNet's weights."""
    g = torch.Generator().manual_seed(7)
    dkeys = ["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
             "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
             "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
             "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v.weight"]
    deltas = {k: torch.randn(ref.state_dict()[k].shape, generator=g) * 0.05 for k in dkeys}
    lora = patcher.clone()
    lora.model_options["transformer_options"]["optimized_attention_override"] = sdpa
    added_keys = lora.add_patches({"diffusion_model." + key_map[k]: (d,) for k, d in deltas.items()}, 1.0)
    base = patcher.clone()
    base.model_options["transformer_options"]["optimized_attention_override"] = sdpa
    merged = diffusers_unet()
    with torch.no_grad():
        for k, d in deltas.items():
            merged.get_parameter(k).add_(d)
        t = torch.tensor(601)
        want = merged(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        want0 = ref(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        got = ComfyUNet(lora)(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        got64 = ComfyUNet(lora, io_dtype=torch.float64)(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        got0 = ComfyUNet(base)(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
    print(f"[LoRA-style patch, {len(added_keys)} keys] patched adapter vs merged diffusers UNet max|diff| "
          f"{maxdiff(got, want):.3g} (float64 io {maxdiff(got64, want):.3g}); effect of the patch {maxdiff(want, want0):.3g}; unpatched clone afterwards "
          f"vs diffusers UNet {maxdiff(got0, want0):.3g} (weights restored)")


def wrapper_check(patcher, sample, ehs, added):
    seen = {}

    def count(name):
        seen[name] = seen.get(name, 0) + 1

    def unet_function_wrapper(apply_model, a):
        count("model_function_wrapper")
        seen["cond_or_uncond"] = a["cond_or_uncond"]
        return apply_model(a["input"], a["timestep"], **a["c"])

    def apply_model_wrapper(executor, *a, **kw):
        count("WrappersMP.APPLY_MODEL")
        return executor(*a, **kw)

    def diffusion_model_wrapper(executor, *a, **kw):
        count("WrappersMP.DIFFUSION_MODEL")
        return executor(*a, **kw)

    def calc_cond_batch_wrapper(executor, *a, **kw):
        count("WrappersMP.CALC_COND_BATCH")
        return executor(*a, **kw)

    def attn1_patch(q, k, v, extra_options):
        count("attn1_patch")
        return q * 2.0, k, v

    def on_pre_run(p):
        count("CallbacksMP.ON_PRE_RUN")

    m = patcher.clone()
    m.model_options["transformer_options"]["optimized_attention_override"] = sdpa
    m.set_model_unet_function_wrapper(unet_function_wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "proto", apply_model_wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "proto", diffusion_model_wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "proto", calc_cond_batch_wrapper)
    m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, "proto", on_pre_run)
    m.set_model_attn1_patch(attn1_patch)
    plain = patcher.clone()
    plain.model_options["transformer_options"]["optimized_attention_override"] = sdpa
    with torch.no_grad():
        t = torch.tensor(401)
        adapter = ComfyUNet(m)
        got = adapter(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
        adapter.cond_or_uncond = [1]
        adapter(sample, t, ehs, added_cond_kwargs=added, return_dict=False)
        uncond_seen = seen.get("cond_or_uncond")
        want = ComfyUNet(plain)(sample, t, ehs, added_cond_kwargs=added, return_dict=False)[0]
    # control: calc_cond_batch with the patcher's own model_options, skipping prepare_model_patcher
    seen_before = dict(seen)
    with torch.no_grad():
        mm.load_models_gpu([m])
        m.pre_run()
        try:
            x = sample * (m.model.model_sampling.sigma(t) ** 2 + 1) ** 0.5
            cond = {"model_conds": m.model.extra_conds(cross_attn=ehs, pooled_output=added["text_embeds"], width=128,
                                                       height=128, device="cpu", noise=x), "uuid": "u"}
            comfy.samplers.calc_cond_batch(m.model, [[cond]], x, m.model.model_sampling.sigma(t).expand(2),
                                           m.model_options)
        finally:
            m.cleanup()
    control = {k: seen.get(k, 0) - seen_before.get(k, 0) for k in seen if not k.startswith("cond_or")}
    print(f"[control] calc_cond_batch on patcher.model_options without prepare_model_patcher called: {control}")
    print(f"[wrappers/patches, 2 adapter calls] called: {seen_before} (last cond_or_uncond {uncond_seen}); attn1_patch "
          f"(q*2) changed output by {maxdiff(got, want):.3g}")


if __name__ == "__main__":
    main()
