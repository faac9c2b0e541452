"""diffusers' own pipelines: their classes, workflows, guiders and frame rates found by reading diffusers' source
(`scan`), that reading kept per installed diffusers (`declarations`), a pipeline call's values as parameter specs
(`params`), a local folder or a pipeline of the Hugging Face cache loaded (`load`), one run across nodes (`run`), a
host's media in and diffusers' images, frames and sound out (`media`), and their latents as a host's (`latents`)."""
