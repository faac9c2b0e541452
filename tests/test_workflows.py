"""Host tier, every named workflow of diffusers' families: each family's Auto blocks node
(`ModularWorkflow_<Class>`) runs each workflow a tiny family module declares (`tests/fixtures/tiny/<family>.py`:
its folder, the call's values, its media) through a real ComfyUI, against diffusers' own `pipe(**the same call)` of
the same folder. Media go in as a user gives them: PNG files in the input folder through Load Image (images), Load
Image (as Mask) (masks) and an IMAGE batch of frames (videos); images and videos come out of State To Image, a
waveform out of State To Audio (into Save Audio).

Each run is recorded in `tests/.artifacts/coverage/<host>.json`; `tools/coverage_table.py` writes
docs/coverage.md (family x workflow: equal / differs / fails / not run and why) from them. Skipped, loudly,
without a ComfyUI."""

import json
import sys
from pathlib import Path

import pytest

from comfy_host import ROOT, Graph, require_host, widget_values
from conftest import FIXTURES, REPORT

require_host()

sys.path.insert(0, str(FIXTURES))
import tiny  # noqa: E402
from modular.pipelines.media import AUDIO_NAMES  # noqa: E402

SEED = 0
AUDIO = AUDIO_NAMES  # diffusers' names for a waveform: a family whose output is one (MiniMax Music)
TOL = 1e-5
COVERAGE = ROOT / "tests" / ".artifacts" / "coverage"

# Workflows whose node run is not yet diffusers' own: (Auto blocks class, workflow) -> why. Each is an xfail that
# must fail (strict): one that starts to pass fails the run until it is taken off this list.
KNOWN = {}


def cases():
    """(family, Auto blocks class, workflow, spec, call) of every workflow a tiny module declares runnable (in
    WORKFLOWS, or on another folder in MORE_WORKFLOWS)."""
    for family in tiny.families():
        module = tiny.family(family)
        more = [(spec["blocks"], spec) for spec in getattr(module, "MORE_WORKFLOWS", [])]
        for auto, spec in [*module.WORKFLOWS.items(), *more]:
            for workflow, call in spec["workflows"].items():
                if isinstance(call, dict):
                    yield family, auto, workflow, spec, call


def param(family, auto, workflow, spec, call):
    marks = [pytest.mark.xfail(reason=KNOWN[(auto, workflow)], strict=True)] if (auto, workflow) in KNOWN else []
    return pytest.param(family, auto, workflow, spec, call, id=f"{auto}-{workflow}", marks=marks)


@pytest.fixture(scope="module")
def record(server):
    """Where each case's outcome goes: written to tests/.artifacts/coverage/<host>.json when the module ends."""
    version = {}
    exec((Path(server.comfy) / "comfyui_version.py").read_text(), version)  # the host's own version file
    results = {}
    yield results
    COVERAGE.mkdir(parents=True, exist_ok=True)
    import diffusers  # noqa: F401  (the host's Python: the same diffusers the server runs)

    (COVERAGE / f"comfyui-{version['__version__']}.json").write_text(json.dumps(
        {"comfyui": version["__version__"], "diffusers": diffusers.__version__, "results": results}, indent=1,
        sort_keys=True))


def triggers(auto, workflow) -> set:
    """The inputs diffusers' `_workflow_map` names to select a workflow."""
    import diffusers.modular_pipelines as blocks

    chosen = (getattr(getattr(blocks, auto), "_workflow_map", None) or {}).get(workflow, {})
    return {k for alternative in (chosen if isinstance(chosen, (list, tuple)) else [chosen]) for k in alternative}


def declared_inputs(auto) -> set:
    """The inputs diffusers' Auto blocks class `auto` declares (what its pipe() reads)."""
    import diffusers.modular_pipelines as blocks

    return {p.name for p in getattr(blocks, auto)().inputs}


def media_nodes(server, graph, name, value, spec, tag=""):
    """A media value of a call as ComfyUI nodes over PNG files the test writes into the input folder: Load Image
    (an image), Load Image (as Mask) on its red channel (a greyscale mask: 1 = repaint), or the frames of a
    video as one IMAGE batch. `tag`: apart from the files of the call's own media."""
    if spec["media"] == "video":
        names = []
        for k, frame in enumerate(value):
            names.append(f"tiny_{name}{tag}_{k}.png")
            frame.save(server.base / "input" / names[-1])
        return graph.node("MLTest_LoadFrames", names=json.dumps(names))
    file = f"tiny_{name}{tag}.png"
    value.save(server.base / "input" / file)
    if spec["media"] == "mask":
        return graph.node("LoadImageMask", image=file, channel="red")
    return graph.node("LoadImage", image=file)


