"""Run a shared workflow headless: queue a workflow JSON file (UI or API format) on a ComfyUI and
print / save its outputs. For people who share workflows and want to check them in their own CI.

    python tools/run_workflow.py WORKFLOW.json --url http://127.0.0.1:8188 [--out DIR]
    python tools/run_workflow.py WORKFLOW.json --comfyui ~/ComfyUI [--comfyui-args="--cpu"] [--out DIR]

With --url it uses a running ComfyUI; with --comfyui it starts that ComfyUI (with the custom nodes
installed there), runs the workflow and stops it. Text outputs are printed as `node <id> (<type>): <text>`;
with --out, every output file (images, ...) is saved there with `outputs.json` (the prompt's history).
Exit status: 0 ran, 1 execution error or interrupted, 2 invalid workflow (ComfyUI's validation answer
is printed), 3 no ComfyUI reachable or the run timed out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.comfy_client import ComfyClient, ComfyProcess, ValidationError, ui_to_api  # noqa: E402


def load_prompt(path: Path, client: ComfyClient) -> dict:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        return ui_to_api(data, client.object_info())  # UI format, as the browser saves it
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a POST /prompt body
    if isinstance(data, dict) and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data  # API format, as "Export (API)" saves it
    raise ValueError(f"{path}: neither a UI workflow (with 'nodes') nor an API prompt (node id -> class_type)")


def report(result, prompt, out: Path | None, client: ComfyClient):
    for node_id, output in sorted(result.outputs.items(), key=lambda kv: kv[0]):
        kind = prompt.get(node_id, {}).get("class_type", "?")
        for text in output.get("text", []):
            print(f"node {node_id} ({kind}): {text}")
        for key, items in output.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    line = f"node {node_id} ({kind}): {key} {item.get('subfolder', '')}/{item['filename']}".replace(" /", " ")
                    if out is not None:
                        data = client.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                        dest = out / f"{node_id}_{item['filename']}"
                        dest.write_bytes(data)
                        line += f" -> {dest}"
                    print(line)
    if out is not None:
        (out / "outputs.json").write_text(json.dumps(result.outputs, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Exit status: 0 ran, 1 failed, 2 invalid, 3 unreachable.")
    ap.add_argument("workflow", type=Path)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running ComfyUI, e.g. http://127.0.0.1:8188")
    where.add_argument("--comfyui", type=Path, help="a ComfyUI folder to start for this run")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs that ComfyUI (default: this one)")
    ap.add_argument("--comfyui-args", default="", help='extra arguments for its main.py, e.g. "--cpu"')
    ap.add_argument("--out", type=Path, help="save output files and outputs.json here")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run (default 600)")
    args = ap.parse_args(argv)

    server = None
    try:
        if args.comfyui:
            server = ComfyProcess(args.comfyui.expanduser(), args.python, shlex.split(args.comfyui_args))
            server.start()
            client = server
        else:
            client = ComfyClient(args.url)
            client.get("/system_stats")
    except (OSError, RuntimeError) as e:
        print(f"error: no ComfyUI reachable: {e}", file=sys.stderr)
        return 3
    try:
        try:
            prompt = load_prompt(args.workflow, client)
        except (ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            result = client.run(prompt, timeout=args.timeout)
        except ValidationError as e:
            print(f"error: ComfyUI rejected the workflow:\n{json.dumps(e.body, indent=1)}", file=sys.stderr)
            return 2
        except TimeoutError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
        report(result, prompt, args.out, client)
        if result.status != "success":
            err = result.error or {}
            print(f"error: {result.status}: node {err.get('node_id')} ({err.get('node_type')}): "
                  f"{err.get('exception_type', '')}: {err.get('exception_message', '').strip()}", file=sys.stderr)
            return 1
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
