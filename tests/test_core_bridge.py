"""Core tier, the bridge's conversions without ComfyUI (`modular.pipelines.bridge`): the scheduler on a host model's
own schedule, the denoiser's timestep / input / prediction conversions on a host model given here, the
conditioning checks, the refusals. (Through a real ComfyUI MODEL: test_bridge.py, host tier.)"""

import pytest
import torch

from modular import ConfigError
from modular.pipelines import bridge
from modular.pipelines.latents import LATENT_IO, from_host_latent, to_host_latent

SDXL = bridge.family_for("SDXL")


def sdxl_sigmas():
    """SDXL's training schedule as ComfyUI computes it (scaled linear betas 0.00085 .. 0.012, float64)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def test_the_scheduler_steps_on_the_host_models_own_schedule():
    from diffusers import EulerDiscreteScheduler

    ours = bridge.scheduler_for(SDXL, sdxl_sigmas())
    hub = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 timestep_spacing="leading", steps_offset=1)
    for steps in (3, 30):
        ours.set_timesteps(steps), hub.set_timesteps(steps)
        assert torch.equal(ours.timesteps, hub.timesteps)
        assert torch.allclose(ours.sigmas, hub.sigmas, rtol=2e-6, atol=1e-6)
    assert ours.config.prediction_type == "epsilon"
    # another schedule (a model whose model_sampling a patch changed) gives its sigmas
    other = bridge.scheduler_for(SDXL, sdxl_sigmas() * 2)
    other.set_timesteps(30)
    assert torch.allclose(other.sigmas[:-1], 2 * hub.sigmas[:-1], rtol=1e-4)


class FakeHost:
    """A host model whose denoised estimate is a known function: x0 = x * 0.5 + rows' pooled sum."""

    sigma_data = 1.0

    def __init__(self):
        self.sigmas = sdxl_sigmas()
        self.seen = []

    def sigma(self, t):
        return self.sigmas[t.round().long()]

    def denoise(self, x, sigma, rows, uncond, skip=()):
        self.seen.append({"x": x, "sigma": sigma, "rows": rows, "uncond": uncond, "skip": list(skip)})
        return x * 0.5


def sdxl_denoiser(host):
    config = {"in_channels": 4, "out_channels": 4, "sample_size": 128, "cross_attention_dim": 64,
              "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 32 + 6 * 256,
              "time_cond_proj_dim": None, "addition_embed_type": "text_time"}
    return bridge.make_denoiser(SDXL, host, config, torch.float32, torch.device("cpu"))


def test_the_denoiser_converts_diffusers_call_to_the_host_models_and_back():
    host = FakeHost()
    unet = sdxl_denoiser(host)
    sample = torch.randn(2, 4, 8, 8)
    ehs = torch.randn(2, 7, 64)
    added = {"text_embeds": torch.randn(2, 32),
             "time_ids": torch.tensor([[128., 128., 0., 0., 128., 128.], [96., 112., 4., 8., 64., 72.]])}
    eps = unet(sample, torch.tensor(501), encoder_hidden_states=ehs, added_cond_kwargs=added, return_dict=False)[0]
    call = host.seen[-1]
    sigma = host.sigmas[501]
    # the host's input is x = sample * sqrt(sigma^2 + 1); its x0 converts to epsilon = (x - x0) / sigma
    x = sample * (sigma ** 2 + 1) ** 0.5
    assert torch.allclose(call["x"], x, rtol=1e-6)
    assert torch.allclose(eps, (x - 0.5 * x) / sigma, rtol=1e-5)
    assert call["uncond"] is False
    # SDXL's added conditioning per row, in the host's names (ComfyUI's SDXL extra_conds)
    row = call["rows"][1]
    assert torch.equal(row["cross_attn"], ehs[1:2]) and torch.equal(row["pooled_output"], added["text_embeds"][1:2])
    assert (row["height"], row["width"], row["crop_h"], row["crop_w"], row["target_height"], row["target_width"]) == (
        96, 112, 4, 8, 64, 72)
    # what diffusers' SDXL blocks read besides calling it
    assert unet.add_embedding.linear_1.in_features == 32 + 6 * 256 and unet.config.time_cond_proj_dim is None
    assert bridge.is_bridged(unet) and not list(unet.parameters())  # the host's weights are not its modules