def fill(info, cls, values) -> dict:
    """A node's inputs: `values` (a JSON widget's as JSON text), every other required widget at its default (an API
    prompt holds them all)."""
    required = info[cls]["input"].get("required", {})
    inputs = {}
    for name, value in values.items():
        json_widget = name in required and "(JSON" in str(required[name][1].get("placeholder", ""))
        inputs[name] = json.dumps(value) if json_widget else value
    return widget_values(info, cls, **inputs)


def workflow_graph(server, info, auto, workflow, spec, call, expanded=False):
    """Load Diffusers Pipeline -> `ModularWorkflow_<auto>` with the call's values on its widgets and its media on
    its sockets (or, `expanded`, the chain of step and loop nodes it expands into, GET /modular_loops/expand, each
    value on the node it names) -> State To Image / Audio, beside diffusers' own run of the same call and their
    comparison."""
    cls = f"ModularWorkflow_{auto}"
    assert cls in info, f"no workflow node for {auto}"
    inputs = info[cls]["input"]
    required, optional = inputs.get("required", {}), inputs.get("optional", {})
    g = Graph()
    pipeline = g.node("ModularDiffusersLoader", folder=spec["folder"], dtype="float32",
                      ip_adapter=spec.get("ip_adapter", ""))
    values = {"generator": SEED}
    if "output_type" in required:
        values["output_type"] = "pt"
    made, more = tiny.with_media(call), {}  # more: the call's values the node takes in its `more` widget (JSON)
    for name, value in call.items():
        if isinstance(value, dict) and "media" in value:
            assert name in optional, f"{cls} has no socket for the media input {name!r}"
            values[name] = media_nodes(server, g, name, made[name], value)
        elif name in required:
            values[name] = value
        elif name in declared_inputs(auto):
            values[name] = more[name] = value
        # else: pipe() takes it too, and no block reads it (Flux.2 Klein base encodes "" as its negative)
    if not expanded:
        own = {"workflow": workflow, **{k: v for k, v in values.items() if k not in more}, "more": more}
        node = g.node(cls, pipeline=pipeline, **fill(info, cls, own))
        g.made = {"pipeline": pipeline, "values": own}
    else:
        answer = server.get(f"/modular_loops/expand?node={cls}&workflow={workflow}&given={','.join(values)}")
        chain = answer["nodes"]
        taken = [n for item in chain for n in item["takes"]]
        missing = sorted(set(values) - set(taken) - set(answer["dropped"]))
        assert not missing and len(taken) == len(set(taken)), f"no node of the chain takes {missing}: {chain}"
        assert set(answer["dropped"]) <= triggers(auto, workflow), answer["dropped"]  # they only chose the chain
        node = None
        for item in chain:
            sockets = info[item["class_type"]]["input"].get("optional", {})
            links = {k: pipeline for k in ("pipeline",) if k in sockets}
            own = {**item.get("values", {}), **{n: values[n] for n in item["takes"]}}
            node = g.node(item["class_type"], **fill(info, item["class_type"], own),
                          **links, **({"state": node} if node is not None else {}))
    reference = dict(folder=spec["folder"], call=json.dumps(call), output=spec["output"], seed=SEED,
                     ip_adapter=spec.get("ip_adapter", ""))
    if spec["output"] in AUDIO:  # State To Audio -> Save Audio, as a user hears it
        audio = g.node("ModularStateToAudio", state=node, key=spec["output"], pipeline=pipeline)
        g.node("SaveAudio", audio=audio, filename_prefix=f"audio/{auto}")
        compared = g.node("MLTest_AudioDiff", a=audio, b=g.node("MLTest_DiffusersCallAudio", **reference))
        g.output = audio
    else:
        image = g.node("ModularStateToImage", state=node, key=spec["output"])
        compared = g.node("MLTest_ImageDiff", a=image, b=g.node("MLTest_DiffusersCall", **reference))
        g.output = image
    diffs = [g.node("PreviewAny", source=compared)]
    sound = sound_of(auto, workflow, made)
    if sound and spec["output"] not in AUDIO:  # a video with sound (LTX-2, Cosmos *_with_sound, MiniMax-H3, Echo)
        audio = g.node("ModularStateToAudio", state=node, key=sound, pipeline=pipeline)
        heard = g.node("MLTest_DiffusersCallAudio", **{**reference, "output": sound})
        diffs.append(g.node("PreviewAny", source=g.node("MLTest_AudioDiff", a=audio, b=heard)))
    return g, diffs


