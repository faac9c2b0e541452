"""A denoise loop over sigmas and its blocks, written as diffusers loop blocks.

`DenoiseLoop` walks the host's sigmas and calls `loop_step(..., i=i, t=sigmas[i])` once per step.
A step usually runs a prediction block (`PredictDenoised` writes `denoised`, the x0 estimate), any
blocks that shape it, and one step block that writes the next `latents`. The host values each block
reads (`latents`, `sigmas`, `denoiser`, ...) are `HostValues` in `modular/sampling.py`.

The step updates are the k-diffusion ones ComfyUI's built-in samplers use, written out operation for
operation, so a loop of `PredictDenoised` + `EulerStep` gives the same latents as ComfyUI's `euler`.
"""

import torch
from diffusers.modular_pipelines import InputParam, LoopSequentialPipelineBlocks, ModularPipelineBlocks, OutputParam

MODEL_NAME = "comfyui"


def _append_dims(x, target_dims):
    """`x` with singleton dims appended up to `target_dims` (as k-diffusion's `append_dims`)."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def _to_d(x, sigma, denoised):
    """The Karras ODE derivative from an x0 estimate."""
    return (x - denoised) / _append_dims(sigma, x.ndim)


# The inputs several blocks read. Functions, not shared objects: diffusers writes `required` into the
# InputParams of a composed loop, so each block gets its own.
def latents_param():
    return InputParam("latents", required=True, type_hint=torch.Tensor, description="The sample at the current sigma.")


def sigmas_param():
    return InputParam("sigmas", required=True, type_hint=torch.Tensor, description="The whole sigma schedule.")


def denoised_param():
    return InputParam("denoised", required=True, type_hint=torch.Tensor, description="x0 estimated at this step.")


def flow_param():
    return InputParam("flow_matching", type_hint=bool, default=False, description="True for flow models (SD3, Flux).")


def noise_sampler_param():
    return InputParam("noise_sampler", required=True,
                      description="noise_sampler(sigma, sigma_next) -> noise: the host's ancestral noise stream.")


class DenoiseLoop(LoopSequentialPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("Denoise loop: one step per pair of sigmas; each step runs the attached blocks in order "
                "(predict x0, shape it, step the latents).")

    @property
    def loop_inputs(self):
        return [latents_param(), sigmas_param(),
                InputParam("start_step", type_hint=int, default=0,
                           description="The step to start at (resuming a saved state): the first i.")]

    @property
    def loop_intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor, description="The denoised latents.")]

    @torch.no_grad()
    def __call__(self, components, state):
        block_state = self.get_block_state(state)
        sigmas, start = block_state.sigmas, int(block_state.start_step or 0)
        with self.progress_bar(total=len(sigmas) - 1 - start) as progress_bar:
            for i in range(start, len(sigmas) - 1):
                components, block_state = self.loop_step(components, block_state, i=i, t=sigmas[i])
                progress_bar.update()
        self.set_block_state(state, block_state)
        return components, state


class PredictDenoised(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("Model prediction: x0 from the host's guided model at this sigma (in ComfyUI: CFG, model "
                "patches, LoRA, ControlNet and inpaint masks, through its own model wrapper).")

    @property
    def inputs(self):
        return [
            latents_param(),
            InputParam("denoiser", required=True, description="denoiser(x, sigma, **kwargs) -> x0, from the host."),
            InputParam("denoiser_kwargs", type_hint=dict, description="Keyword arguments for the denoiser."),
        ]

    @property
    def intermediate_outputs(self):
        return [OutputParam("denoised", type_hint=torch.Tensor, description="x0 estimated at this step.")]

    def __call__(self, components, block_state, i, t):
        x = block_state.latents
        s_in = x.new_ones([x.shape[0]])
        block_state.denoised = block_state.denoiser(x, t * s_in, **(block_state.denoiser_kwargs or {}))
        return components, block_state


class EulerStep(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return "Euler step: latents move along (latents - denoised) / sigma to the next sigma. Same as ComfyUI's euler."

    @property
    def inputs(self):
        return [latents_param(), denoised_param(), sigmas_param()]

    @property
    def intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor)]

    def __call__(self, components, block_state, i, t):
        x, sigmas = block_state.latents, block_state.sigmas
        d = _to_d(x, t, block_state.denoised)
        dt = sigmas[i + 1] - t
        block_state.latents = x + d * dt
        return components, block_state


class EulerAncestralStep(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("Euler ancestral step: an Euler step down to sigma_down, then fresh noise from the sampler's own "
                "noise stream up to the next sigma. eta scales the noise added (0: plain Euler); s_noise scales the "
                "noise. Same as ComfyUI's euler_ancestral (its flow-model form for flow models).")

    @property
    def inputs(self):
        return [
            latents_param(), denoised_param(), sigmas_param(), flow_param(), noise_sampler_param(),
            InputParam("eta", type_hint=float, default=1.0, metadata={"min": 0.0, "max": 100.0, "step": 0.01},
                       description="How much of the step is ancestral noise."),
            InputParam("s_noise", type_hint=float, default=1.0, metadata={"min": 0.0, "max": 100.0, "step": 0.01},
                       description="Scale of the added noise."),
        ]

    @property
    def intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor)]

    def __call__(self, components, block_state, i, t):
        x, denoised, sigmas = block_state.latents, block_state.denoised, block_state.sigmas
        eta, s_noise, noise_sampler = block_state.eta, block_state.s_noise, block_state.noise_sampler
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if block_state.flow_matching:
            if sigma_next == 0:
                x = denoised
            else:
                downstep_ratio = 1 + (sigma_next / sigma - 1) * eta
                sigma_down = sigma_next * downstep_ratio
                alpha_ip1 = 1 - sigma_next
                alpha_down = 1 - sigma_down
                renoise_coeff = (sigma_next ** 2 - sigma_down ** 2 * alpha_ip1 ** 2 / alpha_down ** 2) ** 0.5
                sigma_down_i_ratio = sigma_down / sigma
                x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * denoised
                if eta > 0:
                    x = (alpha_ip1 / alpha_down) * x + noise_sampler(sigma, sigma_next) * s_noise * renoise_coeff
        else:
            sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
            if sigma_down == 0:
                x = denoised
            else:
                d = _to_d(x, sigma, denoised)
                dt = sigma_down - sigma
                x = x + d * dt + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
        block_state.latents = x
        return components, block_state


def _ancestral_step(sigma_from, sigma_to, eta=1.0):
    """(sigma_down, sigma_up) of an ancestral step, as k-diffusion's `get_ancestral_step`."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


