"""diffusers' SDXL denoise loop on a ComfyUI MODEL (the bridge: Diffusers Pipeline From MODEL, CONDITIONING To State,
SDXL's steps, its loop, as the nodes run them) vs ComfyUI's own sampler on the same MODEL (`sample_custom` with
`euler` and CFG, the same sigmas, conditioning and starting latent), in one process.

    python bench/bridge_vs_ksampler.py [--comfyui PATH] [--steps 20] [--size 512] [--repeats 5]

Run it with ComfyUI's Python (it imports ComfyUI from --comfyui, $COMFYUI_PATH or ~/ComfyUI). The model is the
host tier's tiny ComfyUI-sized SDXL (its UNet's weights in ComfyUI's own SDXL network). Prints the medians of
alternated runs (ABC CBA) and their ratios, with a third run: the same diffusers loop on diffusers' own UNet with the
same weights (what the bridge costs over diffusers' own call), and the max |diff| of the LATENTs.
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
    opts = parser.parse_args()

    from denoise_vs_builtin import setup
    from timing import alternated_medians

    setup(Path(opts.comfyui).resolve(), gpu=False)
    import torch

    import comfy.sample
    import comfy.samplers
    import tiny_diffusers
    from ml_testkit.bridge_kit import comfy_sdxl_model
    from modular_loops.modular import run_loop
    from modular_loops.modular.pipelines.run import RunComponents, run_step
    from modular_loops.nodes.diffusers.bridge import ConditioningToState, bridged_pipeline, sessions
    from diffusers.modular_pipelines.stable_diffusion_xl import before_denoise as b, denoise as n

    folder = tiny_diffusers.tiny_sdxl(Path(tempfile.mkdtemp()) / "sdxl", comfy=True)
    model = comfy_sdxl_model(folder)
    g = torch.Generator().manual_seed(1)
    cond = lambda: [[torch.randn(1, 16, 64, generator=g), {"pooled_output": torch.randn(1, 32, generator=g)}]]
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
    start_latent = model.model.process_latent_out(start.get("latents"))

    def bridge():
        components = RunComponents(pipeline)
        with sessions(pipeline, components):
            out = run_loop(n.StableDiffusionXLDenoiseStep, [], state=start, components=components,
                           label="bench").state
        return model.model.process_latent_out(out.get("latents"))

    from diffusers import StableDiffusionXLAutoBlocks, UNet2DConditionModel

    own = StableDiffusionXLAutoBlocks().init_pipeline()  # diffusers' own UNet on the same weights
    own.update_components(unet=UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval(),
                          scheduler=type(pipeline.scheduler).from_config(pipeline.scheduler.config))

    def diffusers_unet():
        out = run_loop(n.StableDiffusionXLDenoiseStep, [], state=start, components=RunComponents(own),
                       label="bench").state
        return model.model.process_latent_out(out.get("latents"))

    def comfyui():
        return comfy.sample.sample_custom(model, torch.zeros_like(start_latent), 7.5,
                                          comfy.samplers.sampler_object("euler"), sigmas, positive, negative,
                                          start_latent, seed=0)

    runs = {"ComfyUI sample_custom euler": comfyui, "bridged diffusers loop": bridge,
            "same loop, diffusers' UNet": diffusers_unet}
    diff = (bridge() - comfyui()).abs().max().item()  # also the warm-up
    diff_own = (bridge() - diffusers_unet()).abs().max().item()
    with torch.no_grad():
        med = alternated_medians(runs, opts.repeats)
    print(f"tiny SDXL, {opts.steps} steps, {opts.size} px, CFG 7.5, {opts.repeats} repeats, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    for name, value in med.items():
        print(f"  {name:28s} {value * 1000:8.1f} ms (median)")
    ratio = med["bridged diffusers loop"] / med["ComfyUI sample_custom euler"]
    print(f"  ratio bridge / ComfyUI: {ratio:.3f}   max |diff| of the LATENTs {diff:.3g}")
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


if __name__ == "__main__":
    main()
