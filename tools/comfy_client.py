"""A small client for a running ComfyUI: its HTTP API (`/object_info`, `POST /prompt`, `/history`,
`/interrupt`) and websocket, and the UI-workflow -> API-prompt conversion the frontend does when it
queues. Used by `tools/run_workflow.py` and by the tests. Standard library only, except the
websocket (websocket-client), which `run` uses when it is installed and polls `/history` without."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class Node:
    """A node of a `Graph`: `node.out(slot)` is the link to one of its outputs; `node.set(name=value)` changes
    inputs. A Node given as an input value links its output 0."""

    def __init__(self, graph, node_id: str, class_type: str, inputs: dict):
        self.graph, self.id, self.class_type, self.inputs = graph, node_id, class_type, {}
        self.set(**inputs)

    def out(self, slot: int = 0) -> list:
        return [self.id, slot]

    def set(self, **inputs):
        self.inputs.update({k: v.out(0) if isinstance(v, Node) else v for k, v in inputs.items()})
        return self

    def unset(self, *names):
        for name in names:
            self.inputs.pop(name, None)
        return self

    def __str__(self):
        return self.id


class Graph:
    """An API prompt built with handles, as ComfyUI's own execution tests build theirs (`GraphBuilder`):
    `g.node("KSampler", model=loader.out(0), ...)` returns a Node; `g.prompt()` is what POST /prompt takes.
    Ids are numbered in the order nodes are added."""

    def __init__(self):
        self.nodes: dict[str, Node] = {}
        self._added = 0

    def node(self, class_type: str, **inputs) -> Node:
        self._added += 1
        node = Node(self, str(self._added), class_type, inputs)
        self.nodes[node.id] = node
        return node

    def remove(self, *nodes: Node):
        for node in nodes:
            del self.nodes[node.id]

    def prompt(self) -> dict:
        return {nid: {"class_type": n.class_type, "inputs": dict(n.inputs)} for nid, n in self.nodes.items()}


def as_prompt(prompt) -> dict:
    return prompt.prompt() if isinstance(prompt, Graph) else prompt


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    outputs: dict = field(default_factory=dict)
    error: dict | None = None
    progress: list = field(default_factory=list)  # (node, value, max) in arrival order
    previews: int = 0  # binary preview frames received
    messages: list = field(default_factory=list)

    def text(self, node) -> str:
        """The text a node (a `Node` or its id) showed, e.g. Preview Any's."""
        return "".join(self.outputs[str(node)]["text"])

    def cached(self) -> set[str]:
        """The ids of the nodes ComfyUI took from its cache instead of running them."""
        return {n for m in self.messages if m["type"] == "execution_cached" for n in m["data"].get("nodes", [])}

    def ran(self) -> set[str]:
        """The ids of the nodes that ran."""
        return {m["data"]["node"] for m in self.messages if m["type"] == "executing" and m["data"].get("node")}


class ValidationError(Exception):
    def __init__(self, body):
        super().__init__(json.dumps(body, indent=1))
        self.body = body


