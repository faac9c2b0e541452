"""Benchmark: diffusers' SDXL / SD3 text-to-image as the pack's chain of steps and a loop (what the nodes run:
`modular.pipelines.run.run_step`, `modular.run_loop`, the run's components carried in the state) against
diffusers' own pipeline call, on the same tiny random components, in one process. Prints medians and the
wall-time ratio (chain / diffusers, goal <= 1.02 on CPU) and the max |diff| of the images (0 expected).

    python bench/diffusers_chain_vs_pipeline.py --family sdxl --steps 10 --size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
sys.path.insert(0, str(ROOT / "bench"))

from timing import alternated_medians  # noqa: E402

PROMPT = "a cat"


def chain(family):
    """The steps before the loop, the loop class, for a family (as the example workflows wire them)."""
    if family == "sdxl":
        from diffusers.modular_pipelines.stable_diffusion_xl import before_denoise as b, decoders as d, denoise as n, encoders as e

        return ([(e.StableDiffusionXLTextEncoderStep, {"prompt": PROMPT}), (b.StableDiffusionXLInputStep, {}),
                 (b.StableDiffusionXLSetTimestepsStep, "steps"), (b.StableDiffusionXLPrepareLatentsStep, "latents"),
                 (b.StableDiffusionXLPrepareAdditionalConditioningStep, {})],
                n.StableDiffusionXLDenoiseStep, d.StableDiffusionXLDecodeStep)
    from diffusers.modular_pipelines.stable_diffusion_3 import before_denoise as b, decoders as d, denoise as n, encoders as e, inputs as i

    return ([(e.StableDiffusion3TextEncoderStep, {"prompt": PROMPT}), (i.StableDiffusion3TextInputStep, {}),
             (b.StableDiffusion3PrepareLatentsStep, "latents"), (b.StableDiffusion3SetTimestepsStep, "steps")],
            n.StableDiffusion3DenoiseStep, d.StableDiffusion3DecodeStep)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sdxl", "sd3"), default="sdxl")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()

    import torch
    import tiny_diffusers

    from modular import run_loop
    from modular.pipelines.load import load_pipeline
    from modular.pipelines.run import RunComponents, run_step

    folder = Path(tempfile.mkdtemp()) / opts.family
    tiny_diffusers.MAKERS[opts.family](folder)
    pipe = load_pipeline(folder, torch.float32)
    before, loop, decode = chain(opts.family)
    values = {"steps": {"num_inference_steps": opts.steps},
              "latents": {"height": opts.size, "width": opts.size, "generator": 0}}

    def ours():
        state = None
        for cls, given in before:
            state = run_step(cls, values.get(given, given) if isinstance(given, str) else given, state,
                             RunComponents(pipe)).state
        state = run_loop(loop, [], state=state, components=RunComponents(pipe), label=loop.__name__).state
        return run_step(decode, {"output_type": "pt"}, state, RunComponents(pipe)).state.get("images")

    def theirs():
        return pipe(prompt=PROMPT, num_inference_steps=opts.steps, height=opts.size, width=opts.size,
                    generator=torch.Generator().manual_seed(0), output_type="pt", output="images")

    runs = {"diffusers pipeline": theirs, "node chain": ours}
    diff = (ours() - theirs()).abs().max().item()  # also the warm-up
    med = alternated_medians(runs, opts.repeats)
    print(f"{opts.family}, {opts.steps} steps, {opts.size} px, {opts.repeats} repeats, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    for name, value in med.items():
        print(f"  {name:20s} {value * 1000:8.1f} ms (median)")
    print(f"  ratio chain / diffusers: {med['node chain'] / med['diffusers pipeline']:.3f}   max |diff| {diff:.3g}")


if __name__ == "__main__":
    main()
