"""diffusers' own pipelines: their blocks found by reading diffusers' source (`scan`), a local folder loaded
(`load`), one run across nodes (`run`), and their latents as a host's (`latents`)."""
