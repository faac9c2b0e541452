"""Benchmark: Save State / Load State on a large state (default 1 GiB of float32 latents in 4 tensors, plus a few
JSON values): wall time and peak resident memory of each, each in a fresh process, so that "a 4 GB file is not
read into memory twice" shows as a load peak near the state's own size.

    python bench/state_files.py --gib 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(mode, path, gib):
    sys.path.insert(0, str(ROOT))
    import torch

    from modular import compat
    from modular.state_files import load_state, save_state

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "save":
        state = compat.PipelineState()
        n = int(gib * 2**30 / 4 / 4)  # four float32 tensors
        for k in range(4):
            state.set(f"latents_{k}", torch.randn(n))
        state.set("step", 10)
        state.set("sizes", [1024, 1024])
        made = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        save_state(state, path, {"loop": "bench", "step": 10})
        seconds = time.perf_counter() - t
        print(json.dumps({"seconds": seconds, "base_mib": made / 1024, "peak_mib": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024}))
    else:
        t = time.perf_counter()
        state, _ = load_state(path)
        total = sum(v.numel() * v.element_size() for v in state.values.values() if hasattr(v, "numel"))
        _ = sum(float(v.sum()) for v in state.values.values() if hasattr(v, "numel"))  # read every byte
        seconds = time.perf_counter() - t
        print(json.dumps({"seconds": seconds, "base_mib": base / 1024, "state_mib": total / 2**20,
                          "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--child", nargs=2)
    opts = parser.parse_args()
    if opts.child:
        return child(opts.child[0], opts.child[1], opts.gib)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "state.safetensors")
        runs = {}
        for mode in ("save", "load"):
            out = subprocess.run([sys.executable, __file__, "--gib", str(opts.gib), "--child", mode, path],
                                 capture_output=True, text=True, check=True).stdout
            runs[mode] = json.loads(out.strip().splitlines()[-1])
        size = os.path.getsize(path) / 2**20
    save, load = runs["save"], runs["load"]
    print(f"state of {opts.gib:g} GiB (file {size:.0f} MiB)")
    print(f"  save: {save['seconds']:.2f} s, peak RSS {save['peak_mib']:.0f} MiB (the state itself: {save['base_mib']:.0f} MiB)")
    print(f"  load: {load['seconds']:.2f} s, peak RSS {load['peak_mib']:.0f} MiB (interpreter + torch before: "
          f"{load['base_mib']:.0f} MiB; tensors loaded {load['state_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
