"""A diffusers loop's latents and a host's VAE latent (ComfyUI's LATENT), both ways: the VAE's scaling and shift,
or, for a pipeline bridged to a host's model, that model's own latent format (`LATENT_IO`)."""

from __future__ import annotations

from ..core.errors import ConfigError

LATENT_IO = "_modular_loops_latent_io"  # a bridged pipeline's: the host model's own latent conversion (to_host, from_host)


def latent_scaling(pipeline) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of the pipeline's VAE: a diffusers loop's latents are
    `(vae_latent - shift) * scaling`; a host's LATENT (ComfyUI's) holds the VAE latent itself."""
    vae = getattr(pipeline, "vae", None)
    if vae is None:
        raise ConfigError("this pipeline has no VAE: its latents' scaling is unknown")
    config = vae.config
    return float(getattr(config, "scaling_factor", None) or 1.0), float(getattr(config, "shift_factor", None) or 0.0)


def to_host_latent(pipeline, latents):
    """A diffusers loop's latents as the VAE latent a host's LATENT holds (ComfyUI's VAE Decode, KSampler)."""
    if latents.ndim not in (4, 5):
        raise ConfigError(f"the state's latents have shape {tuple(latents.shape)}: this family packs them "
                              f"(e.g. Flux); decode them with its decode step")
    io = getattr(pipeline, LATENT_IO, None)
    if io is not None:
        return io.to_host(latents)
    scaling, shift = latent_scaling(pipeline)
    return latents / scaling + shift


def from_host_latent(pipeline, samples):
    """A host's VAE latent as a diffusers loop's latents."""
    io = getattr(pipeline, LATENT_IO, None)
    if io is not None:
        return io.from_host(samples)
    scaling, shift = latent_scaling(pipeline)
    return (samples - shift) * scaling