def test_the_guiders_unconditional_batch_reaches_the_host_as_such():
    host = FakeHost()
    unet = sdxl_denoiser(host)

    class Run:
        guider = type("G", (), {"is_conditional": False})()

    unet.run = Run()
    unet(torch.randn(1, 4, 8, 8), 700, encoder_hidden_states=torch.randn(1, 3, 64),
         added_cond_kwargs={"text_embeds": torch.randn(1, 32), "time_ids": torch.zeros(1, 6)})
    assert host.seen[-1]["uncond"] is True


def conditioning(width=64, pooled=32, **options):
    return [[torch.randn(1, 5, width), {**({"pooled_output": torch.randn(1, pooled)} if pooled else {}), **options}]]


def test_conditioning_becomes_the_familys_embeddings():
    positive, negative = conditioning(), conditioning()
    values = bridge.conditioning_values(SDXL, positive, negative, 64, 32, "node")
    assert values["prompt_embeds"] is positive[0][0]
    assert values["negative_pooled_prompt_embeds"] is negative[0][1]["pooled_output"]
    assert set(values) == {"prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
                           "negative_pooled_prompt_embeds"}
    assert "negative_prompt_embeds" not in bridge.conditioning_values(SDXL, positive, None, 64, 32, "node")


@pytest.mark.parametrize("given, words", [
    (conditioning(width=768), ["'positive'", "[batch, tokens, 64]", "this checkpoint's CLIP"]),
    (conditioning(pooled=0), ["'positive'", "no pooled output"]),
    (conditioning(pooled=1280), ["'positive'", "width 1280", "takes 32"]),
    (conditioning(area=(8, 8, 0, 0)), ["'positive'", "an area", "Conditioning Set Area"]),
    (conditioning(mask=torch.ones(1, 8, 8)), ["'positive'", "a mask"]),
    (conditioning(start_percent=0.2), ["'positive'", "a timestep range"]),
    (conditioning(control=object()), ["'positive'", "ControlNet"]),
    (conditioning() + conditioning(), ["'positive'", "2 conditionings combined"]),
    ([], ["'positive'", "no conditioning"]),
])
def test_conditioning_the_bridge_cannot_honour_is_refused_by_name(given, words):
    with pytest.raises(ConfigError) as e:
        bridge.conditioning_values(SDXL, given, None, 64, 32, "CONDITIONING To State")
    for word in words:
        assert word in str(e.value), str(e.value)
    assert str(e.value).startswith("CONDITIONING To State")


def test_a_strength_of_one_and_unknown_options_pass():
    values = bridge.conditioning_values(SDXL, conditioning(strength=1.0, some_pack_option=3), None, 64, 32, "n")
    assert "prompt_embeds" in values


def test_a_model_of_a_family_not_bridged_is_refused_naming_it_and_the_bridged_ones():
    with pytest.raises(ConfigError) as e:
        bridge.family_for("BaseModel", "SD15")
    assert "a SD15 (BaseModel) model is not bridged" in str(e.value)
    assert "StableDiffusionXL (SDXL)" in str(e.value) and "StableDiffusion3 (SD3)" in str(e.value)


def test_a_bridged_pipelines_latents_use_the_host_models_own_latent_format():
    pipeline = type("P", (), {})()
    setattr(pipeline, LATENT_IO, type("IO", (), {"to_host": staticmethod(lambda x: x / 0.13025),
                                                 "from_host": staticmethod(lambda x: x * 0.13025)})())
    latents = torch.randn(1, 4, 8, 8)
    assert torch.allclose(to_host_latent(pipeline, latents), latents / 0.13025)
    assert torch.allclose(from_host_latent(pipeline, to_host_latent(pipeline, latents)), latents)


def test_the_coverage_tables_bridged_families_are_the_bridged_ones():
    from tools import coverage_table

    bridged = {(family, model) for family, model, status in coverage_table.BRIDGE if status.startswith("bridged")}
    assert bridged == {(f.name, "/".join(f.host_models)) for f in bridge.FAMILIES}


SD3 = bridge.family_for("SD3")


