"""The ComfyUI adapter, one module per area of the core: `factory` (node classes generated from block
declarations: loops and blocks) with `widgets` (the one widget builder: ComfyUI's widgets and sockets from
parameter specs, and their values back), `sampling` (denoise loops inside ComfyUI's sampler machinery),
`diffusers/` (diffusers' own pipelines: loader, guiders and scheduler, its loops, steps and workflow nodes, a state
to IMAGE / AUDIO / LATENT), `state_files` (the state nodes), `listing` (what ComfyUI lists of diffusers' nodes, kept
per diffusers), `host` (what it takes from ComfyUI while a loop runs) and `mappings` (what ComfyUI loads).
`factory`, `widgets` and `diffusers/` import no ComfyUI at import time, so they are tested without one."""
