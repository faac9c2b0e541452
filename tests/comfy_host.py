"""A real ComfyUI for the host and browser tiers: found on disk, started as `main.py --cpu` in a
private base directory with this pack installed, and driven over its HTTP / websocket API the way
ComfyUI's own `tests/execution` drive it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def missing_modules(python: str) -> str | None:
    """None if `python` can import what ComfyUI and the pack need, else the error."""
    code = "import torch, torchvision, aiohttp, diffusers, safetensors"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    outputs: dict = field(default_factory=dict)
    error: dict | None = None
    progress: list = field(default_factory=list)  # (node, value, max) in arrival order
    messages: list = field(default_factory=list)

    def text(self, node_id) -> str:
        return "".join(self.outputs[str(node_id)]["text"])


class ValidationError(Exception):
    def __init__(self, body):
        super().__init__(json.dumps(body, indent=1))
        self.body = body


class ComfyServer:
    """`main.py --cpu` on a free port with base directory `base`: custom_nodes/ holds a link to this
    pack, models/modular_blocks/ the test's user blocks."""

    def __init__(self, comfy: Path, python: str, base: Path):
        self.comfy, self.python, self.base = comfy, python, base
        self.port = free_port()
        self.proc = None
        self.log_path = base / "comfyui.log"
        self.blocks_dir = base / "models" / "modular_blocks"
        for sub in ("custom_nodes", "user", "input", "output", "temp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        link = base / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=180):
        log = open(self.log_path, "a")
        log.write(f"\n===== start {time.strftime('%X')} =====\n")
        log.flush()
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
        self.proc = subprocess.Popen(cmd, cwd=self.comfy, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer in {timeout} s; log:\n{self.log()[-4000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_log(self) -> str:
        """The log since the latest start."""
        return self.log().rsplit("===== start", 1)[-1]

    # --- HTTP ---------------------------------------------------------------------------------

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path, body=None):
        data = json.dumps(body if body is not None else {}).encode()
        req = urllib.request.Request(self.url + path, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return json.loads(raw) if raw.strip() else None
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return {"http_status": e.code, **json.loads(body)}
            except ValueError:
                return {"http_status": e.code, "text": body.decode(errors="replace")}

    def object_info(self, node_class=None):
        info = self.get("/object_info" + (f"/{node_class}" if node_class else ""))
        return info[node_class] if node_class else info

    def queue(self, prompt, client_id=None):
        """POST /prompt; returns the prompt id or raises ValidationError with ComfyUI's answer."""
        body = self.post("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        if "prompt_id" not in body:
            raise ValidationError(body)
        return body["prompt_id"]

    def run(self, prompt, timeout=120, on_message=None) -> RunResult:
        """Queue `prompt` and follow it on the websocket until it ends; read its outputs from /history."""
        import websocket  # websocket-client, as in ComfyUI's tests/execution

        client_id = uuid.uuid4().hex
        ws = websocket.WebSocket()
        ws.connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            prompt_id = self.queue(prompt, client_id)
            result = RunResult(prompt_id, "success")
            deadline = time.time() + timeout
            while True:
                if time.time() > deadline:
                    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
                raw = ws.recv()
                if not isinstance(raw, str):
                    continue  # binary preview frames
                msg = json.loads(raw)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                result.messages.append(msg)
                if on_message:
                    on_message(msg, self)
                kind = msg["type"]
                if kind == "progress":
                    result.progress.append((data["node"], data["value"], data["max"]))
                elif kind == "execution_error":
                    result.status, result.error = "error", data
                    break
                elif kind == "execution_interrupted":
                    result.status, result.error = "interrupted", data
                    break
                elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                elif kind == "execution_success":
                    break
        finally:
            ws.close()
        history = self.history(prompt_id)
        result.outputs = history.get("outputs", {})
        return result

    def history(self, prompt_id, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                return h[prompt_id]
            time.sleep(0.1)
        return {}


def install_blocks(dest: Path, fixtures: Path):
    """Copy the test's user blocks (a block file, a custom-block folder, a broken file) into `dest`."""
    shutil.copy(fixtures / "blocks" / "user_blocks.py", dest / "user_blocks.py")
    shutil.copytree(fixtures / "blocks" / "scale_block", dest / "scale_block", dirs_exist_ok=True)
    shutil.copy(fixtures / "broken" / "broken_blocks.py", dest / "broken_blocks.py")


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A workflow as the UI saves it (nodes + links) -> the API prompt the UI would queue.

    Widget values are matched to widget inputs in the node's declared input order (what the frontend
    does); an INT with `control_after_generate` carries one extra value. Linked inputs become
    [source node id, output slot]. Muted nodes are left out."""
    links = {link[0]: (link[1], link[2]) for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) == 2:
            continue
        if node["type"] not in object_info:
            raise KeyError(f"node {node['id']}: type {node['type']} is not installed")
        info = object_info[node["type"]]
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info.get("input_order") or {k: list(v) for k, v in info["input"].items() if k != "hidden"}
        values = node.get("widgets_values") or []
        inputs = {}
        if isinstance(values, dict):
            inputs.update({k: v for k, v in values.items() if k in spec})
        else:
            i = 0
            for name in order.get("required", []) + order.get("optional", []):
                kind, opts = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
                if isinstance(kind, list) or kind in WIDGET_TYPES:
                    if i < len(values):
                        inputs[name] = values[i]
                    i += 1
                    if kind == "INT" and opts.get("control_after_generate"):
                        i += 1
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                src, slot = links[inp["link"]]
                inputs[inp["name"]] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
