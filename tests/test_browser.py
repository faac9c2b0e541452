"""Browser tier: the real ComfyUI page in headless Debian Chromium, driven by playwright-core
(`tests/browser/scenarios.mjs`). Skipped, loudly, without a ComfyUI, Chromium, node or playwright-core.

Every scenario runs on each frontend: the host's own, and, when `$COMFYUI_FRONTEND_ROOT` names the
`static/` folder of another `comfyui-frontend-package` (`.ci/run` installs the newest), that one in the
classic canvas renderer and in Nodes 2.0 (`Comfy.VueNodes.Enabled`, set in a fresh user directory)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from comfy_host import comfy_python, find_comfyui, missing_modules, start_test_server
from conftest import FIXTURES, REPORT, ROOT, SKIPPED_TIERS, skip_tier

BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / "tests" / ".artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

COMFY, HOW = find_comfyui()
if COMFY is None:
    skip_tier("browser", HOW)
if missing_modules(comfy_python(COMFY)):
    skip_tier("browser", f"the Python of the ComfyUI at {COMFY} cannot run it")
if not os.access(CHROMIUM, os.X_OK):
    skip_tier("browser", f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM_PATH)")
if shutil.which("node") is None:
    skip_tier("browser", "no node on PATH")
if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
    skip_tier("browser", "playwright-core is not installed (run: npm ci --prefix tests/browser)")


FRONTEND_ROOT = os.environ.get("COMFYUI_FRONTEND_ROOT", "")
FRONTEND_VERSION = os.environ.get("COMFYUI_FRONTEND_VERSION", "") or "custom"
FRONTENDS = ["host"]  # the frontend the host pins
if FRONTEND_ROOT and (Path(FRONTEND_ROOT) / "index.html").is_file():
    FRONTENDS += [f"{FRONTEND_VERSION}-classic", f"{FRONTEND_VERSION}-nodes2"]
else:
    SKIPPED_TIERS["browser (newer frontend)"] = (
        f"$COMFYUI_FRONTEND_ROOT={FRONTEND_ROOT!r} is not a frontend's static/ folder" if FRONTEND_ROOT else
        "no $COMFYUI_FRONTEND_ROOT (the static/ folder of a comfyui-frontend-package; .ci/run installs the newest)")


@pytest.fixture(scope="module", params=FRONTENDS)
def page_results(request, comfy_server, tmp_path_factory):
    """The scenarios' results on one frontend: the shared server for the host's own, else a server of its own
    with `--front-end-root` and a fresh user directory holding the renderer setting."""
    frontend = request.param
    server = comfy_server
    if frontend != "host":
        server = start_test_server(comfy_server.comfy, comfy_server.python, tmp_path_factory.mktemp(f"comfy_{frontend}"),
                                   FIXTURES, extra_args=["--front-end-root", FRONTEND_ROOT],
                                   settings={"Comfy.VueNodes.Enabled": frontend.endswith("nodes2")})
    try:
        out = ARTIFACTS / frontend
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["node", "scenarios.mjs", server.url, str(out)], cwd=BROWSER_DIR,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        results["frontend"] = frontend
        return results
    finally:
        if server is not comfy_server:
            server.stop()


def called_by_us(stack: str) -> bool:
    """A deprecation notice is ours when the extension is on its stack, or when the deprecated API (the frame
    past the console.warn hook and the frontend's notice helper) was called by a scenario's own code."""
    if "/extensions/modular_loops/" in stack:
        return True
    frames = [f.strip() for f in stack.splitlines()[2:]]  # past "Error" and the console.warn hook
    while frames and "warnDeprecated" in frames[0]:
        frames.pop(0)
    callers = [f for f in frames[1:] if "ReactiveHandler" not in f]  # past the deprecated API (and Vue's proxy)
    return bool(callers) and "eval at evaluate" in callers[0]


def test_deprecation_notices_are_told_apart():
    # stacks as Chromium gave them with frontend 1.58.1 (tests/browser/scenarios.mjs hooks console.warn)
    hook, evaluated = "Error\n    at console.warn (<anonymous>:7:77)\n", "    at eval (eval at evaluate (:370:30), <anonymous>:28:16)"
    frontend_getter = hook + "\n".join([
        "    at warnDeprecated (http://h/assets/litegraph-C.js:1:50558)", "    at get link (http://h/assets/litegraph-C.js:1:1)",
        "    at MutableReactiveHandler.get (http://h/assets/vendor-vue-core-D.js:1:1)",
        "    at LGraphCanvas._serializeItems (http://h/assets/litegraph-C.js:1:2)", evaluated])
    scenario_method = hook + "    at ChangeTracker.checkState (http://h/assets/app-s.js:9:1)\n" + evaluated
    extension = hook + "    at warnDeprecated (http://h/assets/litegraph-C.js:1:1)\n    at get link (http://h/a.js:1:1)\n" \
        "    at blockLabel (http://h/extensions/modular_loops/js/modular_loops.js:31:9)"
    assert not called_by_us(frontend_getter)
    assert called_by_us(scenario_method) and called_by_us(extension)


def result(page_results, name):
    r = page_results[name]
    assert r["ok"], r.get("error")
    return r


def test_page_loads_with_no_console_error_from_the_pack(page_results):
    r = result(page_results, "load")
    assert r["extensions"] == ["ModularLoops"]
    assert r["packConsoleErrors"] == []
    final = result(page_results, "final_console")
    assert final["packConsoleErrors"] == []
    # nothing the extension or the scenarios call is deprecated (the frontend's notices about its own calls aside)
    assert [d for d in final["deprecations"] if called_by_us(d["stack"])] == []
    # the renderer asked for is the one the page used
    assert final["nodes2"] == page_results["frontend"].endswith("nodes2")


def test_block_sockets_grow_close_up_and_show_run_order(page_results):
    r = result(page_results, "sockets")
    a, b, c = r["a"], r["b"], r["c"]
    assert r["fresh"] == [["block_1", "block_1", None]]
    assert r["three"] == [["block_1", "1. A", a], ["block_2", "2. B", b], ["block_3", "3. C", c], ["block_4", "block_4", None]]
    assert r["closed"] == [["block_1", "1. A", a], ["block_2", "2. C", c], ["block_3", "block_3", None]]
    assert r["replaced"] == [["block_1", "1. B", b], ["block_2", "2. C", c], ["block_3", "block_3", None]]


def test_save_reload_undo_and_paste_restore_the_same_sockets(page_results):
    r = result(page_results, "save_reload_paste_undo")
    assert r["reloaded"] == r["before"]
    assert [s[0] for s in r["afterDisconnect"]] == ["block_1", "block_2", "block_3"]
    assert r["undone"] == r["beforeDisconnect"]
    assert r["pasted"] == r["original"]
    assert r["pastedSources"][-1] is None and len(set(r["pastedSources"][:-1]) & set(r["ids"])) == 0


def test_queue_the_guide_loop_from_the_page_shows_6(page_results):
    r = result(page_results, "queue_guide")
    assert r["preview"] == "6"
    loop = r["api"][str(r["ids"]["loop"])]
    assert loop["class_type"] == "ModularLoop_LoopWrapper"
    assert sorted(k for k in loop["inputs"] if k.startswith("block_")) == ["block_1", "block_2"]


def test_save_state_shows_the_file_it_wrote(page_results):
    r = result(page_results, "save_state_shows_its_file")
    assert r["shown"].startswith("states/browser_") and r["shown"].endswith("_00001_.safetensors [output]"), r
    assert sorted(r["sent"]) == ["filename_prefix", "skip_unsupported", "state"], r  # the name is not sent


def test_running_loop_shows_its_step_and_the_interrupt_button_stops_it(page_results):
    r = result(page_results, "progress_and_interrupt")
    assert r["seen"][1] == 200 and 2 <= r["seen"][0] < 200
    assert r["shown"], r  # the step on the node: our text on the canvas, the frontend's progress bar in Nodes 2.0
    assert r["stoppedMs"] < 2000  # one step is 0.2 s
    assert r["after"] is None  # the step counter is cleared when the run ends


def test_error_marks_the_failing_block_node(page_results):
    r = result(page_results, "error_marks_block")
    assert r["failed"] == str(r["ids"]["bad"])
    assert r["errorNode"] == str(r["ids"]["loop"])
    assert "FailAtStepBlock, node %s" % r["ids"]["bad"] in r["message"] and "step 1" in r["message"]
    if page_results["frontend"].endswith("nodes2"):
        assert r["domMarked"] is True  # its element is outlined
    assert r["cleared"]  # until the next run


def test_every_example_workflow_loads_from_the_template_list_and_validates(page_results):
    r = result(page_results, "templates_validate")
    examples = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    assert sorted(r["names"]) == examples
    for name, answer in r["out"].items():
        if name == "guide_loop":
            assert answer["status"] == 200 and answer["body"]["node_errors"] == {}, (name, answer)
        else:  # written for a model the test server does not have (a checkpoint, a LoRA, a diffusers folder):
            # nothing else may be wrong
            # (and the resume example a state file the first has not written yet)
            missing = ({"folder"} if name.startswith("diffusers_") else
                       {"ckpt_name", "state_file", "lora_name", "unet_name", "clip_name", "vae_name"})
            problems = [e for n in answer["body"]["node_errors"].values() for e in n["errors"]]
            assert problems and all(e["extra_info"]["input_name"] in missing for e in problems), (name, answer)


def test_missing_block_names_the_block_and_where_it_belongs(page_results):
    r = result(page_results, "missing_block")
    text = "\n".join(r["warned"])
    assert "NotInstalledBlock from a user blocks folder (my_blocks.py)" in text
    assert "GoneLoop: not shipped with Modular Loops" in text
    assert any("Modular Loops: missing blocks" in t for t in r["toast"])


def test_workflows_saved_by_earlier_versions_load_and_validate(page_results):
    r = result(page_results, "saved_workflows_load")
    saved = sorted(p.name for p in (ROOT / "tests" / "fixtures" / "workflows").glob("*.json"))
    assert sorted(r["out"]) == saved and saved
    for name, answer in r["out"].items():
        assert answer["status"] == 200 and answer["body"]["node_errors"] == {}, (name, answer)
        for sockets in answer["sockets"]:  # re-arranged: the connected ones and one free socket
            assert sockets[-1] == f"block_{len(sockets)}" and len(sockets) >= 2


def missing_diffusers_release_message(name, source, saved, here):
    return (f"diffusers step {name} is one of diffusers' own ({source}), saved with diffusers {saved}; this server's "
            f"diffusers ({here}) has no such class: install diffusers {saved} (or a release that has {name}) and restart")


def test_missing_diffusers_node_names_its_class_and_the_diffusers_it_was_saved_with(page_results):
    r = result(page_results, "missing_diffusers_node")
    rec = r["recorded"]
    assert rec["type"] and rec["version"], rec  # a diffusers node of this server, and its diffusers
    text = "\n".join(r["warned"])
    assert missing_diffusers_release_message("NoSuchDiffusersStep", "diffusers/modular_pipelines/stable_diffusion_xl/encoders.py",
                                             "0.42.1", rec["version"]) in text, text
    # without a recorded release: said so, the class and its file named
    assert ("loop wrapper NoSuchDiffusersLoop is one of diffusers' own (diffusers/modular_pipelines/flux/denoise.py); the "
            "workflow does not record which diffusers it was saved with, and this server's diffusers "
            f"({rec['version']}) has no such class: install a diffusers release that has NoSuchDiffusersLoop") in text, text
    # a diffusers custom-block folder is a folder
    assert ("loop block NoSuchCustomBlock from a diffusers custom-block folder (my_custom_block); put that folder into "
            "ComfyUI/models/modular_blocks/ and restart") in text, text
    # nor is a diffusers class sent to the blocks folder
    assert not [line for line in text.splitlines() if "NoSuchDiffusers" in line and "modular_blocks" in line], text
    assert any("Modular Loops: missing blocks" in t for t in r["toast"])
    # what lets a later server say so: a diffusers node made here records this server's diffusers next to its origin
    assert rec["saved"] == {"origin": "diffusers", "source": rec["served"]["source"], "diffusers_version": rec["version"]}, rec
    # a workflow node (all the templates are workflow nodes) records its origin and is named when missing
    flow = rec["workflow"]
    assert flow["saved"] == {"origin": "diffusers", "source": flow["served"]["source"],
                             "diffusers_version": rec["version"]}, flow
    assert ("diffusers workflow node NoSuchAutoBlocks is one of diffusers' own "
            "(diffusers/modular_pipelines/flux/modular_blocks_flux.py), saved with diffusers 0.42.1") in text, text


def subgraph_result(page_results, name):
    """A subgraph scenario's result; skipped, loudly, on a frontend without subgraphs."""
    r = result(page_results, name)
    if r.get("unsupported"):
        reason = f"frontend {page_results['frontend']}: {r['unsupported']}"
        SKIPPED_TIERS[f"browser subgraph tests on {page_results['frontend']}"] = reason
        pytest.skip(reason)
    return r


def test_loop_in_a_subgraph_shows_its_step_on_itself_and_on_the_subgraph_node(page_results):
    r = subgraph_result(page_results, "subgraph_progress")
    assert r["execId"] in r["prompt"], r  # the server knows the loop by its path of ids
    seen = r["atRoot"]["seen"]
    assert seen[1] == 60 and 2 <= seen[0] < 60, r
    assert r["atRoot"]["inner"]["step"] and r["atRoot"]["holder"]["step"], r  # both nodes carry it
    if page_results["frontend"].endswith("nodes2"):  # the frontend's own progress bar on the loop's element
        assert r["inside"]["bar"], r
    else:  # the canvas renderer draws our text, on the subgraph node at the root and on the loop inside
        assert r["atRoot"]["drawn"] and r["inside"]["drawn"], r
    assert r["after"] == {"step": None, "holder": {"step": None, "failed": False}, "inner": {"step": None, "failed": False}}, r


def test_failing_block_in_a_subgraph_is_outlined_inside_and_on_the_subgraph_node(page_results):
    r = subgraph_result(page_results, "subgraph_error")
    path = f"{r['holder']}:{r['bad']}"
    assert r["errorNode"] == f"{r['holder']}:{r['loop']}", r
    assert f"FailAtStepBlock, node {path}" in r["message"], r
    if page_results["frontend"].endswith("nodes2"):  # the elements of the graph on screen: the holder, then the block
        assert r["atRoot"]["elements"]["holder"] is True, r
        assert r["inside"]["elements"] == {"bad": True, "loop": False}, r
    else:  # drawn on the canvas: on the subgraph node at the root, on the block inside
        assert r["atRoot"]["outlines"] > 0 and r["inside"]["outlines"] > 0, r
    assert r["atRoot"]["failed"] == path, r
    assert r["atRoot"]["holder"]["failed"] and r["atRoot"]["bad"]["failed"] and not r["atRoot"]["loop"]["failed"], r
    assert not r["cleared"]["failed"] and not r["cleared"]["holder"]["failed"] and not r["cleared"]["bad"]["failed"], r
    assert r["cleared"]["elements"] == 0, r


def test_a_workflow_template_fits_the_screen_shows_its_workflows_inputs_and_queues_to_pipe(page_results):
    # The SDXL text2image template's one node: no taller than a 1000 px screen at zoom 1 (it had 75 inputs), the
    # media sockets of the chosen workflow only, and, queued on the tiny folder, diffusers' own pipe() picture.
    r = result(page_results, "workflow_template_fits")
    m = r["measured"]
    height = m["domHeight"] or m["canvasHeight"]
    assert height <= 1000, m
    assert "more" in m["widgets"] and "clip_skip" not in m["widgets"], m
    assert "image" not in m["inputs"] and "mask_image" not in m["inputs"], m  # text2image reads neither
    assert {"image", "mask_image"} <= set(r["inpainting"]) and "control_image" not in r["inpainting"], r["inpainting"]
    assert "image" not in r["text2image"] and "pipeline" in r["text2image"], r["text2image"]
    assert r["queued"]["max_abs_diff"] is not None and r["queued"]["max_abs_diff"] <= 1e-5, r["queued"]
    REPORT.append(f"{page_results['frontend']}: the SDXL workflow template's node is {height:.0f} px high at zoom 1")


def test_a_workflow_node_expands_in_place_into_steps_that_give_the_same_picture(page_results):
    # "Expand into steps" (the extension's expandWorkflow): SDXL text2image's workflow node becomes diffusers' chain
    # of step and loop nodes, the prompt on the text encoder only, the State To Image fed by the decoder; queued
    # again it gives diffusers' own pipe() picture, as the one node did.
    r = page_results["expand_workflow"]
    assert r["ok"], r.get("error")
    assert r["one"]["max_abs_diff"] == 0 and r["one"]["shape"] == [1, 32, 32, 3], r["one"]
    types = [n["type"] for n in r["chain"]]
    assert types[0] == "ModularStep_StableDiffusionXLTextEncoderStep" and types[-1] == "ModularStep_StableDiffusionXLDecodeStep"
    assert "ModularLoop_StableDiffusionXLDenoiseStep" in types and len(types) == 7, types
    assert r["chain"][0]["prompt"] == "a cat", r["chain"]
    assert not r["after"]["workflowNodeLeft"] and r["after"]["imageFedBy"] == r["chain"][-1]["id"], r["after"]
    assert r["after"]["imageRightOfChain"], r["after"]
    assert r["expanded"]["max_abs_diff"] == 0, (r["expanded"], r["api"])
