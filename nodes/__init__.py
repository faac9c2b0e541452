"""The ComfyUI adapter, one module per area of the core: `factory` (node classes generated from block
declarations: loops and blocks) with `widgets` (the one widget builder: ComfyUI's widgets and sockets from
parameter specs, and their values back), `sampling` (denoise loops inside ComfyUI's sampler machinery),
`pipelines` (diffusers' own loops, steps, loader, guiders, scheduler), `state_files` (the state nodes), `host`
(what it takes from ComfyUI while a loop runs) and `mappings` (what ComfyUI loads). `factory`, `widgets` and
`pipelines` import no ComfyUI, so they are tested without one."""
