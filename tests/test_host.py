"""Host tier: the pack inside a real ComfyUI (`main.py --cpu`), driven through POST /prompt and the
websocket as a user's browser drives it. Skipped, loudly, when no ComfyUI is found."""

import json
import re
import subprocess
import sys
import time

import pytest

from comfy_host import ValidationError, require_host, ui_to_api
from conftest import REPORT, ROOT

COMFY = require_host()

LOOP, BLOCK = "ModularLoop_LoopWrapper", "ModularBlock_LoopBlock"


@pytest.fixture(scope="module")
def server(comfy_server):
    return comfy_server


def guide_prompt(num_steps=3, n_blocks=2, x="0"):
    """The guide's loop as an API prompt: blocks 1.. n, loop 100, get-value 101, preview 102."""
    prompt = {}
    for k in range(1, n_blocks + 1):
        prompt[str(k)] = {"class_type": BLOCK, "inputs": {"x": x if k == 1 else ""}}
    prompt["100"] = {"class_type": LOOP, "inputs": {"num_steps": str(num_steps),
                                                     **{f"block_{k}": [str(k), 0] for k in range(1, n_blocks + 1)}}}
    prompt["101"] = {"class_type": "ModularStateGet", "inputs": {"state": ["100", 0], "key": "x"}}
    prompt["102"] = {"class_type": "PreviewAny", "inputs": {"source": ["101", 0]}}
    return prompt


def loop_prompt(loop, loop_inputs, blocks, x="0"):
    """`blocks`: [(class_type, inputs)] attached in order to `loop`; x read out into node 102."""
    prompt = {str(k): {"class_type": cls, "inputs": inputs} for k, (cls, inputs) in enumerate(blocks, start=1)}
    prompt["100"] = {"class_type": loop, "inputs": {**loop_inputs, **{f"block_{k}": [str(k), 0] for k in prompt}}}
    prompt["101"] = {"class_type": "ModularStateGet", "inputs": {"state": ["100", 0], "key": "x"}}
    prompt["102"] = {"class_type": "PreviewAny", "inputs": {"source": ["101", 0]}}
    return prompt


def assert_still_serving(server):
    result = server.run(guide_prompt())
    assert result.status == "success" and result.text(102) == "6"


# --- loading ----------------------------------------------------------------------------------


def test_pack_loads_with_no_error_or_warning_of_its_own(server):
    log = server.last_log().split("Starting server")[0]  # start-up only; later prompts log their own errors
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # ComfyUI >= 0.33 colours its log levels: "[INFO]    0.9 seconds: ..."
    m = re.search(r"^(?:\[\w+\])?\s*([\d.]+) seconds(?: \(IMPORT FAILED\))?: .*custom_nodes/modular_loops$", log, re.M)
    assert m, log[-3000:]
    assert "IMPORT FAILED" not in m.group(0)
    REPORT.append(f"pack import time as ComfyUI printed it: {m.group(1)} s")
    ours = [line for line in log.splitlines() if "Modular Loops" in line or "modular_loops" in line]
    allowed = ("Import times", "seconds: ", "could not load blocks from")
    unexpected = [line for line in ours if not any(a in line for a in allowed)]
    assert not unexpected, unexpected
    # the only error is the deliberately broken user file, named with its path
    broken = [line for line in ours if "could not load blocks from" in line]
    assert len(broken) == 1 and str(server.blocks_dir / "broken_blocks.py") in broken[0] and "SyntaxError" in broken[0]


