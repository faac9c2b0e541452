"""What the pack adds to ComfyUI's start-up, against the same ComfyUI started without it (alternated rounds,
medians): the pack's own line of ComfyUI's "Import times for custom nodes", the time until the server answers, and
the page's first node list (`GET /object_info`: time, size, node count).

    python bench/startup.py [--comfy PATH] [--python PY] [--rounds 3]

Goals (docs/performance.md): import <= 1.0 s; first node list <= +0.3 s over ComfyUI without the pack. The first
start after installing (or upgrading diffusers) also reads diffusers' declarations into the cache; that start is
shown apart ("first start") and left out of the medians.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from comfy_host import comfy_python, find_comfyui  # noqa: E402
from tools.comfy_client import ComfyProcess  # noqa: E402

IMPORT_LINE = re.compile(r"([\d.]+) seconds(?: \(IMPORT FAILED\))?: .*[/\\]modular_loops\s*$", re.M)


def one_start(comfy: Path, python: str, base: Path, with_pack: bool) -> dict:
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "modular_loops"
    if with_pack and not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    if not with_pack and link.exists():
        link.unlink()
    server = ComfyProcess(comfy, python, ["--cpu", "--base-directory", str(base), "--database-url",
                                          "sqlite:///:memory:"], log_path=base / "comfyui.log")
    started = time.perf_counter()
    server.start()
    ready = time.perf_counter() - started
    t = time.perf_counter()
    body = server.get("/object_info")
    listed = time.perf_counter() - t
    server.stop()
    found = IMPORT_LINE.findall(server.last_log())
    return {"ready": ready, "object_info": listed, "nodes": len(body), "mb": len(json.dumps(body)) / 1e6,
            "import": float(found[-1]) if found else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfy")
    ap.add_argument("--python")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    comfy = Path(args.comfy) if args.comfy else find_comfyui()[0]
    if comfy is None:
        sys.exit("no ComfyUI found: --comfy PATH (or $COMFYUI_PATH)")
    python = args.python or comfy_python(comfy)
    base = Path(tempfile.mkdtemp(prefix="ml-startup-"))
    first = one_start(comfy, python, base, True)  # fills the declaration cache of this base's user folder
    print(f"first start with the pack (cache written): import {first['import']:.2f} s, ready {first['ready']:.2f} s, "
          f"first node list {first['object_info']:.2f} s")
    runs = {False: [], True: []}
    for _ in range(args.rounds):
        for with_pack in (False, True):
            runs[with_pack].append(one_start(comfy, python, base, with_pack))

    def median(with_pack, key):
        return statistics.median(r[key] for r in runs[with_pack])

    version = {}
    exec((comfy / "comfyui_version.py").read_text(), version)
    print(f"ComfyUI {version.get('__version__')}, {args.rounds} alternated rounds, medians:")
    print(f"  pack import (ComfyUI's Import times line): {median(True, 'import'):.2f} s   (goal <= 1.0 s)")
    print(f"  ready to serve: {median(False, 'ready'):.2f} s without, {median(True, 'ready'):.2f} s with "
          f"(+{median(True, 'ready') - median(False, 'ready'):.2f} s)")
    print(f"  first GET /object_info: {median(False, 'object_info'):.2f} s without, "
          f"{median(True, 'object_info'):.2f} s with (+{median(True, 'object_info') - median(False, 'object_info'):.2f} s, "
          f"goal <= +0.3 s)")
    print(f"  nodes listed: {median(False, 'nodes'):.0f} without, {median(True, 'nodes'):.0f} with; "
          f"{median(True, 'mb'):.1f} MB")


if __name__ == "__main__":
    main()
