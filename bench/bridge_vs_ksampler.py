"""diffusers' SDXL denoise loop on a ComfyUI MODEL (the bridge: Diffusers Pipeline From MODEL, CONDITIONING To State,
SDXL's steps, its loop, as the nodes run them) vs ComfyUI's own sampler on the same MODEL (`sample_custom` with
`euler` and CFG, the same sigmas, conditioning and starting latent), in one process.

    python bench/bridge_vs_ksampler.py [--comfyui PATH] [--steps 20] [--size 512] [--repeats 5]
    python bench/bridge_vs_ksampler.py --gpu --full-size [--dtype float16]        # on a GPU, nothing downloaded
    python bench/bridge_vs_ksampler.py --gpu --checkpoint models/checkpoints/sd_xl_base_1.0.safetensors

Run it with ComfyUI's Python (it imports ComfyUI from --comfyui, $COMFYUI_PATH or ~/ComfyUI). The model is the
host tier's tiny ComfyUI-sized SDXL (its UNet's weights in ComfyUI's own SDXL network); with --full-size, ComfyUI's
SDXL network at SDXL's own sizes with random seeded weights; with --checkpoint, an SDXL checkpoint as Load Checkpoint
loads it. Prints the medians of alternated runs (ABC CBA) and their ratios, with a third run for the tiny model: the
same diffusers loop on diffusers' own UNet with the same weights (what the bridge costs over diffusers' own call),
and the max |diff| of the LATENTs. With --gpu (ComfyUI's default GPU memory mode, the MODEL in float16 unless
--dtype says otherwise) it also prints each run's peak VRAM (torch.cuda.max_memory_allocated). Not a test: CI has
no GPU; run it where one is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/ComfyUI")))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also cProfile one run of each (top 15, own time)")
    parser.add_argument("--gpu", action="store_true", help="ComfyUI's default GPU memory mode; report peak VRAM")
    parser.add_argument("--full-size", action="store_true", help="SDXL's own sizes, random seeded weights")
    parser.add_argument("--checkpoint", help="an SDXL checkpoint file, loaded as Load Checkpoint does")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"],
                        help="the MODEL's weights (default: float16 with --gpu, else float32)")
    opts = parser.parse_args()

    from denoise_vs_builtin import setup
    from timing import alternated_medians

    setup(Path(opts.comfyui).resolve(), gpu=opts.gpu)
    import torch

    import comfy.sample
    import comfy.samplers
    import tiny_diffusers
    from ml_testkit.bridge_kit import comfy_sdxl_model
    from modular_loops.modular import run_loop
    from modular_loops.modular.pipelines.run import RunComponents, run_step
    from modular_loops.nodes.diffusers.bridge import ConditioningToState, bridged_pipeline, sessions
    from diffusers.modular_pipelines.stable_diffusion_xl import before_denoise as b, denoise as n

    dtype = getattr(torch, opts.dtype or ("float16" if opts.gpu else "float32"))
    folder = None
    if opts.checkpoint:
        import comfy.sd

        model = comfy.sd.load_checkpoint_guess_config(opts.checkpoint, output_vae=False, output_clip=False,
                                                      model_options={"dtype": dtype})[0]
        what = Path(opts.checkpoint).name
    elif opts.full_size:
        model, what = full_size_sdxl(dtype), "SDXL-sized (random weights)"
    else:
        folder = tiny_diffusers.tiny_sdxl(Path(tempfile.mkdtemp()) / "sdxl", comfy=True)
        model, what = comfy_sdxl_model(folder), "tiny SDXL"
    unet = model.model.model_config.unet_config
    context, pooled = unet["context_dim"], unet["adm_in_channels"] - 6 * model.model.embedder.dim
    g = torch.Generator().manual_seed(1)
    cond = lambda: [[torch.randn(1, 77, context, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g)}]]
    positive, negative = cond(), cond()
    empty = {"samples": torch.zeros(1, 4, opts.size // 8, opts.size // 8)}
    pipeline = bridged_pipeline(model)
    state = ConditioningToState().convert(pipeline, positive, negative, empty)[0]
    steps = [(b.StableDiffusionXLInputStep, {}), (b.StableDiffusionXLSetTimestepsStep,
                                                  {"num_inference_steps": opts.steps}),
             (b.StableDiffusionXLPrepareLatentsStep, {"generator": torch.Generator().manual_seed(0)}),
             (b.StableDiffusionXLPrepareAdditionalConditioningStep, {})]
    start = state
    for cls, given in steps:
        start = run_step(cls, given, start, RunComponents(pipeline)).state
    scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(opts.steps)
    sigmas = scheduler.sigmas.float()
    start_latent = model.model.process_latent_out(start.get("latents").float().cpu())

    def synced(latent):
        if opts.gpu:
            torch.cuda.synchronize()
        return latent.float().cpu()

    def bridge():
        components = RunComponents(pipeline)
        with sessions(pipeline, components):
            out = run_loop(n.StableDiffusionXLDenoiseStep, [], state=start, components=components,
                           label="bench").state
        return synced(model.model.process_latent_out(out.get("latents").float().cpu()))

    def comfyui():
        return synced(comfy.sample.sample_custom(model, torch.zeros_like(start_latent), 7.5,
                                                 comfy.samplers.sampler_object("euler"), sigmas, positive, negative,
                                                 start_latent, seed=0))

    runs = {"ComfyUI sample_custom euler": comfyui, "bridged diffusers loop": bridge}
    diff = (bridge() - comfyui()).abs().max().item()  # also the warm-up
    if folder is not None:
        from diffusers import StableDiffusionXLAutoBlocks, UNet2DConditionModel

        own = StableDiffusionXLAutoBlocks().init_pipeline()  # diffusers' own UNet on the same weights
        own.update_components(unet=UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval(),
                              scheduler=type(pipeline.scheduler).from_config(pipeline.scheduler.config))

        def diffusers_unet():
            out = run_loop(n.StableDiffusionXLDenoiseStep, [], state=start, components=RunComponents(own),
                           label="bench").state
            return synced(model.model.process_latent_out(out.get("latents")))

        runs["same loop, diffusers' UNet"] = diffusers_unet
        diff_own = (bridge() - diffusers_unet()).abs().max().item()
    with torch.no_grad():
        med = alternated_medians(runs, opts.repeats)
        peaks = {}
        for name, run in runs.items() if opts.gpu else ():
            torch.cuda.reset_peak_memory_stats()
            run()
            peaks[name] = torch.cuda.max_memory_allocated() / 2 ** 30
    device = torch.cuda.get_device_name() if opts.gpu else f"CPU, threads {torch.get_num_threads()}"
    print(f"{what}, {opts.steps} steps, {opts.size} px, CFG 7.5, {opts.repeats} repeats, {dtype}, "
          f"torch {torch.__version__}, {device}")
    for name, value in med.items():
        peak = f"   peak VRAM {peaks[name]:.2f} GiB" if name in peaks else ""
        print(f"  {name:28s} {value * 1000:8.1f} ms (median){peak}")
    ratio = med["bridged diffusers loop"] / med["ComfyUI sample_custom euler"]
    print(f"  ratio bridge / ComfyUI: {ratio:.3f}   max |diff| of the LATENTs {diff:.3g}")
    if "same loop, diffusers' UNet" in med:
        ratio = med["bridged diffusers loop"] / med["same loop, diffusers' UNet"]
        print(f"  ratio bridge / diffusers' UNet: {ratio:.3f}   max |diff| of the LATENTs {diff_own:.3g}")
    if opts.profile:
        import cProfile
        import pstats

        for name, run in runs.items():
            profile = cProfile.Profile()
            with torch.no_grad():
                profile.runcall(run)
            print(f"--- {name}")
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)


# ComfyUI's SDXL UNet config for SDXL 1.0 (as its detection gives for sd_xl_base_1.0)
SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False}


def full_size_sdxl(dtype):
    """ComfyUI's own SDXL network at SDXL 1.0's sizes, random seeded weights (normal x 0.02: nothing downloaded),
    in a ModelPatcher as Load Checkpoint makes one."""
    import torch

    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SDXL(dict(SDXL_UNET))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.diffusion_model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.02
            param.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


if __name__ == "__main__":
    main()