def changed_inputs(server, info, g, auto, spec, call) -> dict:
    """{input: its diff node}: the workflow node again with one of its own inputs changed (the seed; each image,
    mask, video: another one), compared with the node's output. With tiny random models `== pipe()` alone could
    hold for an output that ignores its inputs: each of these must change it."""
    from PIL import ImageOps

    cls, made = f"ModularWorkflow_{auto}", g.made
    changes = {"generator": SEED + 1}
    for name, value in call.items():
        if isinstance(value, dict) and "media" in value:
            other = tiny.media(value, seed=101)
            other = ImageOps.invert(other) if value["media"] == "mask" else other  # a mask is the same at any seed
            changes[name] = media_nodes(server, g, name, other, value, tag="_other")
    diffs = {}
    for name, value in changes.items():
        node = g.node(cls, pipeline=made["pipeline"], **fill(info, cls, {**made["values"], name: value}))
        if spec["output"] in AUDIO:
            out = g.node("ModularStateToAudio", state=node, key=spec["output"], pipeline=made["pipeline"])
            diffs[name] = g.node("PreviewAny", source=g.node("MLTest_AudioDiff", a=g.output, b=out))
        else:
            out = g.node("ModularStateToImage", state=node, key=spec["output"])
            diffs[name] = g.node("PreviewAny", source=g.node("MLTest_ImageDiff", a=g.output, b=out))
    return diffs


def sound_of(auto, workflow, given) -> str | None:
    """The waveform a workflow's chain writes besides its images or video (`audio`, `sound`), else None."""
    import diffusers.modular_pipelines as blocks

    from modular.core import compat

    chain = compat.workflow_chain(getattr(blocks, auto)(), workflow, given)
    return next((o.name for o in chain.intermediate_outputs if o.name in AUDIO), None)


def compared(run, diffs) -> list[dict]:
    results = [json.loads(run.text(diff)) for diff in diffs]
    for result in results:  # the images / frames / waveform, and a video's sound
        assert result["finite"] and result["shape"] == result["shape_b"], result
        assert result["max_abs_diff"] <= TOL, result
        assert result.get("rate") == result.get("rate_b"), result  # a waveform's rate is the one diffusers says
    return results


@pytest.mark.parametrize("family,auto,workflow,spec,call", [param(*c) for c in cases()])
def test_every_workflow_equals_diffusers_own_call(server, info, record, family, auto, workflow, spec, call):
    graph, diffs = workflow_graph(server, info, auto, workflow, spec, call)
    changed = changed_inputs(server, info, graph, auto, spec, call)
    run = server.run(graph, timeout=600)
    entry = record[f"{auto}/{workflow}"] = {"family": family}
    if run.status != "success":
        entry.update(outcome="fails", why=f"{run.error.get('exception_type')}: {run.error.get('exception_message')}"[:300])
        pytest.fail(f"{auto} {workflow}: {run.error.get('exception_message')}")
    results = [json.loads(run.text(diff)) for diff in diffs]
    worst = max((r["max_abs_diff"] for r in results), key=lambda d: float("inf") if d is None else d)
    entry.update(outcome="equal" if worst is not None and worst <= TOL else "differs", max_abs_diff=worst,
                 shape=results[0]["shape"], shape_diffusers=results[0]["shape_b"], with_audio=len(results) > 1)
    compared(run, diffs)
    assert results[0]["std_a"] > 1e-4, results[0]  # not a constant output
    for name, diff in changed.items():  # and the workflow's own inputs change it
        other = json.loads(run.text(diff))
        assert other["max_abs_diff"] is None or other["max_abs_diff"] > 0, (f"changing {name} changed nothing", other)