def test_nodes_in_object_info(server):
    info = server.object_info()
    ours = {k: v for k, v in info.items() if v["category"].startswith("Modular Loops")}
    for nid in (LOOP, BLOCK, "ModularStateGet", "ModularStateInspect", "ModularBlock_MultiplyBlock",
                "ModularLoop_RangeLoop", "ModularBlock_ScaleBlock"):
        assert nid in ours, nid
    assert {v["category"] for v in ours.values()} == {"Modular Loops/loops", "Modular Loops/blocks", "Modular Loops/state",
                                                      "Modular Loops/sampling"}

    loop = ours[LOOP]
    assert loop["display_name"] == "LoopWrapper" and "I'm a loop!!" in loop["description"]
    assert loop["input"]["required"]["num_steps"][0] == "STRING"
    opt = loop["input"]["optional"]
    assert [k for k in opt if k.startswith("block_")] == [f"block_{i}" for i in range(1, 17)]
    assert all(opt[f"block_{i}"][0] == "LOOP_BLOCK" for i in range(1, 17))
    assert opt["state"][0] == "PIPELINE_STATE" and opt["num_steps_link"][0] == "*"
    assert loop["output"] == ["PIPELINE_STATE"] and loop["output_name"] == ["state"]

    block = ours[BLOCK]
    assert block["input"]["required"]["x"][0] == "STRING" and block["input"]["optional"]["x_link"][0] == "*"
    assert block["output"] == ["LOOP_BLOCK"]
    assert "inside the `LoopWrapper`" in block["description"]

    assert ours["ModularStateGet"]["output"] == ["*"]
    assert ours["ModularStateInspect"]["output_node"] is True


def test_user_block_widgets_come_from_declarations(server):
    mul = server.object_info("ModularBlock_MultiplyBlock")
    kind, opts = mul["input"]["required"]["factor"]
    assert kind == "INT" and opts["default"] == 2 and opts["min"] == 0 and opts["max"] == 100
    assert "What x is multiplied by." in opts["tooltip"]
    assert "Multiplies x by factor." in mul["description"] and "user blocks folder" in mul["description"]
    rng = server.object_info("ModularLoop_RangeLoop")["input"]["required"]
    assert rng["start"][0] == "INT" and rng["start"][1]["default"] == 0 and rng["stop"][1]["default"] == 4
    assert "One past the last i." in rng["stop"][1]["tooltip"]
    scale = server.object_info("ModularBlock_ScaleBlock")
    assert scale["input"]["required"]["offset"][0] == "FLOAT" and scale["input"]["required"]["offset"][1]["default"] == 0.5
    assert "custom-block folder" in scale["description"]


# --- running ----------------------------------------------------------------------------------


def test_number_widgets_without_default_start_inside_their_limits(server):
    # A node must validate as it is added: an int with min 1 and no default starts at 1, not 0.
    required = server.object_info("ModularBlock_BoundedBlock")["input"]["required"]
    assert required["k"][1]["default"] == 1 and required["scale"][1]["default"] == 0.5
    defaults = {name: spec[1]["default"] for name, spec in required.items()}
    prompt = loop_prompt(LOOP, {"num_steps": "2"}, [("ModularBlock_BoundedBlock", {**defaults, "x": "0"})])
    assert float(server.run(prompt).text(102)) == 1.0  # two steps of + 1 * 0.5


@pytest.mark.parametrize("num_steps, n_blocks, expected", [(3, 2, "6"), (3, 1, "3"), (0, 2, "0")])
def test_guide_loop(server, num_steps, n_blocks, expected):
    result = server.run(guide_prompt(num_steps, n_blocks))
    assert result.status == "success", result.error
    assert result.text(102) == expected


def test_progress_once_per_iteration(server):
    # ComfyUI >= 0.33 sends a progress update at most every 0.1 s (first and last always): steps of 0.15 s.
    prompt = loop_prompt(LOOP, {"num_steps": "5"}, [(BLOCK, {"x": "0"}), ("ModularBlock_SleepBlock", {"seconds": 0.15})])
    result = server.run(prompt)
    loop_progress = [(v, m) for node, v, m in result.progress if node == "100"]
    assert loop_progress == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_blocks_run_in_socket_order_and_sixteen_fit(server):
    add, mul = (BLOCK, {"x": ""}), ("ModularBlock_MultiplyBlock", {"x": "", "factor": 3})

    def run(blocks):
        prompt = loop_prompt(LOOP, {"num_steps": "2"}, blocks)
        prompt["1"]["inputs"]["x"] = "1"
        return server.run(prompt).text(102)

    assert run([add, mul]) == "21"  # (x + 1) * 3, twice, from 1
    assert run([mul, add]) == "13"  # x * 3 + 1, twice, from 1
    prompt = loop_prompt(LOOP, {"num_steps": "3"}, [(BLOCK, {"x": ""})] * 16)
    prompt["1"]["inputs"]["x"] = "0"
    assert server.run(prompt).text(102) == "48"


