"""Core tier: the adapter's pure parts (`nodes/factory.py`, `nodes/widgets.py`) without a ComfyUI: node
generation from declarations, socket order, given values, JSON checks, widget defaults, the any type.
The same node classes are then loaded by a real ComfyUI in the host tier."""

import json
import random
import subprocess
import sys

import pytest
import torch

from conftest import FIXTURES, PACK_PACKAGE, ROOT, import_pack_module

factory = import_pack_module("nodes.factory")
values = import_pack_module("nodes.widgets")
core = import_pack_module("modular")
params = import_pack_module("modular.core.params")
InputParam = __import__("diffusers.modular_pipelines", fromlist=["InputParam"]).InputParam


@pytest.fixture(scope="module")
def nodes():
    registry = core.discover([FIXTURES / "blocks"])
    return {nid: g.cls for nid, g in factory.generate_nodes(registry).items()}


def spec_list(*declared):
    return params.input_specs(list(declared))


# --- node generation -------------------------------------------------------------------------------


def test_nodes_are_generated_for_every_loop_and_block(nodes):
    for nid in ("ModularLoop_LoopWrapper", "ModularBlock_LoopBlock", "ModularLoop_RangeLoop",
                "ModularBlock_MultiplyBlock", "ModularBlock_ScaleBlock", "ModularBlock_EulerStep"):
        assert nid in nodes, nid
    # a denoise loop runs inside the host's sampler machinery: without it, it gets no node here
    assert "ModularLoop_DenoiseLoop" not in nodes
    loop = nodes["ModularLoop_LoopWrapper"]
    assert loop.CATEGORY == "Modular Loops/loops" and loop.RETURN_TYPES == ("PIPELINE_STATE",)
    assert "I'm a loop!!" in loop.DESCRIPTION


def test_a_block_in_a_plain_loop_shows_latents(nodes):
    # A user's block reading `latents` (as diffusers' SDXL LoopBeforeDenoiser does) can be given them.
    inputs = nodes["ModularBlock_LatentsBlock"].INPUT_TYPES()
    assert inputs["optional"]["latents"][0] == "*"
    # Blocks of the denoise loop's family do not show what the sampler provides in the loop.
    euler = nodes["ModularBlock_EulerStep"].INPUT_TYPES()
    assert not {"latents", "denoised", "sigmas"} & {*euler["required"], *euler["optional"]}
    ancestral = nodes["ModularBlock_EulerAncestralStep"].INPUT_TYPES()
    assert set(ancestral["required"]) == {"eta", "s_noise"} and "noise_sampler" not in ancestral["optional"]


def test_a_latent_given_to_a_tensor_input_is_its_samples(nodes):
    node = nodes["ModularBlock_LatentsBlock"]
    samples = torch.zeros(1, 4, 8, 8)
    (config,) = node().configure(unique_id="7", latents={"samples": samples})
    assert config.values["latents"] is samples and config.node == "7"


def test_loop_node_inputs_state_and_sixteen_block_sockets_last(nodes):
    inputs = nodes["ModularLoop_LoopWrapper"].INPUT_TYPES()
    optional = list(inputs["optional"])
    assert optional[-16:] == [f"block_{i}" for i in range(1, 17)]
    assert optional[0] == "state" and inputs["optional"]["state"][0] == "PIPELINE_STATE"
    assert inputs["required"]["num_steps"][0] == "STRING" and inputs["optional"]["num_steps_link"][0] == "*"


def test_validation_names_no_blocks_and_bad_json_once(nodes):
    loop = nodes["ModularLoop_LoopWrapper"]
    answer = loop.VALIDATE_INPUTS(num_steps="3")
    assert answer == "LoopWrapper: no loop blocks attached; connect at least one block node to the loop"
    assert loop.VALIDATE_INPUTS(num_steps="3", block_1=object()) is True
    bad = loop.VALIDATE_INPUTS(num_steps="[1, 2", block_1=object())
    assert bad.startswith("num_steps: not valid JSON")
    # ComfyUI calls it with exactly the declared names: the JSON widgets and the block sockets
    import inspect

    names = list(inspect.signature(loop.VALIDATE_INPUTS).parameters)
    assert names == ["num_steps", *[f"block_{i}" for i in range(1, 17)]]


# --- socket order ----------------------------------------------------------------------------------


