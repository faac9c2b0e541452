"""Host tier: the pack inside a real ComfyUI (`main.py --cpu`), driven through POST /prompt and the
websocket as a user's browser drives it. Skipped, loudly, when no ComfyUI is found."""

import json
import re
import subprocess
import sys

import pytest

from comfy_host import (TINY_FLUX, TINY_FLUX_COMFY_FILE, TINY_SD3_COMFY_FILE, TINY_SD3_PIPELINE, TINY_SDXL,
                        TINY_SDXL_COMFY, TINY_SDXL_LORA, TINY_WAN, Graph, ValidationError, interrupt_at_first_step,
                        require_host, ui_to_api)
from conftest import REPORT, ROOT

COMFY = require_host()

LOOP, BLOCK = "ModularLoop_LoopWrapper", "ModularBlock_LoopBlock"


class LoopGraph:
    """A loop with blocks attached in order and `x` read out of its state into a Preview Any node:
    `g.graph` is the prompt; `g.blocks`, `g.loop`, `g.preview` the handles."""

    def __init__(self, loop, loop_inputs, blocks, read="x"):
        self.graph = Graph()
        self.blocks = [self.graph.node(cls, **inputs) for cls, inputs in blocks]
        self.loop = self.graph.node(loop, **loop_inputs, **{f"block_{k}": b for k, b in enumerate(self.blocks, start=1)})
        self.get = self.graph.node("ModularStateGet", state=self.loop, key=read)
        self.preview = self.graph.node("PreviewAny", source=self.get)


def guide_graph(num_steps=3, n_blocks=2, x="0"):
    """The guide's loop: n LoopBlock nodes (the first gives x) on a LoopWrapper."""
    return LoopGraph(LOOP, {"num_steps": str(num_steps)}, [(BLOCK, {"x": x if k == 0 else ""}) for k in range(n_blocks)])


def assert_still_serving(server):
    g = guide_graph()
    result = server.run(g.graph)
    assert result.status == "success" and result.text(g.preview) == "6"


# --- loading ----------------------------------------------------------------------------------


def test_pack_loads_with_no_error_or_warning_of_its_own(server):
    log = server.last_log().split("Starting server")[0]  # start-up only; later prompts log their own errors
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # ComfyUI >= 0.33 colours its log levels: "[INFO]    0.9 seconds: ..."
    m = re.search(r"^(?:\[\w+\])?\s*([\d.]+) seconds(?: \(IMPORT FAILED\))?: .*custom_nodes/modular_loops$", log, re.M)
    assert m, log[-3000:]
    assert "IMPORT FAILED" not in m.group(0)
    first = "read the declarations of" in log  # this server's user folder is new: diffusers' declarations are read
    REPORT.append(f"pack import time as ComfyUI printed it: {m.group(1)} s"
                  + (" (a first start: diffusers' declarations read and kept; bench/startup.py measures the next ones)"
                     if first else ""))
    ours = [line for line in log.splitlines() if "Modular Loops" in line or "modular_loops" in line]
    # (and, at a first start with this diffusers, the note that its declarations were read and kept)
    allowed = ("Import times", "seconds: ", "could not load blocks from", "[Modular Loops] read the declarations of")
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
    own = {v["category"] for v in ours.values() if not v["category"].startswith("Modular Loops/diffusers")}
    assert own == {"Modular Loops/loops", "Modular Loops/blocks", "Modular Loops/state", "Modular Loops/sampling"}

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
    g = LoopGraph(LOOP, {"num_steps": "2"}, [("ModularBlock_BoundedBlock", {**defaults, "x": "0"})])
    assert float(server.run(g.graph).text(g.preview)) == 1.0  # two steps of + 1 * 0.5


