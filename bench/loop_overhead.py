"""Core overhead per block-step: the pack's `run_loop` (instrumented loop_step, progress and interrupt
hooks on) vs diffusers' own `loop_step` on the same wrapper and blocks, in the same process.

    python bench/loop_overhead.py [--steps 2000] [--blocks 8] [--repeats 7]

Prints microseconds per block-step for both and their ratio (goal: <= 2x). Runs are alternated and
the median of each is taken, so drift on the machine affects both alike.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modular import BlockConfig, StepHooks, compat, run_loop  # noqa: E402
from modular.blocks.guide import LoopBlock, LoopWrapper  # noqa: E402


def diffusers_loop(steps, n_blocks):
    wrapper = compat.compose(LoopWrapper, {f"block_{k}": LoopBlock for k in range(n_blocks)})
    state = compat.PipelineState()
    state.set("num_steps", steps)
    state.set("x", 0)
    t = time.perf_counter()
    _, state = wrapper(None, state)
    elapsed = time.perf_counter() - t
    assert state.get("x") == steps * n_blocks
    return elapsed


def pack_loop(steps, n_blocks):
    blocks = [(f"block_{k}", BlockConfig(LoopBlock, {"x": 0} if k == 0 else {})) for k in range(n_blocks)]
    hooks = StepHooks(progress=lambda step, total, preview: None, interrupt=lambda: None)
    t = time.perf_counter()
    result = run_loop(LoopWrapper, blocks, {"num_steps": steps}, hooks=hooks)
    elapsed = time.perf_counter() - t
    assert result.state.get("x") == steps * n_blocks
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    per = args.steps * args.blocks
    diffusers_loop(10, args.blocks), pack_loop(10, args.blocks)  # warm-up
    ours, theirs = [], []
    for _ in range(args.repeats):
        theirs.append(diffusers_loop(args.steps, args.blocks) / per * 1e6)
        ours.append(pack_loop(args.steps, args.blocks) / per * 1e6)
    d, p = statistics.median(theirs), statistics.median(ours)
    print(f"block-steps per run: {per} ({args.steps} steps x {args.blocks} LoopBlocks), {args.repeats} alternated runs")
    print(f"diffusers loop_step : {d:.2f} us per block-step (median)")
    print(f"modular_loops       : {p:.2f} us per block-step (median; includes composing and seeding)")
    print(f"ratio               : {p / d:.2f}x  (goal <= 2x)")
    print(f"overhead            : {p - d:+.2f} us per block-step")


if __name__ == "__main__":
    main()