def test_state_out_get_inspect_and_chain_into_second_loop(server):
    prompt = guide_prompt()
    prompt["200"] = {"class_type": BLOCK, "inputs": {"x": ""}}
    prompt["201"] = {"class_type": BLOCK, "inputs": {"x": ""}}
    prompt["202"] = {"class_type": LOOP, "inputs": {"num_steps": "3", "block_1": ["200", 0], "block_2": ["201", 0],
                                                    "state": ["100", 0]}}
    prompt["203"] = {"class_type": "ModularStateGet", "inputs": {"state": ["202", 0], "key": "x"}}
    prompt["204"] = {"class_type": "PreviewAny", "inputs": {"source": ["203", 0]}}
    prompt["205"] = {"class_type": "ModularStateInspect", "inputs": {"state": ["202", 0]}}
    result = server.run(prompt)
    assert result.status == "success", result.error
    assert result.text(102) == "6" and result.text(204) == "12"
    assert result.text(205) == "num_steps: int 3\nx: int 12"


def test_user_blocks_run(server):
    prompt = loop_prompt("ModularLoop_RangeLoop", {"start": 2, "stop": 7}, [(BLOCK, {"x": "0"})])
    assert server.run(prompt).text(102) == "5"
    prompt = loop_prompt(LOOP, {"num_steps": "2"}, [("ModularBlock_ScaleBlock", {"x": "1.0", "offset": 0.25})])
    assert server.run(prompt).text(102) == "1.5"
    prompt = loop_prompt(LOOP, {"num_steps": "3"}, [("ModularBlock_AddBlock", {"x": "1", "amount": "[10]"})])
    prompt["1"]["inputs"]["x"] = "[0]"
    assert json.loads(server.run(prompt).text(102)) == [0, 10, 10, 10]  # JSON widgets carry lists too


def test_example_workflows_are_templates_and_run(server):
    examples = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    assert "guide_loop" in examples
    assert sorted(server.get("/api/workflow_templates")["modular_loops"]) == examples
    info = server.object_info()
    for name in examples:
        workflow = server.get(f"/api/workflow_templates/modular_loops/{name}.json")
        prompt = ui_to_api(workflow, info)
        if any(n["class_type"] == "CheckpointLoaderSimple" for n in prompt.values()):
            # Written for an SD1.5 checkpoint, which tests do not have: everything else must validate ...
            with pytest.raises(ValidationError) as err:
                server.queue(prompt)
            problems = [e for n in err.value.body["node_errors"].values() for e in n["errors"]]
            assert problems and all(e["extra_info"]["input_name"] == "ckpt_name" for e in problems), (name, problems)
            # ... and it runs with the checkpoint, the prompts and the VAE swapped for tiny test stand-ins.
            prompt = with_test_models(prompt)
        result = server.run(prompt, timeout=300)
        assert result.status == "success", (name, result.error)
        if name == "guide_loop":
            preview = next(n["id"] for n in workflow["nodes"] if n["type"] == "PreviewAny")
            assert result.text(preview) == "6"
        else:
            checks = [json.loads(result.text(k)) for k, n in prompt.items() if n["class_type"] == "PreviewAny"]
            assert checks and all(c["finite"] and c["shape"][1] == 4 for c in checks), (name, checks)


def with_test_models(prompt):
    """The SD1.5 example with a tiny in-process SD1.5 model, random conditioning, no VAE, 64 x 64 and 4
    steps: the latent that went to VAE Decode is checked (finite, SD1.5's 4 channels) instead."""
    out = {}
    for nid, node in prompt.items():
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "CheckpointLoaderSimple":
            out[nid] = {"class_type": "MLTest_TinySD15", "inputs": {"seed": 0}}
        elif cls == "CLIPTextEncode":
            out[nid] = {"class_type": "MLTest_Conditioning", "inputs": {"seed": int(nid), "tokens": 8, "width": 32, "pooled": 0}}
        elif cls == "VAEEncode":
            out[nid] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        elif cls == "VAEDecode":
            out[nid] = {"class_type": "MLTest_MaxAbsDiff", "inputs": {"a": inputs["samples"], "b": inputs["samples"]}}
        elif cls == "SaveImage":
            out[nid] = {"class_type": "PreviewAny", "inputs": {"source": inputs["images"]}}
        elif cls != "LoadImage":
            out[nid] = node = {"class_type": cls, "inputs": dict(inputs)}
            if cls == "EmptyLatentImage":
                node["inputs"].update(width=64, height=64)
            if "steps" in inputs:
                node["inputs"]["steps"] = 4
    return out