def test_a_block_in_a_plain_loop_is_given_latents(server):
    # A user's block reading `latents` (as diffusers' SDXL LoopBeforeDenoiser does) shows it and runs with a LATENT.
    assert server.object_info("ModularBlock_LatentsBlock")["input"]["optional"]["latents"][0] == "*"
    g = LoopGraph(LOOP, {"num_steps": "3"}, [("ModularBlock_LatentsBlock", {})])
    empty = g.graph.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    g.blocks[0].set(latents=empty)
    result = server.run(g.graph)
    assert result.status == "success", result.error
    assert float(result.text(g.preview)) == 3.0  # zeros + 1, three times


@pytest.mark.parametrize("num_steps, n_blocks, expected", [(3, 2, "6"), (3, 1, "3"), (0, 2, "0")])
def test_guide_loop(server, num_steps, n_blocks, expected):
    g = guide_graph(num_steps, n_blocks)
    result = server.run(g.graph)
    assert result.status == "success", result.error
    assert result.text(g.preview) == expected


def test_progress_once_per_iteration(server):
    # ComfyUI >= 0.33 sends a progress update at most every 0.1 s (first and last always): steps of 0.15 s.
    g = LoopGraph(LOOP, {"num_steps": "5"}, [(BLOCK, {"x": "0"}), ("ModularBlock_SleepBlock", {"seconds": 0.15})])
    result = server.run(g.graph)
    loop_progress = [(v, m) for node, v, m in result.progress if node == g.loop.id]
    assert loop_progress == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_blocks_run_in_socket_order_and_sixteen_fit(server):
    add, mul = (BLOCK, {"x": ""}), ("ModularBlock_MultiplyBlock", {"x": "", "factor": 3})

    def run(blocks, num_steps=2, start="1"):
        g = LoopGraph(LOOP, {"num_steps": str(num_steps)}, blocks)
        g.blocks[0].set(x=start)
        return int(server.run(g.graph).text(g.preview))

    assert run([add, mul]) == 21  # (x + 1) * 3, twice, from 1
    assert run([mul, add]) == 13  # x * 3 + 1, twice, from 1
    # Past 9 sockets, by number: block_2 runs before block_10. Add and double do not commute, so any other
    # order (a name sort: 1, 10, 11, 12, 2, ...) gives another x.
    double = ("ModularBlock_MultiplyBlock", {"x": "", "factor": 2})
    blocks = [double if k % 3 == 0 else add for k in range(1, 13)]

    def by_hand(order):
        x = 1
        for k in order:
            x = x * 2 if blocks[k - 1] is double else x + 1
        return x

    assert by_hand(range(1, 13)) != by_hand(sorted(range(1, 13), key=str))
    assert run(blocks, num_steps=1) == by_hand(range(1, 13))
    assert run([add] * 16, num_steps=3, start="0") == 48


def test_state_out_get_inspect_and_chain_into_second_loop(server):
    g = guide_graph()
    second = g.graph.node(LOOP, num_steps="3", block_1=g.graph.node(BLOCK, x=""), block_2=g.graph.node(BLOCK, x=""),
                          state=g.loop)
    preview = g.graph.node("PreviewAny", source=g.graph.node("ModularStateGet", state=second, key="x"))
    inspect = g.graph.node("ModularStateInspect", state=second)
    result = server.run(g.graph)
    assert result.status == "success", result.error
    assert result.text(g.preview) == "6" and result.text(preview) == "12"
    assert result.text(inspect) == "num_steps: int 3\nx: int 12"


def test_an_unchanged_loop_is_cached_and_a_changed_block_widget_runs_it_again(server):
    # Block nodes are configuration: ComfyUI's cache keys the loop on their widgets (docs/design.md).
    g = LoopGraph(LOOP, {"num_steps": "2"}, [(BLOCK, {"x": "0"}), ("ModularBlock_MultiplyBlock", {"x": "", "factor": 3})])
    first = server.run(g.graph)
    again = server.run(g.graph)
    assert g.loop.id in again.cached() and g.loop.id not in again.ran()
    assert again.text(g.preview) == first.text(g.preview) == "12"  # ((0 + 1) * 3 + 1) * 3
    g.blocks[1].set(factor=4)
    changed = server.run(g.graph)
    assert g.loop.id in changed.ran() and g.loop.id not in changed.cached()
    assert changed.text(g.preview) == "20"  # ((0 + 1) * 4 + 1) * 4