@pytest.mark.parametrize("family,auto,workflow,spec,call", [param(*c) for c in cases()])
def test_the_expanded_chain_of_nodes_equals_diffusers_own_call(server, info, record, family, auto, workflow, spec,
                                                               call):
    # What the page's "Expand into steps" lays out (GET /modular_loops/expand: diffusers' chain for the workflow as
    # step and loop nodes, each value of the call on the first node that has it) runs as pipe() does.
    graph, diffs = workflow_graph(server, info, auto, workflow, spec, call, expanded=True)
    run = server.run(graph, timeout=600)
    assert run.status == "success", run.error
    compared(run, diffs)
    record.setdefault(f"{auto}/{workflow}", {"family": family})["chain"] = "equal"


def guided_families() -> list:
    """The families whose pipeline classes have a property that reads their guider (`requires_unconditional_embeds`:
    whether the text encoder step encodes a negative prompt), read from diffusers' source."""
    from modular.pipelines.scan import package_dir

    return sorted(p.parent.name for p in package_dir().glob("*/modular_pipeline.py")
                  if "self.guider" in p.read_text(encoding="utf-8"))


def asks_the_guider(server, folder) -> bool:
    """Whether the pipeline diffusers makes of `folder` encodes a negative prompt with a CFG guider switched on and
    none with it off (`requires_unconditional_embeds`; a distilled Flux 2 Klein never does)."""
    from diffusers.guiders import ClassifierFreeGuidance
    from diffusers.modular_pipelines import ModularPipeline

    pipe = ModularPipeline.from_pretrained(str(server.base / "models" / "diffusers" / folder), local_files_only=True)
    asked = []
    for enabled in (True, False):
        pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=3.0, enabled=enabled))
        asked.append(getattr(pipe, "requires_unconditional_embeds", None))
    return asked == [True, False]


@pytest.mark.parametrize("family", guided_families())
def test_a_guider_node_decides_what_the_text_encoder_encodes(server, info, family):
    # A CFG guider node on the workflow node, switched on (and off), where the pipeline's own guider may be either:
    # diffusers' text encoder steps ask the run's components whether to encode the negative prompt, and must see
    # this guider, as pipe() does after pipe.update_components(guider=...). The family's first workflow whose
    # pipeline asks its guider (a distilled Flux 2 Klein's does not).
    _, auto, workflow, spec, call = next(c for c in cases() if c[0] == family and asks_the_guider(server, c[3]["folder"]))
    negative = {"negative_prompt": "a blurry picture"} if "negative_prompt" in declared_inputs(auto) else {}
    outputs = []
    for enabled in (True, False):  # (off: no negative prompt; diffusers' own Wan text encoder fails on one then)
        graph, node_diffs = workflow_graph(server, info, auto, workflow, spec, {**call, **(negative if enabled else {})})
        params = {"guidance_scale": 3.0, "enabled": enabled}
        guider = graph.node("ModularGuider_ClassifierFreeGuidance",
                            **fill(info, "ModularGuider_ClassifierFreeGuidance", params))
        workflow_node = next(n for n in graph.nodes.values() if n.class_type == f"ModularWorkflow_{auto}")
        workflow_node.set(guider=guider)
        reference = next(n for n in graph.nodes.values() if n.class_type.startswith("MLTest_DiffusersCall"))
        reference.set(guider=json.dumps({"class": "ClassifierFreeGuidance", "params": params}))
        run = server.run(graph, timeout=600)
        if run.status != "success" and not enabled and run.error.get("node_type") == "MLTest_DiffusersCall":
            # diffusers' own pipe() cannot run these blocks with the guider off (HunyuanVideo 1.5, LTX, Wan 2.1: their
            # text encoder step declares negative_prompt_embeds and writes none): nothing to compare with
            REPORT.append(f"{family}: diffusers' own pipe() fails with a CFG guider switched off: "
                          f"{run.error.get('exception_message', '').strip()}")
            continue
        assert run.status == "success", (enabled, run.error.get("node_type"), run.error.get("exception_message"))
        compared(run, node_diffs)
        outputs.append(json.loads(run.text(node_diffs[0])))
    if len(outputs) == 2:
        on, off = outputs
        assert on["std_a"] != off["std_a"], (on, off)  # switching the guider on changed the result
