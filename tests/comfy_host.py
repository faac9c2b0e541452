"""A real ComfyUI for the host and browser tiers: found on disk, started as `main.py --cpu` in a
private base directory with this pack installed, and driven over its HTTP / websocket API the way
ComfyUI's own `tests/execution` drive it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.comfy_client import ComfyProcess, Graph, RunResult, ValidationError, ui_to_api, widget_values  # noqa: E402

__all__ = ["ComfyServer", "Graph", "Interrupted", "RunResult", "interrupt_at_first_step", "ValidationError", "ui_to_api",
           "widget_values",
           "find_comfyui", "comfy_python",
           "missing_modules", "require_host", "install_blocks", "install_testkit", "start_test_server", "TINY_SD3",
           "TINY_SDXL", "TINY_SDXL_COMFY", "TINY_SDXL_LORA", "TINY_SD3_COMFY", "TINY_SD3_COMFY_FILE", "TINY_FLUX_COMFY",
           "TINY_FLUX_COMFY_FILE", "TINY_SD3_PIPELINE", "TINY_FLUX", "TINY_WAN", "PICKLE_ONLY"]
PACK_DIR_NAME = "modular_loops"


def find_comfyui() -> tuple[Path | None, str]:
    """(path, how it was found) of a ComfyUI checkout: $COMFYUI_PATH, else the ComfyUI whose
    custom_nodes/ holds this pack, else ~/ComfyUI. (None, why) when there is none."""
    looked = []
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser()
        if (path / "main.py").is_file():
            return path, "$COMFYUI_PATH"
        return None, f"$COMFYUI_PATH={env} has no main.py"
    if ROOT.parent.name == "custom_nodes":
        candidate = ROOT.parent.parent
        looked.append(str(candidate))
        if (candidate / "main.py").is_file():
            return candidate, "the ComfyUI holding this pack"
    home = Path.home() / "ComfyUI"
    looked.append(str(home))
    if (home / "main.py").is_file():
        return home, "~/ComfyUI"
    return None, "no ComfyUI found (set $COMFYUI_PATH; looked at " + ", ".join(looked) + ")"


def comfy_python(comfy: Path) -> str:
    """The Python that runs ComfyUI: $COMFYUI_PYTHON, else its .venv / venv, else this one."""
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for venv in (".venv", "venv"):
        exe = comfy / venv / "bin" / "python"
        if exe.is_file():
            return str(exe)
    return sys.executable


def require_host(tier="host"):
    """Skip the calling test module, loudly, unless a ComfyUI that can run is found; -> its path."""
    from conftest import skip_tier

    comfy, how = find_comfyui()
    if comfy is None:
        skip_tier(tier, how)
    missing = missing_modules(comfy_python(comfy))
    if missing:
        skip_tier(tier, f"the Python of the ComfyUI at {comfy} ({comfy_python(comfy)}) cannot run it: {missing}")
    return comfy


def missing_modules(python: str) -> str | None:
    """None if `python` can import what ComfyUI and the pack need, else the error."""
    code = "import torch, torchvision, aiohttp, diffusers, safetensors"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]


class ComfyServer(ComfyProcess):
    """`main.py --cpu` on a free port with base directory `base`: custom_nodes/ holds a link to this
    pack, models/modular_blocks/ the test's user blocks."""

    def __init__(self, comfy: Path, python: str, base: Path, extra_args=(), settings=None):
        self.base = base
        self.blocks_dir = base / "models" / "modular_blocks"
        for sub in ("custom_nodes", "user", "input", "output", "temp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        example = Path(comfy) / "input" / "example.png"  # what ComfyUI's own templates load
        if example.is_file():
            shutil.copy(example, base / "input" / "example.png")
        if settings:  # the frontend's settings of a fresh user (e.g. Comfy.VueNodes.Enabled)
            (base / "user" / "default").mkdir(parents=True, exist_ok=True)
            (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
        link = base / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        super().__init__(comfy, python, ["--cpu", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
                                          "--preview-method", "latent2rgb", *extra_args],
                         log_path=base / "comfyui.log")


def install_testkit(server: "ComfyServer", fixtures: Path, log=None):
    """The test-only nodes (tiny models, random conditioning, latent comparison) in custom_nodes/, and a
    tiny SD3-architecture checkpoint in models/checkpoints/, written by ComfyUI's own Python."""
    kit = fixtures / "comfy_testkit"
    link = server.base / "custom_nodes" / "modular_loops_testkit"
    if not link.exists():
        link.symlink_to(kit, target_is_directory=True)
    ckpt_dir = server.base / "models" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / TINY_SD3
    if not ckpt.exists():
        r = subprocess.run([server.python, str(kit / "__init__.py"), str(ckpt)], cwd=server.comfy, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"could not write the tiny SD3 checkpoint: {r.stderr[-2000:]}")
    install_tiny_pipelines(server, fixtures)


TINY_SDXL = "tiny-sdxl"
TINY_SDXL_COMFY = "tiny-sdxl-comfy"  # sizes ComfyUI's SDXL network carries (the bridge's tests)
TINY_SDXL_LORA = "tiny-sdxl-comfy-lora.safetensors"  # in models/loras: a LoRA for its UNet
TINY_SD3_COMFY = "tiny-sd3-comfy"  # sizes ComfyUI detects: its transformer also in models/diffusion_models/
TINY_SD3_COMFY_FILE = "tiny-sd3-comfy.safetensors"  # (Load Diffusion Model loads it with ComfyUI's own loader)
TINY_FLUX_COMFY, TINY_FLUX_COMFY_FILE = "tiny-flux-comfy", "tiny-flux-comfy.safetensors"  # the same for Flux
TINY_SD3_PIPELINE = "tiny-sd3"
TINY_FLUX = "tiny-flux"
TINY_WAN = "tiny-wan"  # Wan 2.1 text-to-video
TINY_QWENIMAGE_COMFY = "tiny-qwenimage-comfy"  # Qwen-Image with ComfyUI's latent format (16 channels)
PICKLE_ONLY = "pickle-only"


def install_tiny_pipelines(server: "ComfyServer", fixtures: Path):
    """models/diffusers/: tiny SDXL, SD3, Flux and Wan 2.1 pipelines (save_pretrained, .safetensors), every tiny
    family's folders (`tests/fixtures/tiny`), and a folder whose UNet weights are only a pickle file (which must be
    refused, never read)."""
    root = server.base / "models" / "diffusers"
    sdxl = root / TINY_SDXL
    for kind, folder in (("sdxl", sdxl), ("sdxl-comfy", root / TINY_SDXL_COMFY),
                         ("sd3-comfy", root / TINY_SD3_COMFY), ("flux-comfy", root / TINY_FLUX_COMFY), ("sd3", root / TINY_SD3_PIPELINE), ("flux", root / TINY_FLUX),
                         ("wan", root / TINY_WAN), ("qwenimage-comfy", root / TINY_QWENIMAGE_COMFY)):
        if not (folder / "model_index.json").is_file():
            r = subprocess.run([server.python, str(fixtures / "tiny_diffusers.py"), kind, str(folder)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"could not write the tiny {kind} pipeline: {r.stderr[-2000:]}")
    r = subprocess.run([server.python, str(fixtures / "tiny" / "make.py"), str(root)], capture_output=True, text=True)
    if r.returncode != 0:  # every family's tiny folders (tests/fixtures/tiny), ~10 s
        raise RuntimeError(f"could not write the tiny family pipelines: {r.stderr[-2000:]}")
    lora = server.base / "models" / "loras" / TINY_SDXL_LORA
    if not lora.is_file():
        lora.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([server.python, str(fixtures / "comfy_testkit" / "bridge_kit.py"), "lora",
                            str(root / TINY_SDXL_COMFY), str(lora)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"could not write the tiny SDXL LoRA: {r.stderr[-2000:]}")
    for folder, name in ((TINY_SD3_COMFY, TINY_SD3_COMFY_FILE), (TINY_FLUX_COMFY, TINY_FLUX_COMFY_FILE)):
        single = server.base / "models" / "diffusion_models" / name
        if not single.is_file():
            single.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / folder / "transformer" / "diffusion_pytorch_model.safetensors", single)
    pickled = root / PICKLE_ONLY
    if not pickled.is_dir():
        shutil.copytree(sdxl, pickled)
        weights = pickled / "unet" / "diffusion_pytorch_model.safetensors"
        weights.rename(weights.with_suffix(".bin"))  # named like a pickle: the loader must refuse before reading it


TINY_SD3 = "tiny_sd3.safetensors"


def start_test_server(comfy: Path, python: str, base: Path, fixtures: Path, **options) -> "ComfyServer":
    """A started ComfyServer with the test's user blocks and test-only nodes installed (`options`: extra_args,
    settings)."""
    server = ComfyServer(comfy, python, base, **options)
    install_blocks(server.blocks_dir, fixtures)
    install_testkit(server, fixtures)
    return server.start()


@dataclass
class Interrupted:
    result: RunResult
    seconds: float  # from POST /interrupt to the end of the run
    steps_after: list  # progress values of the node after the one that triggered the interrupt


def interrupt_at_first_step(server, graph, node, timeout=600, after_steps=0) -> Interrupted:
    """Run `graph`, press Interrupt (POST /interrupt) when `node` reports its first step (or, with `after_steps`, the
    first report of at least that many steps done), follow it to the end."""
    import time

    sent = {}

    def on_message(msg, srv):
        if (msg["type"] == "progress" and msg["data"]["node"] == str(node) and "at" not in sent
                and msg["data"]["value"] >= after_steps):
            sent["at"], sent["step"] = time.monotonic(), msg["data"]["value"]
            srv.post("/interrupt")

    result = server.run(graph, on_message=on_message, timeout=timeout)
    stopped = time.monotonic() - sent["at"]
    return Interrupted(result, stopped, [v for n, v, _ in result.progress if n == str(node) and v > sent["step"]])


def install_blocks(dest: Path, fixtures: Path):
    """Copy the test's user blocks (a block file, a custom-block folder, a broken file) into `dest`."""
    shutil.copy(fixtures / "blocks" / "user_blocks.py", dest / "user_blocks.py")
    shutil.copytree(fixtures / "blocks" / "scale_block", dest / "scale_block", dirs_exist_ok=True)
    shutil.copy(fixtures / "broken" / "broken_blocks.py", dest / "broken_blocks.py")