def test_user_blocks_run(server):
    def x_of(loop, loop_inputs, blocks):
        g = LoopGraph(loop, loop_inputs, blocks)
        return server.run(g.graph).text(g.preview)

    assert x_of("ModularLoop_RangeLoop", {"start": 2, "stop": 7}, [(BLOCK, {"x": "0"})]) == "5"
    assert x_of(LOOP, {"num_steps": "2"}, [("ModularBlock_ScaleBlock", {"x": "1.0", "offset": 0.25})]) == "1.5"
    # JSON widgets carry lists too
    assert json.loads(x_of(LOOP, {"num_steps": "3"}, [("ModularBlock_AddBlock", {"x": "[0]", "amount": "[10]"})])) == [0, 10, 10, 10]


def test_example_workflows_are_templates_and_run(server):
    examples = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    assert "guide_loop" in examples
    assert sorted(server.get("/api/workflow_templates")["modular_loops"]) == examples
    info = server.object_info()
    saved_state, validated_only = None, []
    picture = "mltest_64.png"  # what a Load Image of a template loads on the tiny stand-ins: 64 x 64
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 120, 40)).save(server.base / "input" / picture)
    # The example that resumes from a state file runs after the one that writes it.
    for name in sorted(examples, key=lambda n: n == "denoise_resume_from_file"):
        workflow = server.get(f"/api/workflow_templates/modular_loops/{name}.json")
        prompt = ui_to_api(workflow, info)
        missing = {"CheckpointLoaderSimple": "ckpt_name", "ModularDiffusersLoader": "folder",
                   "ModularStateLoad": "state_file", "LoraLoader": "lora_name", "UNETLoader": "unet_name",
                   "CLIPLoader": "clip_name", "VAELoader": "vae_name"}
        needs = {missing[n["class_type"]] for n in prompt.values() if n["class_type"] in missing}
        if needs:
            # Written for a model the tests do not have (an SD1.5 checkpoint, a diffusers folder): everything
            # else must validate ...
            with pytest.raises(ValidationError) as err:
                server.queue(prompt)
            problems = [e for n in err.value.body["node_errors"].values() for e in n["errors"]]
            assert problems and all(e["extra_info"]["input_name"] in needs for e in problems), (name, problems)
            folders = {n["inputs"]["folder"] for n in prompt.values() if n["class_type"] == "ModularDiffusersLoader"}
            blocks = {n["class_type"] for n in prompt.values() if n["class_type"].startswith("ModularWorkflow_")}
            if folders and not (folders <= set(TINY_FOR) and blocks <= RUN_ON_TINY):
                validated_only.append(name)  # a family the host tier has no tiny folder of (the core tier: all)
                continue
            # ... and it runs with the models swapped for tiny test stand-ins.
            prompt = with_test_models(prompt, saved_state, picture=picture)
        result = server.run(prompt, timeout=300)
        assert result.status == "success", (name, result.error)
        saves = [result.outputs[k]["text"][0] for k, n in prompt.items() if n["class_type"] == "ModularStateSave"]
        saved_state = saves[0] if saves else saved_state
        if name == "denoise_stop_and_save":
            assert saved_state and saved_state.endswith(".safetensors [output]"), result.outputs
        if name == "guide_loop":
            preview = next(n["id"] for n in workflow["nodes"] if n["type"] == "PreviewAny")
            assert result.text(preview) == "6"
        elif any(n["class_type"] == "SaveImage" for n in prompt.values()):  # a workflow node's image, saved
            saved = [img for out in result.outputs.values() for img in out.get("images", [])]
            assert len(saved) == 1 and saved[0]["filename"].endswith(".png"), (name, result.outputs)
        else:
            checks = [json.loads(result.text(k)) for k, n in prompt.items() if n["class_type"] == "PreviewAny"]
            # the latent that went to VAE Decode: SD1.5 / SDXL's 4 channels, SD3's and Flux's 16
            channels = 16 if "sd3" in name or "flux" in name or "wan" in name else 4
            assert checks and all(c["finite"] and c["shape"][1] == channels for c in checks), (name, checks)
    ran = [n for n in examples if n.startswith("diffusers_") and n not in validated_only]
    assert {"diffusers_stable_diffusion_xl_inpainting", "diffusers_flux_image2image"} <= set(ran), ran
    REPORT.append(f"example workflows: {len(examples)} templates validate; {len(examples) - len(validated_only)} "
                  f"ran on tiny stand-ins ({len(validated_only)} of families the host tier has no tiny folder of)")