class DPMPP2MStep(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("DPM-Solver++(2M) step: second order from this step's x0 and the previous step's, which it keeps in "
                "the shared block state as `old_denoised`. Same as ComfyUI's dpmpp_2m.")

    @property
    def inputs(self):
        return [latents_param(), denoised_param(), sigmas_param(),
                InputParam("old_denoised", type_hint=torch.Tensor,
                           description="x0 of the previous step: kept in the state from step to step (and in a saved one).")]

    @property
    def intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor),
                OutputParam("old_denoised", type_hint=torch.Tensor, description="x0 of the previous step.")]

    def __call__(self, components, block_state, i, t):
        x, denoised, sigmas = block_state.latents, block_state.denoised, block_state.sigmas
        old_denoised = getattr(block_state, "old_denoised", None) if i > 0 else None
        t_cur, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t_cur
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (t_next.neg().exp() / t_cur.neg().exp()) * x - (-h).expm1() * denoised
        else:
            h_last = t_cur - sigmas[i - 1].log().neg()
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (t_next.neg().exp() / t_cur.neg().exp()) * x - (-h).expm1() * denoised_d
        block_state.old_denoised = denoised
        block_state.latents = x
        return components, block_state


class DynamicThreshold(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("Guidance shaping on x0 (Imagen's dynamic thresholding, in latent units): per sample, s is the "
                "`percentile` quantile of |denoised|; when s exceeds `threshold`, denoised is clamped to [-s, s] and "
                "scaled by threshold / s. Tames the over-saturation of a high CFG. Put it between the prediction "
                "block and the step block.")

    @property
    def inputs(self):
        return [
            denoised_param(),
            InputParam("percentile", type_hint=float, default=0.995, metadata={"min": 0.5, "max": 1.0, "step": 0.001},
                       description="Quantile of |x0| taken as its range."),
            InputParam("threshold", type_hint=float, default=3.0, metadata={"min": 0.01, "max": 100.0, "step": 0.05},
                       description="Largest allowed range of x0, in latent units."),
        ]

    @property
    def intermediate_outputs(self):
        return [OutputParam("denoised", type_hint=torch.Tensor)]

    def __call__(self, components, block_state, i, t):
        x0 = block_state.denoised
        flat = x0.reshape(x0.shape[0], -1).abs().float()
        s = torch.quantile(flat, block_state.percentile, dim=1)
        s = torch.clamp(s, min=block_state.threshold).to(x0.dtype)
        s = _append_dims(s, x0.ndim)
        block_state.denoised = torch.maximum(torch.minimum(x0, s), -s) * (block_state.threshold / s)
        return components, block_state


class LatentBlend(ModularPipelineBlocks):
    model_name = MODEL_NAME

    @property
    def description(self):
        return ("Inpaint-style blend after the step: where `mask` is 0 the latents are set back to the starting "
                "latent noised to the next sigma, so only the masked (1) region is generated. `mask`: a ComfyUI "
                "MASK (any size, resized to the latent) or a latent-sized tensor. Put it after the step block.")

    @property
    def inputs(self):
        return [
            latents_param(), sigmas_param(), flow_param(),
            InputParam("mask", required=True, type_hint=torch.Tensor, description="1 = generate, 0 = keep."),
            InputParam("latent_image", required=True, type_hint=torch.Tensor, description="The starting latent."),
            InputParam("noise", required=True, type_hint=torch.Tensor, description="The sampler's noise."),
        ]

    @property
    def intermediate_outputs(self):
        return [OutputParam("latents", type_hint=torch.Tensor)]

    def __call__(self, components, block_state, i, t):
        x = block_state.latents
        mask = latent_mask(block_state.mask, x)
        sigma_next = block_state.sigmas[i + 1]
        image, noise = block_state.latent_image.to(x), block_state.noise.to(x)
        if block_state.flow_matching:
            kept = sigma_next * noise + (1.0 - sigma_next) * image
        else:
            kept = image + noise * sigma_next
        block_state.latents = x * mask + kept * (1.0 - mask)
        return components, block_state


def latent_mask(mask, like):
    """A mask ([H, W], [B, H, W] or [B, C, H, W], any resolution) as a float tensor broadcastable to `like`."""
    m = mask.to(device=like.device, dtype=like.dtype)
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.ndim != 4:
        raise ValueError(f"mask must have 2, 3 or 4 dims, got shape {tuple(mask.shape)}")
    if tuple(m.shape[-2:]) != tuple(like.shape[-2:]):
        m = torch.nn.functional.interpolate(m, size=like.shape[-2:], mode="bilinear")
    if m.shape[0] not in (1, like.shape[0]):
        m = m[:1]
    return m.clamp(0, 1)