def test_workflows_saved_by_earlier_versions_still_run(server):
    info = server.object_info()
    saved = sorted((ROOT / "tests" / "fixtures" / "workflows").glob("*.json"))
    assert saved
    for path in saved:
        workflow = json.loads(path.read_text())
        result = server.run(ui_to_api(workflow, info))
        assert result.status == "success", (path.name, result.error)
        preview = next(n["id"] for n in workflow["nodes"] if n["type"] == "PreviewAny")
        assert result.text(preview) == "6", path.name


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "run_workflow.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_headless_runner_ui_and_api_formats(server, tmp_path):
    ui = ROOT / "example_workflows" / "guide_loop.json"
    preview = next(n["id"] for n in json.loads(ui.read_text())["nodes"] if n["type"] == "PreviewAny")
    r = run_tool(ui, "--url", server.url, "--out", tmp_path / "ui")
    assert r.returncode == 0, r.stderr
    assert f"node {preview} (PreviewAny): 6" in r.stdout
    assert json.loads((tmp_path / "ui" / "outputs.json").read_text())[str(preview)]["text"] == ["6"]
    api = tmp_path / "guide_api.json"
    api.write_text(json.dumps(guide_prompt(num_steps=4)))
    r = run_tool(api, "--url", server.url)
    assert r.returncode == 0 and "node 102 (PreviewAny): 8" in r.stdout, r.stderr


def test_headless_runner_reports_invalid_and_failing_workflows(server, tmp_path):
    bad = guide_prompt()
    del bad["100"]["inputs"]["block_1"], bad["100"]["inputs"]["block_2"]
    (tmp_path / "invalid.json").write_text(json.dumps(bad))
    r = run_tool(tmp_path / "invalid.json", "--url", server.url)
    assert r.returncode == 2 and "no loop blocks attached" in r.stderr
    failing = loop_prompt(LOOP, {"num_steps": "3"}, [(BLOCK, {"x": "0"}), ("ModularBlock_FailAtStepBlock", {"fail_at": 1})])
    (tmp_path / "failing.json").write_text(json.dumps(failing))
    r = run_tool(tmp_path / "failing.json", "--url", server.url)
    assert r.returncode == 1 and "FailAtStepBlock, node 2) failed at step 1" in r.stderr
    (tmp_path / "missing.json").write_text(json.dumps({"1": {"class_type": "ModularBlock_NotInstalled", "inputs": {}}}))
    assert run_tool(tmp_path / "missing.json", "--url", server.url).returncode == 2
    assert run_tool(tmp_path / "invalid.json", "--url", "http://127.0.0.1:9").returncode == 3


# --- bad input --------------------------------------------------------------------------------


def validation_errors(server, prompt):
    with pytest.raises(ValidationError) as info:
        server.queue(prompt)
    return info.value.body


def test_no_block_attached_is_a_validation_error(server):
    prompt = guide_prompt()
    del prompt["100"]["inputs"]["block_1"], prompt["100"]["inputs"]["block_2"]
    body = validation_errors(server, prompt)
    errors = body["node_errors"]["100"]["errors"]
    assert any("no loop blocks attached" in e["details"] for e in errors), errors
    assert_still_serving(server)


def test_invalid_json_and_out_of_range_are_validation_errors(server):
    prompt = guide_prompt(x="[1, 2")
    body = validation_errors(server, prompt)
    assert any("x: not valid JSON" in e["details"] for e in body["node_errors"]["1"]["errors"])
    prompt = loop_prompt(LOOP, {"num_steps": "1"}, [("ModularBlock_MultiplyBlock", {"x": "1", "factor": 101})])
    body = validation_errors(server, prompt)
    assert any(e["details"] == "factor" and "max of 100" in e["message"] for e in body["node_errors"]["1"]["errors"])
    assert_still_serving(server)


