"""A denoise loop built from blocks (PredictDenoised + EulerStep) vs ComfyUI's built-in `euler`, in one
process, on the same model, conditioning, latent, sigmas and seed.

    python bench/denoise_vs_builtin.py [--comfyui PATH] [--steps 20] [--size 512] [--repeats 7] [--gpu] [--save-every N]

Run it with ComfyUI's Python (it imports ComfyUI from --comfyui, $COMFYUI_PATH or ~/ComfyUI). The model
is the test tier's tiny SD1.5-architecture UNet (random weights) unless --model-channels makes it
bigger. Prints:
- wall time per run of each (alternated runs, medians) and their ratio (goal <= 1.03 on CPU);
- with --save-every N, a third variant: the blocks with `save_every` N (a snapshot after every step, a state file
  written every N steps and at the end, into a temporary output folder), and its ratio;
- the per-step cost of the host hooks (interrupt check, progress callback, NaN check; previews off);
- peak memory of one run of each, measured in a fresh subprocess per variant after a warm-up run (CPU:
  the resident size sampled every millisecond, above where it started; GPU: max_memory_allocated).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup(comfy: Path, gpu: bool):
    os.chdir(comfy)
    sys.path.insert(0, str(comfy))
    sys.argv = [sys.argv[0]]
    from comfy.cli_args import args

    args.cpu = not gpu
    import utils.extra_config  # noqa: F401  (as main.py does first: ComfyUI's `utils` package, before anything else's)

    spec = importlib.util.spec_from_file_location("modular_loops", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["modular_loops"] = pack
    spec.loader.exec_module(pack)
    kit_dir = ROOT / "tests/fixtures/comfy_testkit"
    kit_spec = importlib.util.spec_from_file_location("ml_testkit", kit_dir / "__init__.py",
                                                      submodule_search_locations=[str(kit_dir)])
    kit = importlib.util.module_from_spec(kit_spec)
    sys.modules["ml_testkit"] = kit
    kit_spec.loader.exec_module(kit)
    return pack, kit


def build(pack, kit, opts):
    import torch

    import comfy.sample
    import comfy.samplers
    from modular_loops.modular import BlockConfig
    from modular_loops.modular.core.registry import discover
    from modular_loops.modular.sampling import plan_denoise
    from modular_loops.nodes.sampling import denoise_sampler, schedule

    if opts.model_channels != 32:
        kit.TINY_SD15_UNET.update(model_channels=opts.model_channels, num_heads=8)
    model = kit.tiny_sd15(0)
    g = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, 77, 32, generator=g), {}]]
    neg = [[torch.randn(1, 77, 32, generator=g), {}]]
    latent = torch.zeros(1, 4, opts.size // 8, opts.size // 8)
    sigmas = schedule(model, "normal", opts.steps, 1.0)
    noise = comfy.sample.prepare_noise(latent, 5)
    reg = discover(include_pack=True)
    entry = reg.entries["DenoiseLoop"]
    blocks = [("block_1", BlockConfig(reg.entries["PredictDenoised"].cls)),
              ("block_2", BlockConfig(reg.entries["EulerStep"].cls))]
    samplers = {
        "builtin euler": comfy.samplers.sampler_object("euler"),
        "blocks euler": denoise_sampler(plan_denoise(entry.cls, blocks, label="bench")),
    }
    if opts.save_every:
        import tempfile

        import folder_paths

        folder_paths.set_output_directory(tempfile.mkdtemp(prefix="ml_bench_"))
        samplers[f"save_every {opts.save_every}"] = denoise_sampler(
            plan_denoise(entry.cls, blocks, label="bench"), save=(opts.save_every, "states/bench", None))

    def run(name, callback=None):
        return comfy.sample.sample_custom(model, noise, 7.0, samplers[name], sigmas, pos, neg, latent,
                                          callback=callback, disable_pbar=True, seed=5)

    run.samplers = list(samplers)
    return run, model


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timing(run, repeats):
    import latent_preview

    times = {name: [] for name in run.samplers}
    out = {name: run(name) for name in times}  # warm-up: model loaded, kernels chosen
    diff = (out["builtin euler"] - out["blocks euler"]).abs().max().item()
    for k in range(repeats):
        for name in (list(times) if k % 2 == 0 else list(reversed(times))):  # ABBA: neither always runs second
            callback = latent_preview.prepare_callback(run.model, run.steps) if run.with_callback else None
            sync()
            t = time.perf_counter()
            run(name, callback)
            sync()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}, diff


def hook_cost(steps=2000):
    """Per step: what the loop adds around the blocks when it runs inside ComfyUI (previews off)."""
    import torch

    import comfy.model_management
    import latent_preview
    from modular_loops.modular.sampling import check_finite
    from modular_loops.modular.blocks.denoise import EulerStep

    class State:
        latents = torch.randn(1, 4, 64, 64)

    block, state = EulerStep(), State()
    callback = latent_preview.prepare_callback(type("M", (), {"load_device": "cpu", "model": type("B", (), {"latent_format": None})()})(), steps)
    payload = {"x": state.latents, "i": 0, "sigma": 1.0, "sigma_hat": 1.0, "denoised": state.latents}
    t = time.perf_counter()
    for i in range(steps):
        comfy.model_management.throw_exception_if_processing_interrupted()
        check_finite(block, state)
        payload["i"] = i
        callback(payload["i"], payload["denoised"], payload["x"], steps)
    return (time.perf_counter() - t) / steps * 1e6


def peak(opts, variant):
    """Run in a fresh process: the peak memory one sampling run of `variant` adds."""
    cmd = [sys.executable, __file__, "--peak-of", variant, "--comfyui", str(opts.comfyui), "--steps", str(opts.steps),
           "--size", str(opts.size), "--model-channels", str(opts.model_channels)] + (["--gpu"] if opts.gpu else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(lines[-1])["peak_mb"]


def measure_peak(run, variant, gpu):
    import threading

    import torch

    run(variant)  # warm-up in this process too, so the model is loaded before the measurement
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(variant)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, top, done = rss(), [0], threading.Event()

    def sample():  # the CPU has no allocator counter: sample the resident size every millisecond
        while not done.is_set():
            top[0] = max(top[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run(variant)
    done.set()
    sampler.join()
    return (max(top[0], rss()) - base) / 2**20


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_PATH", Path.home() / "ComfyUI")))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=512, help="image size in pixels (latent = size / 8)")
    p.add_argument("--model-channels", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--gpu", action="store_true", help="run on ComfyUI's GPU instead of --cpu")
    p.add_argument("--save-every", type=int, default=0, help="also time the blocks with save_every N")
    p.add_argument("--peak-of", help=argparse.SUPPRESS)
    opts = p.parse_args()
    opts.comfyui = opts.comfyui.resolve()
    pack, kit = setup(opts.comfyui, opts.gpu)
    run, model = build(pack, kit, opts)
    if opts.peak_of:
        print(json.dumps({"peak_mb": measure_peak(run, opts.peak_of, opts.gpu)}))
        return
    run.model, run.steps = model, opts.steps
    import comfy.model_management

    print(f"device: {comfy.model_management.get_torch_device()}, latent {opts.size // 8}x{opts.size // 8}, "
          f"{opts.steps} steps, UNet model_channels {opts.model_channels}, {opts.repeats} alternated runs (medians)")
    for with_callback in (False, True):
        run.with_callback = with_callback
        medians, diff = timing(run, opts.repeats)
        b, m = medians["builtin euler"], medians["blocks euler"]
        what = "with latent_preview's progress callback" if with_callback else "no callback"
        print(f"  {what}: builtin euler {b * 1e3:.1f} ms, blocks euler {m * 1e3:.1f} ms, ratio {m / b:.3f}"
              f"  (max |diff| {diff:.3g})")
        for name in run.samplers[2:]:
            print(f"    {name}: {medians[name] * 1e3:.1f} ms, ratio {medians[name] / b:.3f} to builtin euler")
    print(f"  host hooks per step (interrupt check + NaN check + progress callback, previews off): {hook_cost():.1f} us")
    pb, pm = peak(opts, "builtin euler"), peak(opts, "blocks euler")
    print(f"  peak memory added by one run: builtin euler {pb:.1f} MB, blocks euler {pm:.1f} MB"
          + (f", ratio {pm / pb:.3f}" if pb > 0 else ""))


if __name__ == "__main__":
    main()
