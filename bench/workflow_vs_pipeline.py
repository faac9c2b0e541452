"""Benchmark: one named workflow of a tiny family (`tests/fixtures/tiny/<family>.py`) as the workflow node runs it
(`modular.pipelines.run.run_workflow`: the call's values set once, diffusers' chain step by step, the loop through
the pack's runner with its hooks) against diffusers' own `pipe(**call)` on the same folder, in one process, each
repeated; prints the medians, the wall-time ratio (workflow node / pipe) and the max |diff| of the outputs (0
expected). Sizes, frames and steps can be raised over the fixture's tiny call.

    python bench/workflow_vs_pipeline.py --family wan --blocks WanBlocks --workflow default --frames 9 --size 64 --steps 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="wan")
    parser.add_argument("--blocks", default="WanBlocks")
    parser.add_argument("--workflow", default="default")
    parser.add_argument("--size", type=int, help="height and width (default: the fixture's)")
    parser.add_argument("--frames", type=int, help="num_frames (default: the fixture's)")
    parser.add_argument("--steps", type=int, help="num_inference_steps (default: the fixture's)")
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()

    import torch
    import diffusers.modular_pipelines as blocks
    from diffusers.modular_pipelines import ModularPipeline

    import tiny
    from modular.pipelines.load import load_pipeline
    from modular.pipelines.run import RunComponents, run_workflow

    spec = tiny.family(opts.family).WORKFLOWS[opts.blocks]
    call = dict(spec["workflows"][opts.workflow])
    for name, value in (("height", opts.size), ("width", opts.size), ("num_frames", opts.frames),
                        ("num_inference_steps", opts.steps)):
        if value:
            call[name] = value
    folder = Path(tempfile.mkdtemp()) / spec["folder"]
    tiny.family(opts.family).FOLDERS[spec["folder"]](folder)
    given = tiny.with_media(call)

    pipe = ModularPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.load_components(dtype=torch.float32)
    ours = load_pipeline(folder, torch.float32)
    auto = getattr(blocks, opts.blocks)

    def diffusers_call():
        return pipe(**{"output_type": "pt", **given}, generator=torch.Generator().manual_seed(0), output=spec["output"])

    def workflow_node():
        values = {**given, "output_type": "pt", "generator": 0}
        result = run_workflow(auto, opts.workflow, values, None, RunComponents(ours))
        return result.state.values[spec["output"]]

    times = {"pipe": [], "workflow node": []}
    outputs = {}
    for _ in range(opts.repeats):
        for name, run in (("pipe", diffusers_call), ("workflow node", workflow_node)):
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    diff = (outputs["pipe"].float() - outputs["workflow node"].float()).abs().max().item()
    print(f"{opts.blocks} {opts.workflow}: {call}")
    for name, value in medians.items():
        print(f"  {name:14s} median {value * 1000:8.1f} ms over {opts.repeats}")
    print(f"  ratio workflow node / pipe: {medians['workflow node'] / medians['pipe']:.3f}; "
          f"output {tuple(outputs['pipe'].shape)}, max |diff| {diff:g}")


if __name__ == "__main__":
    main()