def test_sd3_flow_matching_converts_timestep_input_and_velocity():
    from diffusers import FlowMatchEulerDiscreteScheduler

    host = FakeHost()
    config = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "sample_size": 128, "joint_attention_dim": 64,
              "pooled_projection_dim": 64, "num_layers": 2}
    transformer = bridge.make_denoiser(SD3, host, config, torch.float32, torch.device("cpu"))
    sample, ehs, pooled = torch.randn(2, 16, 8, 8), torch.randn(2, 5, 64), torch.randn(2, 64)
    v = transformer(hidden_states=sample, timestep=torch.tensor([750.0, 750.0]), encoder_hidden_states=ehs,
                    pooled_projections=pooled, return_dict=False)[0]
    call = host.seen[-1]
    # diffusers' timestep is sigma x 1000 and its latents are the host's input as they are; the host's x0 gives
    # the flow velocity (x - x0) / sigma
    assert torch.allclose(call["sigma"], torch.tensor([0.75, 0.75])) and torch.equal(call["x"], sample)
    assert torch.allclose(v, (sample - 0.5 * sample) / 0.75, rtol=1e-6)
    assert torch.equal(call["rows"][1]["cross_attn"], ehs[1:2]) and torch.equal(call["rows"][1]["pooled_output"],
                                                                                 pooled[1:2])
    # the scheduler: diffusers' flow-matching Euler with the host model's shift
    ours, hub = bridge.scheduler_for(SD3, shift=3.0), FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours.set_timesteps(5), hub.set_timesteps(5)
    assert torch.equal(ours.timesteps, hub.timesteps) and torch.equal(ours.sigmas, hub.sigmas)


WAN = bridge.family_for("WAN21")


def test_wan_takes_video_latents_as_they_are_and_steps_with_unipc_on_the_host_models_shift():
    from diffusers import UniPCMultistepScheduler

    host = FakeHost()
    config = {"in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2], "text_dim": 32, "num_layers": 2}
    transformer = bridge.make_denoiser(WAN, host, config, torch.float32, torch.device("cpu"))
    sample, ehs = torch.randn(2, 16, 3, 8, 8), torch.randn(2, 7, 32)
    v = transformer(hidden_states=sample, timestep=torch.tensor([600.0, 600.0]), encoder_hidden_states=ehs,
                    return_dict=False)[0]
    call = host.seen[-1]
    assert torch.allclose(call["sigma"], torch.tensor([0.6, 0.6])) and torch.equal(call["x"], sample)
    assert v.shape == sample.shape and torch.allclose(v, (sample - 0.5 * sample) / 0.6, rtol=1e-6)
    assert torch.equal(call["rows"][1]["cross_attn"], ehs[1:2]) and set(call["rows"][1]) == {"cross_attn"}
    assert bridge.context_width(config) == 32 and bridge.pooled_width(config) is None
    # its scheduler: Wan's hub scheduler (UniPC on flow sigmas), its flow_shift the host model's shift
    ours = bridge.scheduler_for(WAN, shift=5.0)
    hub = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    ours.set_timesteps(6), hub.set_timesteps(6)
    assert torch.equal(ours.timesteps, hub.timesteps) and torch.equal(ours.sigmas, hub.sigmas)
    with pytest.raises(ConfigError, match="image2video"):  # an image embedding: Wan's image2video, not bridged
        transformer(hidden_states=sample, timestep=torch.tensor([600.0, 600.0]), encoder_hidden_states=ehs,
                    encoder_hidden_states_image=torch.randn(2, 257, 32), return_dict=False)


QWEN = bridge.family_for("QwenImage")


def test_qwenimage_unpacks_diffusers_latents_with_comfyuis_frame_axis_and_packs_its_velocity_back():
    from diffusers import QwenImagePipeline

    host = FakeHost()
    config = {"in_channels": 64, "out_channels": 16, "latent_channels": 16, "patch_size": 2,
              "joint_attention_dim": 16, "num_layers": 2}
    transformer = bridge.make_denoiser(QWEN, host, config, torch.float32, torch.device("cpu"))
    # diffusers' loop passes only what the transformer declares: the bridged one declares diffusers' own
    import inspect
    assert "img_shapes" in inspect.signature(transformer.forward).parameters
    latents = torch.randn(1, 16, 1, 8, 6)  # ComfyUI's layout: [B, C, 1, H, W]
    packed = QwenImagePipeline._pack_latents(latents, 1, 16, 8, 6)
    ehs = torch.randn(1, 5, 16)
    v = transformer(hidden_states=packed, timestep=torch.tensor([0.6]), encoder_hidden_states=ehs,
                    encoder_hidden_states_mask=torch.ones(1, 5), img_shapes=[[(1, 4, 3)]], return_dict=False)[0]
    call = host.seen[-1]
    assert torch.equal(call["x"], latents) and torch.allclose(call["sigma"], torch.tensor([0.6]))  # sigma itself
    assert torch.allclose(v, (packed - 0.5 * packed) / 0.6, rtol=1e-6) and v.shape == packed.shape
    assert set(call["rows"][0]) == {"cross_attn"}
    with pytest.raises(ConfigError, match="padding"):  # a padded batch of prompts
        transformer(hidden_states=packed, timestep=torch.tensor([0.6]), encoder_hidden_states=ehs,
                    encoder_hidden_states_mask=torch.tensor([[1, 1, 1, 0, 0]]), img_shapes=[[(1, 4, 3)]])
    # its conditioning: the embeddings with a mask keeping them all
    values = bridge.conditioning_values(QWEN, [[ehs, {}]], None, 16, None, "node")
    assert torch.equal(values["prompt_embeds"], ehs) and torch.equal(values["prompt_embeds_mask"],
                                                                     torch.ones(1, 5, dtype=torch.long))
    # its shift: the host's, linear (ModelSamplingAuraFlow) or exponential (its own ModelSamplingFlux)
    linear, exponential = bridge.scheduler_for(QWEN, shift=3.0, exponential=False), bridge.scheduler_for(QWEN, shift=1.15)
    assert linear.config.shift == 3.0 and abs(exponential.config.shift - 3.1582) < 1e-3


FLUX = bridge.family_for("Flux")


def test_flux_unpacks_diffusers_latents_for_the_host_and_packs_its_velocity_back():
    from diffusers import FluxPipeline

    host = FakeHost()
    config = {"in_channels": 64, "latent_channels": 16, "joint_attention_dim": 32, "pooled_projection_dim": 32,
              "guidance_embeds": True, "patch_size": 1, "num_layers": 1, "num_single_layers": 2}
    transformer = bridge.make_denoiser(FLUX, host, config, torch.float32, torch.device("cpu"))
    latents = torch.randn(1, 16, 6, 4)  # latent rows x columns: 6 x 4 -> 3 x 2 packed tokens of 64
    packed = FluxPipeline._pack_latents(latents, 1, 16, 6, 4)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, 3, 2, "cpu", torch.float32)
    v = transformer(hidden_states=packed, timestep=torch.tensor([0.6]), guidance=torch.tensor([3.5]),
                    encoder_hidden_states=torch.randn(1, 7, 32), pooled_projections=torch.randn(1, 32),
                    img_ids=img_ids, txt_ids=torch.zeros(7, 3), return_dict=False)[0]
    call = host.seen[-1]
    # the host gets the latents unpacked, sigma = the timestep itself (Flux's denoiser gets sigma), the guidance
    assert torch.equal(call["x"], latents) and torch.allclose(call["sigma"], torch.tensor([0.6]))
    assert call["rows"][0]["guidance"] == 3.5
    # the velocity (x - x0) / sigma goes back packed as diffusers' transformer gives it
    assert v.shape == packed.shape
    assert torch.allclose(v, FluxPipeline._pack_latents((latents - 0.5 * latents) / 0.6, 1, 16, 6, 4), rtol=1e-6)


