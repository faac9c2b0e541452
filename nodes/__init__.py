"""The ComfyUI adapter: node classes generated from block declarations (`factory`, `values`, pure), the
denoise loops inside ComfyUI's sampler machinery (`sampler`), the state nodes, what it takes from ComfyUI
while a loop runs (`host`), and the mappings ComfyUI loads (`mappings`). Only `sampler`, `host` and
`mappings` import ComfyUI, so the rest is tested without one."""