def test_blocks_run_in_socket_number_order_past_nine():
    configs = {f"block_{i}": f"config {i}" for i in range(1, 13)}
    shuffled = list(configs.items())
    random.Random(0).shuffle(shuffled)
    order = [name for name, _ in factory.attached_blocks(dict(shuffled))]
    assert order == [f"block_{i}" for i in range(1, 13)]
    by_name = dict(sorted(configs.items()))  # block_1, block_10, block_11, block_12, block_2, ...: not run order
    assert [name for name, _ in factory.attached_blocks(by_name)] == order
    assert factory.attached_blocks({"block_3": None, "block_1": "a", "x": "b"}) == [("block_1", "a")]


# --- given values ---------------------------------------------------------------------------------


def test_given_values_widgets_json_and_links():
    specs = spec_list(InputParam("n", type_hint=int, default=1), InputParam("x"), InputParam("y"),
                      InputParam("t", type_hint=torch.Tensor))
    given = values.given_values(specs, {"n": 3, "x": " [1, 2] ", "y": "", "y_link": "from a link", "t": None})
    assert given == {"n": 3, "x": [1, 2], "y": "from a link"}  # empty JSON and unconnected sockets are not given
    assert values.given_values(specs, {"n": 0, "x": "1", "x_link": 5})["x"] == 5  # a link overrides the widget


def test_a_declared_input_named_like_a_link_socket_keeps_its_own_meaning():
    specs = spec_list(InputParam("x"), InputParam("x_link", type_hint=int, default=4))
    required, optional = values.input_types(specs, [])
    assert required["x_link"][0] == "INT" and "x_link" not in optional  # no second, any-typed x_link
    assert values.given_values(specs, {"x": "1", "x_link": 4}) == {"x": 1, "x_link": 4}
    component = spec_list(InputParam("unet"))  # a JSON input next to a component named unet_link
    comps = [params.ParamSpec(name="unet_link", kind="component", type_hint=None)]
    assert "unet_link" not in values.link_sockets(component, comps)


def test_json_errors_name_the_widget():
    specs = spec_list(InputParam("x"), InputParam("n", type_hint=int))
    assert values.json_errors(specs, {"x": "1", "n": 2}) == []
    (error,) = values.json_errors(specs, {"x": "{'a': 1}", "n": 2})
    assert error.startswith("x: not valid JSON") and "[1, 2]" in error


# --- widgets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared, expected", [
    (InputParam("k", type_hint=int, metadata={"min": 1}), 1),
    (InputParam("k", type_hint=int, metadata={"max": -3}), -3),
    (InputParam("k", type_hint=int, default=5, metadata={"min": 1}), 5),
    (InputParam("f", type_hint=float, metadata={"min": 0.5, "max": 2.0}), 0.5),
    (InputParam("f", type_hint=float), 0.0),
])
def test_number_widgets_start_inside_their_limits(declared, expected):
    kind, opts = values.widget_entry(spec_list(declared)[0])
    assert opts["default"] == expected and type(opts["default"]) is (int if kind == "INT" else float)


def test_widgets_from_declarations():
    choices = values.widget_entry(spec_list(InputParam("s", type_hint=str, default="b", metadata={"choices": ["a", "b"]}))[0])
    assert choices == (["a", "b"], {"default": "b", "tooltip": "type: str"})
    json_widget = values.widget_entry(spec_list(InputParam("x", default=[1], description="Things."))[0])
    assert json_widget[0] == "STRING" and json_widget[1]["default"] == "" and "default [1]" in json_widget[1]["placeholder"]
    assert values.widget_entry(spec_list(InputParam("t", type_hint=torch.Tensor))[0]) is None  # a socket only


def test_any_type_matches_every_type_as_comfyuis_does():
    assert values.ANY == "*" and not (values.ANY != "LATENT") and not (values.ANY != "*")
    assert json.dumps({"t": values.ANY}) == '{"t": "*"}'


def test_pure_modules_import_no_comfyui():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from conftest import import_pack_module\n"
        "import_pack_module('nodes.factory'); import_pack_module('nodes.widgets'); import_pack_module('nodes.diffusers')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'nodes', 'server', 'folder_paths', 'comfy_api')]\n"
        "assert not bad, bad\n"
        "assert %r in sys.modules\n" % (str(ROOT / "tests"), PACK_PACKAGE)
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT / "tests"))