def test_required_input_missing_is_an_execution_error(server):
    prompt = loop_prompt(LOOP, {"num_steps": "2"}, [("ModularBlock_AddBlock", {"x": "0", "amount": ""})])
    result = server.run(prompt)
    assert result.status == "error"
    assert result.error["node_id"] == "100"
    msg = result.error["exception_message"]
    assert "LoopWrapper (node 100)" in msg and "required input 'amount' is missing" in msg and "AddBlock, node 1" in msg
    assert "102" not in result.outputs  # nothing half-written
    assert_still_serving(server)


def test_value_of_wrong_type_is_an_execution_error(server):
    # A string reaches MultiplyBlock's INT input `factor` through an any-typed link.
    prompt = loop_prompt(LOOP, {"num_steps": "0"}, [(BLOCK, {"x": '"abc"'})])
    prompt["300"] = {"class_type": "ModularBlock_MultiplyBlock", "inputs": {"x": "1", "factor": ["101", 0]}}
    prompt["301"] = {"class_type": LOOP, "inputs": {"num_steps": "1", "block_1": ["300", 0]}}
    prompt["302"] = {"class_type": "ModularStateInspect", "inputs": {"state": ["301", 0]}}
    result = server.run(prompt)
    assert result.status == "error" and result.error["node_id"] == "301"
    msg = result.error["exception_message"]
    assert "input 'factor'" in msg and "MultiplyBlock, node 300" in msg and "expected int, got str 'abc'" in msg
    assert_still_serving(server)


def test_block_raising_at_step_1(server):
    prompt = loop_prompt(LOOP, {"num_steps": "3"}, [(BLOCK, {"x": "0"}), ("ModularBlock_FailAtStepBlock", {"fail_at": 1})])
    result = server.run(prompt)
    assert result.status == "error" and result.error["node_id"] == "100"
    msg = result.error["exception_message"]
    for part in ("LoopWrapper (node 100)", "'block_2'", "FailAtStepBlock", "node 2", "step 1", "RuntimeError",
                 "deliberate failure at i=1"):
        assert part in msg, (part, msg)
    assert_still_serving(server)


def test_interrupt_stops_within_one_iteration(server):
    seconds = 0.3
    prompt = loop_prompt(LOOP, {"num_steps": "200"}, [(BLOCK, {"x": "0"}), ("ModularBlock_SleepBlock", {"seconds": seconds})])
    sent = {}

    def on_message(msg, srv):
        if msg["type"] == "progress" and msg["data"]["node"] == "100" and "at" not in sent:
            sent["at"], sent["step"] = time.monotonic(), msg["data"]["value"]
            srv.post("/interrupt")

    result = server.run(prompt, on_message=on_message)
    stopped = time.monotonic() - sent["at"]
    assert result.status == "interrupted"
    steps_after = [v for node, v, _ in result.progress if node == "100" and v > sent["step"]]
    assert len(steps_after) <= 1, steps_after
    assert stopped < 2 * seconds + 1.0
    REPORT.append(f"interrupt: stopped {stopped:.2f} s after POST /interrupt (one step = {seconds} s)")
    assert_still_serving(server)


# --- discovery at start-up (restarts the server: keep last) -------------------------------------


def test_block_file_dropped_in_shows_up_after_restart(server):
    (server.blocks_dir / "late_blocks.py").write_text(
        "from diffusers.modular_pipelines import InputParam, ModularPipelineBlocks, OutputParam\n\n\n"
        "class SquareBlock(ModularPipelineBlocks):\n"
        "    @property\n"
        "    def description(self):\n"
        "        return 'Squares x.'\n\n"
        "    @property\n"
        "    def inputs(self):\n"
        "        return [InputParam(name='x')]\n\n"
        "    @property\n"
        "    def intermediate_outputs(self):\n"
        "        return [OutputParam(name='x')]\n\n"
        "    def __call__(self, components, block_state, **loop_vars):\n"
        "        block_state.x = block_state.x ** 2\n"
        "        return components, block_state\n"
    )
    assert "ModularBlock_SquareBlock" not in server.object_info()
    server.restart()
    assert "Squares x." in server.object_info("ModularBlock_SquareBlock")["description"]
    prompt = loop_prompt(LOOP, {"num_steps": "2"}, [("ModularBlock_SquareBlock", {"x": "3"})])
    assert server.run(prompt).text(102) == "81"
    assert_still_serving(server)