# The folder a template names (its family's) -> the tiny folder of that family the host tier has.
TINY_FOR = {"stable-diffusion-xl-base-1.0": TINY_SDXL, "stable_diffusion_xl": TINY_SDXL,
            "stable-diffusion-3-medium-diffusers": TINY_SD3_PIPELINE, "stable_diffusion_3": TINY_SD3_PIPELINE,
            "flux": TINY_FLUX}
# The one-node templates run here (their family's tiny folder is the one diffusers' from_pretrained picks them for);
# test_diffusers.py runs every family's workflows with the values their tiny folders need.
RUN_ON_TINY = {"ModularWorkflow_StableDiffusionXLAutoBlocks", "ModularWorkflow_StableDiffusion3AutoBlocks",
               "ModularWorkflow_FluxAutoBlocks"}


def with_test_models(prompt, state_file=None, picture=None):
    """The SD1.5 examples with a tiny in-process SD1.5 model, random conditioning, no VAE, 64 x 64 and 4
    steps (a stop / resume at step 2): the latent that went to VAE Decode is checked (finite, SD1.5's 4 channels)
    instead; Load State loads `state_file`. The diffusers examples with the tiny pipeline of their family, 64 x 64
    and 2 steps."""
    out = {}
    diffusers = any(n["class_type"] == "ModularDiffusersLoader" for n in prompt.values())
    bridge = any(n["class_type"] == "ModularPipelineFromModel" for n in prompt.values())
    sd3 = any("StableDiffusion3" in n["class_type"] for n in prompt.values())
    flux = any(n["class_type"].startswith("ModularLoop_Flux") for n in prompt.values())
    wan = any(n["class_type"].startswith("ModularLoop_Wan") for n in prompt.values())
    workflow_node = any(n["class_type"].startswith("ModularWorkflow_") for n in prompt.values())
    for nid, node in prompt.items():
        cls, inputs = node["class_type"], node["inputs"]
        if bridge and cls == "CheckpointLoaderSimple":  # diffusers' loop on a MODEL: the tiny ComfyUI SDXL / SD3
            out[nid] = ({"class_type": "UNETLoader", "inputs": {"unet_name": TINY_SD3_COMFY_FILE,
                                                                "weight_dtype": "default"}} if sd3 else
                        {"class_type": "MLTest_ComfyFlux", "inputs": {"unet_name": TINY_FLUX_COMFY_FILE}} if flux else
                        {"class_type": "MLTest_ComfySDXL", "inputs": {"folder": TINY_SDXL_COMFY}})
        elif bridge and wan and cls == "UNETLoader":  # the tiny Wan folder's weights in ComfyUI's Wan network
            out[nid] = {"class_type": "MLTest_ComfyWan", "inputs": {"folder": TINY_WAN}}
        elif bridge and cls == "LoraLoader":
            out[nid] = {"class_type": "LoraLoaderModelOnly", "inputs": {
                "model": inputs["model"], "lora_name": TINY_SDXL_LORA, "strength_model": inputs["strength_model"]}}
        elif bridge and cls == "CLIPTextEncode":  # the tiny models' shapes: 64 / 4096 / 32-wide tokens,
            out[nid] = {"class_type": "MLTest_Conditioning", "inputs": {"seed": int(nid), "tokens": 8,  # 32 / 64 pooled
                                                                         "width": 32 if flux or wan else 4096 if sd3 else 64,
                                                                         "pooled": 0 if wan else 64 if sd3 else 32}}
        elif cls == "ModularDiffusersLoader":
            out[nid] = {"class_type": cls, "inputs": {**inputs, "folder": TINY_FOR[inputs["folder"]]}}
        elif cls.startswith(("ModularStep_", "ModularWorkflow_")):
            out[nid] = node = {"class_type": cls, "inputs": dict(inputs)}
            size = {} if cls.startswith("ModularWorkflow_") and "image" in inputs else {"height": 64, "width": 64}
            steps = 4 if "strength" in inputs else 2  # image2image runs strength x steps of them (0.3 x 4: 1)
            node["inputs"].update({k: v for k, v in {**size, "num_inference_steps": steps}.items() if k in inputs})
        elif cls == "LoadImage" and diffusers:
            out[nid] = {"class_type": cls, "inputs": {**inputs, "image": picture}}
        elif cls == "CheckpointLoaderSimple":
            out[nid] = {"class_type": "MLTest_TinySD15", "inputs": {"seed": 0}}
        elif cls == "CLIPTextEncode":
            out[nid] = {"class_type": "MLTest_Conditioning", "inputs": {"seed": int(nid), "tokens": 8, "width": 32, "pooled": 0}}
        elif cls == "VAEEncode":
            out[nid] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        elif cls == "VAEDecode":
            out[nid] = {"class_type": "MLTest_MaxAbsDiff", "inputs": {"a": inputs["samples"], "b": inputs["samples"]}}
        elif cls in ("SaveImage", "SaveAnimatedWEBP") and not (diffusers or workflow_node):  # (a workflow node decodes itself: kept)
            out[nid] = {"class_type": "PreviewAny", "inputs": {"source": inputs["images"]}}
        elif cls != "LoadImage":
            out[nid] = node = {"class_type": cls, "inputs": dict(inputs)}
            if cls in ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo"):
                node["inputs"].update(width=64, height=64, **({"length": 5} if "length" in inputs else {}))
            if "steps" in inputs:
                node["inputs"]["steps"] = 4
            if inputs.get("start_step"):
                node["inputs"]["start_step"] = 2
            if inputs.get("end_step", 10000) < 10000:
                node["inputs"]["end_step"] = 2
            if cls == "ModularStateLoad" and state_file:
                node["inputs"]["state_file"] = state_file
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
    g = guide_graph(num_steps=4)
    api.write_text(json.dumps(g.graph.prompt()))
    r = run_tool(api, "--url", server.url)
    assert r.returncode == 0 and f"node {g.preview} (PreviewAny): 8" in r.stdout, r.stderr