def test_flux_guidance_on_the_conditioning_is_diffusers_guidance_scale_and_its_shift_exponential():
    from diffusers import FlowMatchEulerDiscreteScheduler

    values = bridge.conditioning_values(FLUX, conditioning(width=32, guidance=4.0), None, 32, 32, "n")
    assert values["guidance_scale"] == 4.0 and "negative_prompt_embeds" not in values
    # ComfyUI's Flux shift is mu of exp(mu) / (exp(mu) + 1 / sigma - 1): diffusers' exponential time shift
    ours = bridge.scheduler_for(FLUX, shift=0.8)
    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="exponential")
    sigmas = [1.0, 0.75, 0.5, 0.25]
    ours.set_timesteps(sigmas=sigmas), dynamic.set_timesteps(sigmas=sigmas, mu=0.8)
    assert torch.allclose(ours.sigmas, dynamic.sigmas, atol=1e-6)


def test_a_guider_that_hooks_the_denoisers_layers_is_refused_on_a_bridged_pipeline():
    from diffusers.guiders import (AdaptiveProjectedGuidance, AutoGuidance, ClassifierFreeGuidance,
                                   PerturbedAttentionGuidance, SkipLayerGuidance, SmoothedEnergyGuidance)

    pipeline = type("P", (), {})()
    pipeline.unet = sdxl_denoiser(FakeHost())
    for guider in (PerturbedAttentionGuidance(perturbed_guidance_layers=[1]), SkipLayerGuidance(skip_layer_guidance_layers=[1]),
                   SmoothedEnergyGuidance(seg_guidance_layers=[1]), AutoGuidance(auto_guidance_layers=[1], dropout=1.0)):
        with pytest.raises(ConfigError) as e:
            bridge.check_guider(guider, pipeline, "loop node 7")
        assert str(e.value).startswith(f"loop node 7: the guider {type(guider).__name__} works by hooking")
    for guider in (ClassifierFreeGuidance(), AdaptiveProjectedGuidance()):
        bridge.check_guider(guider, pipeline, "loop node 7")
    bridge.check_guider(PerturbedAttentionGuidance(perturbed_guidance_layers=[1]), type("Folder", (), {})(), "loop")  # a diffusers folder's: fine
    # SD3: skip-layer guidance and auto guidance with a dropout of 1 skip whole blocks, which ComfyUI's MMDiT can
    # skip; a partial dropout (random), perturbed attention and smoothed energy stay refused
    pipeline = type("P", (), {})()
    pipeline.transformer = sd3_denoiser(FakeHost())
    bridge.check_guider(SkipLayerGuidance(skip_layer_guidance_layers=[1]), pipeline, "loop")
    bridge.check_guider(AutoGuidance(auto_guidance_config={"indices": [1], "fqn": "auto", "dropout": 1.0}), pipeline,
                        "loop")
    with pytest.raises(ConfigError, match="a dropout of 0.5"):
        bridge.check_guider(AutoGuidance(auto_guidance_config={"indices": [1], "fqn": "auto", "dropout": 0.5}),
                            pipeline, "loop")
    with pytest.raises(ConfigError, match="the bridge follows whole blocks skipped"):
        bridge.check_guider(PerturbedAttentionGuidance(perturbed_guidance_layers=[1]), pipeline, "loop")
    with pytest.raises(ConfigError, match="no StableDiffusion3 self-attention the host can replace"):
        bridge.check_guider(SmoothedEnergyGuidance(seg_guidance_layers=[1]), pipeline, "loop")