class ComfyClient:
    """Talks to the ComfyUI at `url` (e.g. http://127.0.0.1:8188)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

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
        """POST /prompt (a prompt dict or a `Graph`); returns the prompt id or raises ValidationError with ComfyUI's
        answer."""
        body = self.post("/prompt", {"prompt": as_prompt(prompt), "client_id": client_id or uuid.uuid4().hex})
        if "prompt_id" not in body:
            raise ValidationError(body)
        # ComfyUI runs the outputs that validate and drops the others (their errors in node_errors): `run` raises
        # once the queued part has ended, so no test reads a run with an output left out as whole.
        self.dropped = body if body.get("node_errors") else None
        return body["prompt_id"]

    def run(self, prompt, timeout=120, on_message=None) -> RunResult:
        """Queue `prompt` and follow it on the websocket until it ends; read its outputs from /history.
        Without websocket-client, poll /history instead (no progress messages then)."""
        try:
            import websocket  # websocket-client, as in ComfyUI's tests/execution
        except ImportError:
            if on_message is not None:
                raise
            return self.run_polling(prompt, timeout)

        client_id = uuid.uuid4().hex
        ws = websocket.WebSocket()
        ws_url = "ws" + self.url[len("http"):] + f"/ws?clientId={client_id}"
        ws.connect(ws_url, timeout=timeout)
        try:
            prompt_id = self.queue(prompt, client_id)
            result = RunResult(prompt_id, "success")
            deadline = time.time() + timeout
            while True:
                if time.time() > deadline:
                    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
                raw = ws.recv()
                if not isinstance(raw, str):
                    result.previews += 1  # a binary preview frame
                    continue
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
        if getattr(self, "dropped", None):
            raise ValidationError(self.dropped)
        return result

    def run_polling(self, prompt, timeout=120) -> RunResult:
        prompt_id = self.queue(prompt)
        history = self.history(prompt_id, timeout)
        if not history:
            raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")
        result = RunResult(prompt_id, "success", outputs=history.get("outputs", {}))
        for kind, data in history.get("status", {}).get("messages", []):
            if kind in ("execution_error", "execution_interrupted"):
                result.status, result.error = ("error" if kind == "execution_error" else "interrupted"), data
        if getattr(self, "dropped", None):
            raise ValidationError(self.dropped)
        return result

    def view(self, filename, subfolder="", kind="output") -> bytes:
        """The bytes of a file a node wrote (an image's entry in its outputs)."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=60) as r:
            return r.read()

    def history(self, prompt_id, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                return h[prompt_id]
            time.sleep(0.1)
        return {}



WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def widget_default(spec):
    """The value a node's widget starts at, from its /object_info entry: its "default", else a choice's first
    option (a V1 list of choices, or a V3 COMBO's "options", ComfyUI 0.33); None for a socket."""
    opts = spec[1] if len(spec) > 1 else {}
    choices = spec[0] if isinstance(spec[0], list) else opts.get("options") if spec[0] == "COMBO" else None
    return opts.get("default", choices[0] if choices else None)


def widget_values(object_info: dict, class_type: str, **given) -> dict:
    """A node's required widgets at their defaults (an API prompt holds every required input), `given` on top."""
    required = object_info[class_type]["input"].get("required", {})
    return {**{name: widget_default(spec) for name, spec in required.items()}, **given}


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


def api_to_ui(prompt, object_info: dict, positions: dict | None = None, titles: dict | None = None) -> dict:
    """An API prompt (or a `Graph`) -> a workflow as the UI saves it, the inverse of `ui_to_api`: widget values in
    the node's declared input order (an INT with `control_after_generate` carries "fixed" after it), linked inputs
    as links. `positions`: {node id: [x, y]} (else a grid); `titles`: {node id: title}."""
    prompt = as_prompt(prompt)
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                links.append([len(links) + 1, int(value[0]), value[1], int(nid), None, None, name])
                out_links.setdefault((str(value[0]), value[1]), []).append(len(links))
    for order, (nid, node) in enumerate(prompt.items()):
        info = object_info[node["class_type"]]
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        names = info.get("input_order") or {k: list(v) for k, v in info["input"].items() if k != "hidden"}
        widgets, inputs = [], []
        for name in names.get("required", []) + names.get("optional", []):
            kind, opts = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
            value = node["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append(opts.get("default") if linked or value is None else value)
                if kind == "INT" and opts.get("control_after_generate"):
                    widgets.append("fixed")
            if linked:
                link = next(l for l in links if l[3] == int(nid) and l[6] == name)
                link[4] = len(inputs)
                link[5] = object_info[prompt[str(link[1])]["class_type"]]["output"][link[2]]
                inputs.append({"name": name, "type": "*" if kind == "*" else kind if isinstance(kind, str) else "COMBO",
                               "link": link[0],
                               # a widget fed by a link: the frontend saves it as an input that names its widget
                               **({"widget": {"name": name}} if isinstance(kind, list) or kind in WIDGET_TYPES else {})})
        outputs = [{"name": (info.get("output_name") or info["output"])[k], "type": t, "slot_index": k,
                    "links": out_links.get((nid, k), [])} for k, t in enumerate(info["output"])]
        x, y = (positions or {}).get(nid, (40 + 340 * (order % 5), 80 + 360 * (order // 5)))
        ui = {"id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [300, 120], "flags": {}, "order": order,
              "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]},
              "widgets_values": widgets}
        if titles and nid in titles:
            ui["title"] = titles[nid]
        nodes.append(ui)
    return {"last_node_id": max((n["id"] for n in nodes), default=0), "last_link_id": len(links), "nodes": nodes,
            "links": [l[:6] for l in links], "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [0, 0]}},
            "version": 0.4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyProcess(ComfyClient):
    """A ComfyUI started here: `python main.py --listen 127.0.0.1 --port <free> <args>` in `comfy`,
    its output appended to `log_path`."""

    def __init__(self, comfy, python: str, args=(), log_path=None):
        self.comfy, self.python, self.args = Path(comfy), python, list(args)
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.log_path = Path(log_path) if log_path else None
        self.proc = None

    def start(self, timeout=180):
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL
        if self.log_path:
            log.write(f"\n===== start {time.strftime('%X')} =====\n")
            log.flush()
        cmd = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch", *self.args]
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
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def last_log(self) -> str:
        """The log since the latest start."""
        return self.log().rsplit("===== start", 1)[-1]