def test_headless_runner_reports_invalid_and_failing_workflows(server, tmp_path):
    bad = guide_graph()
    bad.loop.unset("block_1", "block_2")
    (tmp_path / "invalid.json").write_text(json.dumps(bad.graph.prompt()))
    r = run_tool(tmp_path / "invalid.json", "--url", server.url)
    assert r.returncode == 2 and "no loop blocks attached" in r.stderr
    failing = LoopGraph(LOOP, {"num_steps": "3"}, [(BLOCK, {"x": "0"}), ("ModularBlock_FailAtStepBlock", {"fail_at": 1})])
    (tmp_path / "failing.json").write_text(json.dumps(failing.graph.prompt()))
    r = run_tool(tmp_path / "failing.json", "--url", server.url)
    assert r.returncode == 1 and f"FailAtStepBlock, node {failing.blocks[1]}) failed at step 1" in r.stderr
    (tmp_path / "missing.json").write_text(json.dumps({"1": {"class_type": "ModularBlock_NotInstalled", "inputs": {}}}))
    assert run_tool(tmp_path / "missing.json", "--url", server.url).returncode == 2
    assert run_tool(tmp_path / "invalid.json", "--url", "http://127.0.0.1:9").returncode == 3


# --- bad input --------------------------------------------------------------------------------