def sd3_denoiser(host):
    config = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "sample_size": 128, "joint_attention_dim": 64,
              "pooled_projection_dim": 64, "num_layers": 3}
    return bridge.make_denoiser(SD3, host, config, torch.float32, torch.device("cpu"))


def test_a_skip_layer_guiders_hooks_tell_the_host_which_blocks_to_skip():
    from diffusers.hooks import LayerSkipConfig
    from diffusers.hooks.layer_skip import _apply_layer_skip_hook

    host = FakeHost()
    transformer = sd3_denoiser(host)
    args = dict(hidden_states=torch.randn(1, 16, 4, 4), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 5, 64), pooled_projections=torch.randn(1, 64), return_dict=False)
    transformer(**args)
    assert host.seen[-1]["skip"] == []
    # what SkipLayerGuidance.prepare_models does for its skip batch: diffusers' own hook on blocks 0 and 2
    _apply_layer_skip_hook(transformer, LayerSkipConfig(indices=[0, 2], fqn="auto"), name="SkipLayerGuidance_0")
    transformer(**args)
    assert host.seen[-1]["skip"] == [("dit", "double_block", 0), ("dit", "double_block", 2)]
    from modular.core import compat

    compat.remove_hooks(transformer, {"SkipLayerGuidance_0"})  # as the guider's cleanup_models does
    transformer(**args)
    assert host.seen[-1]["skip"] == []


class FakeText:
    """A host text encoder: each prompt's conditioning from its texts (SDXL's widths: 64 tokens, a 32 pooled)."""

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen.append(dict(texts))
        value = float(len(texts[""]) + 10 * len(texts.get("g", "")))
        return [[torch.full((1, 5, 64), value), {"pooled_output": torch.full((1, 32), value)}]]


def sdxl_components(text=None):
    """A bridged SDXL pipeline's components, as the run sees them: the denoiser, the pipeline's config, its host
    text encoder (when given one)."""
    import types

    components = types.SimpleNamespace(unet=sdxl_denoiser(FakeHost()),
                                       config=types.SimpleNamespace(force_zeros_for_empty_prompt=True))
    if text is not None:
        setattr(components, bridge.HOST_TEXT, text)
    return components