def validation_errors(server, prompt):
    with pytest.raises(ValidationError) as info:
        server.queue(prompt)
    return info.value.body


def test_no_block_attached_is_a_validation_error(server):
    g = guide_graph()
    g.loop.unset("block_1", "block_2")
    body = validation_errors(server, g.graph)
    errors = body["node_errors"][g.loop.id]["errors"]
    assert len(errors) == 1 and errors[0]["details"].endswith(  # once, under the input ComfyUI filed it with
        "LoopWrapper: no loop blocks attached; connect at least one block node to the loop"), errors
    assert_still_serving(server)


def test_invalid_json_and_out_of_range_are_validation_errors(server):
    g = guide_graph(x="[1, 2")
    body = validation_errors(server, g.graph)
    assert any("x: not valid JSON" in e["details"] for e in body["node_errors"][g.blocks[0].id]["errors"])
    g = LoopGraph(LOOP, {"num_steps": "1"}, [("ModularBlock_MultiplyBlock", {"x": "1", "factor": 101})])
    body = validation_errors(server, g.graph)
    errors = body["node_errors"][g.blocks[0].id]["errors"]
    assert any(e["details"] == "factor" and "max of 100" in e["message"] for e in errors)
    assert_still_serving(server)


def failed_block_notices(result):
    """The block node ids the pack named on the websocket for the page to outline."""
    return [m["data"]["node"] for m in result.messages if m["type"] == "modular_loops.failed_block"]


def test_required_input_missing_is_an_execution_error(server):
    g = LoopGraph(LOOP, {"num_steps": "2"}, [("ModularBlock_AddBlock", {"x": "0", "amount": ""})])
    result = server.run(g.graph)
    assert result.status == "error"
    assert result.error["node_id"] == g.loop.id
    msg = result.error["exception_message"]
    assert f"LoopWrapper (node {g.loop})" in msg and "required input 'amount' is missing" in msg
    assert f"AddBlock, node {g.blocks[0]}" in msg
    assert g.preview.id not in result.outputs  # nothing half-written
    assert_still_serving(server)


def test_value_of_wrong_type_is_an_execution_error(server):
    # A string reaches MultiplyBlock's INT input `factor` through an any-typed link.
    g = LoopGraph(LOOP, {"num_steps": "0"}, [(BLOCK, {"x": '"abc"'})])
    multiply = g.graph.node("ModularBlock_MultiplyBlock", x="1", factor=g.get)
    loop = g.graph.node(LOOP, num_steps="1", block_1=multiply)
    g.graph.node("ModularStateInspect", state=loop)
    result = server.run(g.graph)
    assert result.status == "error" and result.error["node_id"] == loop.id
    msg = result.error["exception_message"]
    assert "input 'factor'" in msg and f"MultiplyBlock, node {multiply}" in msg and "expected int, got str 'abc'" in msg
    assert failed_block_notices(result) == [multiply.id]
    assert_still_serving(server)


def test_block_raising_at_step_1(server):
    g = LoopGraph(LOOP, {"num_steps": "3"}, [(BLOCK, {"x": "0"}), ("ModularBlock_FailAtStepBlock", {"fail_at": 1})])
    result = server.run(g.graph)
    assert result.status == "error" and result.error["node_id"] == g.loop.id
    msg = result.error["exception_message"]
    for part in (f"LoopWrapper (node {g.loop})", f"'block_2' (FailAtStepBlock, node {g.blocks[1]})", "step 1",
                 "RuntimeError", "deliberate failure at i=1"):
        assert part in msg, (part, msg)
    assert failed_block_notices(result) == [g.blocks[1].id]  # as data, before ComfyUI's execution_error
    kinds = [m["type"] for m in result.messages]
    assert kinds.index("modular_loops.failed_block") < kinds.index("execution_error")
    assert_still_serving(server)


def test_interrupt_stops_within_one_iteration(server):
    seconds = 0.3
    g = LoopGraph(LOOP, {"num_steps": "200"}, [(BLOCK, {"x": "0"}), ("ModularBlock_SleepBlock", {"seconds": seconds})])
    run = interrupt_at_first_step(server, g.graph, g.loop)
    assert run.result.status == "interrupted"
    assert len(run.steps_after) <= 1, run.steps_after
    assert run.seconds < 2 * seconds + 1.0
    REPORT.append(f"interrupt: stopped {run.seconds:.2f} s after POST /interrupt (one step = {seconds} s)")
    assert_still_serving(server)


# --- state files --------------------------------------------------------------------------------


def test_save_state_then_load_state_gives_the_same_values(server):
    g = guide_graph()
    saved = g.graph.node("ModularStateSave", state=g.loop, filename_prefix="states/test_guide", skip_unsupported=False)
    run = server.run(g.graph)
    assert run.status == "success", run.error
    (name,) = run.outputs[saved.id]["text"]
    assert re.fullmatch(r"states/test_guide_\d{5}_\.safetensors \[output\]", name), name
    assert (server.base / "output" / name.split(" ")[0]).is_file()
    again = Graph()
    loaded = again.node("ModularStateLoad", state_file=name)
    preview = again.node("PreviewAny", source=again.node("ModularStateGet", state=loaded, key="x"))
    inspect = again.node("ModularStateInspect", state=loaded)
    run = server.run(again)
    assert run.status == "success", run.error
    assert run.text(preview) == "6" and run.text(inspect) == "num_steps: int 3\nx: int 6"
    assert name in server.object_info("ModularStateLoad")["input"]["required"]["state_file"][0]


def test_load_state_refuses_names_outside_its_folders_and_files_that_are_not_states(server):
    for name in ("../secret.safetensors", "/etc/passwd.safetensors", "states/x.ckpt"):
        g = Graph()
        g.node("ModularStateInspect", state=g.node("ModularStateLoad", state_file=name))
        with pytest.raises(ValidationError) as err:
            server.queue(g)
        assert "Load State" in json.dumps(err.value.body), (name, err.value.body)
    import shutil

    shutil.copy(server.base / "models" / "checkpoints" / "tiny_sd3.safetensors", server.base / "input" / "ckpt.safetensors")
    g = Graph()
    g.node("ModularStateInspect", state=g.node("ModularStateLoad", state_file="ckpt.safetensors"))
    run = server.run(g)
    assert run.status == "error" and "not a pipeline state" in run.error["exception_message"], run.error
    assert_still_serving(server)


def rss_kib(pid) -> int:
    return int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:")).split()[1])


def test_a_hundred_loads_of_bad_files_leave_the_server_up_and_its_memory_flat(server):
    import torch

    bad = {"pickle.safetensors": None, "truncated.safetensors": None, "garbage.safetensors": b"\x00" * 4096}
    torch.save({"x": torch.ones(8)}, server.base / "input" / "pickle.safetensors")
    from modular import compat
    from modular.state_files import save_state

    state = compat.PipelineState()
    state.set("latents", torch.randn(4, 64, 64))
    whole = server.base / "input" / "whole.safetensors"
    save_state(state, whole)
    (server.base / "input" / "truncated.safetensors").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for name, data in bad.items():
        if data is not None:
            (server.base / "input" / name).write_bytes(data)

    def load_all(rounds):
        for k in range(rounds):
            for name in bad:
                g = Graph()
                g.node("ModularStateInspect", state=g.node("ModularStateLoad", state_file=name))
                run = server.run(g)
                assert run.status == "error" and name in run.error["exception_message"], run.error

    load_all(3)  # warm: imports, caches
    before = rss_kib(server.proc.pid)
    load_all(100 // len(bad) + 1)
    after = rss_kib(server.proc.pid)
    REPORT.append(f"100+ loads of bad state files: server RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB")
    assert after <= before * 1.05, (before, after)
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
    g = LoopGraph(LOOP, {"num_steps": "2"}, [("ModularBlock_SquareBlock", {"x": "3"})])
    assert server.run(g.graph).text(g.preview) == "81"
    assert_still_serving(server)