def run_text_step(components, **values):
    from diffusers.modular_pipelines import PipelineState
    from diffusers.modular_pipelines.stable_diffusion_xl.encoders import StableDiffusionXLTextEncoderStep

    step = bridge.stand_in(StableDiffusionXLTextEncoderStep(), components)
    state = PipelineState()
    for name, value in values.items():
        state.set(name, value)
    return step, step(components, state)[1]


def test_the_text_encoder_step_runs_on_the_host_text_encoder_with_diffusers_declarations():
    from diffusers.modular_pipelines.stable_diffusion_xl.encoders import StableDiffusionXLTextEncoderStep

    original = StableDiffusionXLTextEncoderStep()
    assert bridge.stand_in(original, sdxl_components()) is original  # no host text encoder: diffusers' own step
    text = FakeText()
    step, state = run_text_step(sdxl_components(text), prompt="a cat", prompt_2="a dog", negative_prompt="blurry")
    assert {p.name for p in step.inputs} == {"prompt", "prompt_2", "negative_prompt", "negative_prompt_2", "clip_skip"}
    assert [o.name for o in step.intermediate_outputs] == [o.name for o in original.intermediate_outputs]
    assert step.expected_components == []  # nothing of diffusers' to load
    # prompt -> CLIP-L, prompt_2 -> CLIP-G (diffusers' rule: prompt_2 defaults to prompt)
    assert text.seen == [{"": "a cat", "l": "a cat", "g": "a dog"}, {"": "blurry", "l": "blurry", "g": "blurry"}]
    assert state.get("prompt_embeds").shape == (1, 5, 64) and state.get("pooled_prompt_embeds").shape == (1, 32)
    assert float(state.get("negative_prompt_embeds")[0, 0, 0]) == len("blurry") * 11


def test_an_empty_negative_prompt_is_zeros_where_diffusers_sdxl_makes_it_so():
    _, state = run_text_step(sdxl_components(FakeText()), prompt="a cat")
    assert not state.get("negative_prompt_embeds").any() and not state.get("negative_pooled_prompt_embeds").any()
    assert state.get("prompt_embeds").any()


def test_clip_skip_on_a_bridged_clip_is_refused_naming_clip_set_last_layer():
    with pytest.raises(ConfigError, match="CLIP Set Last Layer"):
        run_text_step(sdxl_components(FakeText()), prompt="a cat", clip_skip=2)


def test_the_host_vae_behind_diffusers_encode_and_decode_calls():
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import retrieve_latents

    class FakeVae:
        latent_channels = 4

        def encode(self, images):
            return images[:, :1].repeat(1, 4, 1, 1)[..., ::8, ::8] * 2

        def decode(self, latents):
            return latents[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2) / 2

    vae = bridge.make_vae(FakeVae(), 0.13025, None)
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    latents = retrieve_latents(vae.encode(images), generator=torch.Generator().manual_seed(0))
    assert torch.equal(latents, images[:, :1].repeat(1, 4, 1, 1)[..., ::8, ::8] * 2)  # the host's, not sampled
    assert torch.equal(vae.decode(latents, return_dict=False)[0], FakeVae().decode(latents))
    assert vae.config.scaling_factor == 0.13025 and vae.config.latents_mean is None
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8  # diffusers' vae_scale_factor
    assert bridge.is_bridged(vae)  # never loaded as a pipeline module


def test_a_video_vae_carries_its_per_channel_statistics_and_compression_as_diffusers_wan_reads_them():
    from diffusers.modular_pipelines import WanModularPipeline

    class FakeVideoVae:
        latent_channels = 16

        def decode(self, latents):  # [B, C, F, H, W] -> [B, 3, 4 (F - 1) + 1, 8 H, 8 W]
            frames = 4 * (latents.shape[2] - 1) + 1
            return latents[:, :3, :1].repeat(1, 1, frames, 8, 8)

    mean, std = [0.1 * i for i in range(16)], [1.0 + 0.1 * i for i in range(16)]
    vae = bridge.make_vae(FakeVideoVae(), 1.0, None, 8, mean=mean, std=std, temporal=4)
    assert vae.config.latents_mean == mean and vae.config.latents_std == std and vae.config.z_dim == 16
    pipeline = WanModularPipeline()
    pipeline.vae = vae  # diffusers' Wan pipeline reads its factors off the VAE module
    assert (pipeline.vae_scale_factor_spatial, pipeline.vae_scale_factor_temporal) == (8, 4)
    assert vae.decode(torch.zeros(1, 16, 2, 2, 2), return_dict=False)[0].shape == (1, 3, 5, 16, 16)


MID = "mid_block.attentions.0.transformer_blocks"


def test_perturbed_attentions_hooks_tell_the_host_which_self_attention_gives_its_values():
    from diffusers.guiders import PerturbedAttentionGuidance
    from diffusers.hooks import LayerSkipConfig
    from diffusers.hooks.layer_skip import _apply_layer_skip_hook

    host = FakeHost()
    config = {"in_channels": 4, "out_channels": 4, "sample_size": 128, "cross_attention_dim": 64,
              "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 32 + 6 * 256}
    layers = {f"{MID}.0.attn1": ("middle", 0, 0), f"{MID}.1.attn1": ("middle", 0, 1),
              "down_blocks.1.attentions.0.transformer_blocks.0.attn1": ("input", 4, 0)}
    unet = bridge.make_denoiser(SDXL, host, config, torch.float32, torch.device("cpu"), attention=layers)
    args = dict(sample=torch.randn(1, 4, 8, 8), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 5, 64), return_dict=False)
    unet(**args)
    assert host.seen[-1]["skip"] == []
    # what PerturbedAttentionGuidance.prepare_models does for its perturbed batch: diffusers' own attention hook
    skip = LayerSkipConfig(indices=[1], fqn=MID, skip_attention=False, skip_attention_scores=True, skip_ff=False)
    _apply_layer_skip_hook(unet, skip, name="PAG")
    unet(**args)
    assert host.seen[-1]["skip"] == [("attn1", "middle", 0, 1)]
    # followed before the loop: named layers; refused: 'auto' (diffusers' UNet has no such blocks), partial skips
    pipeline = type("P", (), {})()
    pipeline.unet = unet
    bridge.check_guider(PerturbedAttentionGuidance(perturbed_guidance_config=skip.to_dict()), pipeline, "loop")
    with pytest.raises(ConfigError, match="'auto' blocks .diffusers' UNet has none"):
        bridge.check_guider(PerturbedAttentionGuidance(perturbed_guidance_layers=[1]), pipeline, "loop")


def test_smoothed_energys_hooks_tell_the_host_which_query_to_blur_with_diffusers_own_blur():
    from diffusers.guiders import SmoothedEnergyGuidance
    from diffusers.hooks.smoothed_energy_guidance_utils import (SmoothedEnergyGuidanceConfig,
                                                                _apply_smoothed_energy_guidance_hook,
                                                                _gaussian_blur_2d)

    host = FakeHost()
    config = {"in_channels": 4, "out_channels": 4, "sample_size": 128, "cross_attention_dim": 64,
              "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 32 + 6 * 256}
    layers = {f"{MID}.0.attn1": ("middle", 0, 0), f"{MID}.1.attn1": ("middle", 0, 1)}
    unet = bridge.make_denoiser(SDXL, host, config, torch.float32, torch.device("cpu"), attention=layers)
    args = dict(sample=torch.randn(1, 4, 8, 8), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 5, 64), return_dict=False)
    # what SmoothedEnergyGuidance.prepare_models does for its smoothed batch: diffusers' own hook on the query
    seg = SmoothedEnergyGuidanceConfig(indices=[0], fqn=MID)
    _apply_smoothed_energy_guidance_hook(unet, seg, blur_sigma=2.0, name="SEG")
    unet(**args)
    (name, transform, *where), = host.seen[-1]["skip"]
    assert (name, where) == ("attn1_query", ["middle", 0, 0])
    query = torch.randn(2, 64, 40)  # the host's query of an 8 x 8 latent: [batch, tokens, inner dim]
    assert torch.equal(transform(query), _gaussian_blur_2d(query, 13, 2.0, 9999.9))  # diffusers' blur, sigma 2
    # followed before the loop with named blocks; refused with 'auto' (diffusers' UNet has no such blocks)
    pipeline = type("P", (), {})()
    pipeline.unet = unet
    bridge.check_guider(SmoothedEnergyGuidance(seg_guidance_config=[seg]), pipeline, "loop")
    with pytest.raises(ConfigError, match="a query blurred in 'auto'"):
        bridge.check_guider(SmoothedEnergyGuidance(seg_guidance_layers=[1]), pipeline, "loop")
