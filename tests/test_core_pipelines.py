"""Core tier, diffusers' own pipelines without ComfyUI: discovery of its shipped classes from source, model
folder checks, the components one run sees and carries, latent scaling, seeds. (The node chains against
diffusers' own pipeline runs are in the host tier, test_diffusers.py.)"""

import importlib
import inspect
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import import_pack_module
from modular import ConfigError, compat, copy_state
from modular.core.params import input_specs
from modular.pipelines.params import call_input_specs
from modular.core.state import seed_state, ValueSource
from modular.pipelines import scan as shipped
from modular.pipelines.latents import from_host_latent, to_host_latent
from modular.pipelines.load import PipelineLoadError, check_folder
from modular.pipelines.run import RunComponents


def test_source_discovery_agrees_with_the_imported_classes():
    found = shipped.scan()
    assert len([c for c in found if c.role == "loop"]) >= 59 and len([c for c in found if c.role == "block"]) >= 107
    seen = set()
    for c in found:
        cls = getattr(importlib.import_module(c.module), c.name)
        assert compat.role_of(cls) == ("loop" if c.role == "loop" else "block"), c
        assert bool(compat.default_blocks(cls)) == c.default_blocks, c
        seen.add((c.module, c.name))
    root = shipped.package_dir()
    for family in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for path in family.glob("*.py"):
            if path.stem in shipped.NOT_BLOCKS or path.stem.startswith("modular_blocks"):
                continue
            module = importlib.import_module(f"{shipped.PACKAGE}.{family.name}.{path.stem}")
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and compat.role_of(cls):
                    assert (module.__name__, name) in seen, (module.__name__, name)


def test_guiders_found_from_source_are_diffusers_guiders():
    import diffusers.guiders

    names = {g.name for g in shipped.scan_guiders()}
    expected = {n for n, c in inspect.getmembers(diffusers.guiders, inspect.isclass)
                if issubclass(c, diffusers.guiders.BaseGuidance) and c is not diffusers.guiders.BaseGuidance}
    assert names == expected and len(names) >= 12


def test_a_shipped_entry_imports_its_class_only_when_used(tmp_path, monkeypatch):
    from modular.core.registry import Registry
    from modular.pipelines.scan import add_shipped

    family = tmp_path / "fake_diffusers_pipelines" / "fam"
    family.mkdir(parents=True)
    (family.parent / "__init__.py").write_text("")
    (family / "__init__.py").write_text("")
    (family / "denoise.py").write_text(
        "from diffusers.modular_pipelines import LoopSequentialPipelineBlocks, ModularPipelineBlocks\n"
        "class W(LoopSequentialPipelineBlocks):\n    def __call__(self, components, state):\n        pass\n"
        "class B(ModularPipelineBlocks):\n    def __call__(self, components, block_state, i, t):\n        pass\n"
        "class Sub(W):\n    block_classes = [B]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(shipped, "PACKAGE", "fake_diffusers_pipelines")
    found = {c.name: c for c in shipped.scan(family.parent)}
    assert found["W"].role == "loop" and found["B"].role == "block" and found["Sub"].default_blocks
    registry = add_shipped(Registry(), family.parent)
    entry = registry.entries["B"]
    assert (entry.role, entry.origin, entry.group) == ("block", "diffusers", "fam/denoise")
    assert registry.entries["Sub"].default_blocks and not registry.entries["W"].default_blocks
    assert "fake_diffusers_pipelines.fam.denoise" not in sys.modules  # found, listed: nothing imported
    cls = entry.cls
    assert "fake_diffusers_pipelines.fam.denoise" in sys.modules and cls.__name__ == "B"
    assert compat.role_of(cls) == "block" and entry.cls is cls  # imported once
    monkeypatch.delitem(sys.modules, "fake_diffusers_pipelines.fam.denoise")


def test_source_reading_is_exact_where_a_regex_is_not(tmp_path):
    # A multi-line string with a column-0 line inside a class body, and a nested class's __call__, must not end
    # or lend a __call__ to the class around them.
    (tmp_path / "fam").mkdir()
    (tmp_path / "fam" / "before_denoise.py").write_text(
        "class Step(ModularPipelineBlocks):\n"
        "    description = \"\"\"first line\nclass NotAClass(ModularPipelineBlocks):\n\"\"\"\n"
        "    def __call__(self, components, state):\n        pass\n"
        "class Holder(ModularPipelineBlocks):\n"
        "    class Inner:\n        def __call__(self):\n            pass\n")
    found = {c.name: c for c in shipped.scan(tmp_path)}
    assert set(found) == {"Step"} and found["Step"].role == "step"


def test_diffusers_ui_templates_type_untyped_inputs():
    from diffusers.modular_pipelines import InputParam

    specs = {s.name: s for s in call_input_specs([
        InputParam("prompt"), InputParam("height"), InputParam("generator"), InputParam("output_type", default="pil"),
        InputParam("batch_size", type_hint=int, required=True), InputParam("num_inference_steps", default=50)],
        templates=compat.ui_templates())}
    assert specs["prompt"].kind == "str" and specs["prompt"].options["unset"] == "" and specs["prompt"].options["multiline"]
    assert specs["height"].kind == "int" and specs["height"].options["unset"] == 0  # 0: the state's value
    assert specs["generator"].kind == "seed" and specs["generator"].options["unset"] == -1
    assert specs["output_type"].kind == "str" and specs["output_type"].options["choices"] == ["np", "pil", "pt"]
    assert specs["num_inference_steps"].kind == "int" and specs["num_inference_steps"].options["unset"] == 50
    assert specs["batch_size"].kind == "object"  # an earlier step writes it: a socket, never a widget's 0


def test_a_call_value_is_given_once_and_read_from_the_state_after():
    # diffusers' pipe(num_images_per_prompt=2) sets it once; every block reads it from the state. A step node's
    # widget at its declared default is not given, so it does not put back 1 after an earlier node gave 2.
    from diffusers.modular_pipelines import InputParam

    widgets = import_pack_module("nodes.widgets")
    declared = [InputParam("num_images_per_prompt", default=1), InputParam("strength", default=0.3),
                InputParam("use_kv_cache", default=True), InputParam("output_type", default="pil"),
                InputParam("prompt", type_hint=str), InputParam("height", type_hint=int),
                InputParam("generator", type_hint=torch.Generator)]
    specs = call_input_specs(declared, templates=compat.ui_templates())
    unset = {"num_images_per_prompt": 1, "strength": 0.3, "use_kv_cache": True, "output_type": "pil", "prompt": "",
             "height": 0, "generator": -1}
    assert widgets.given_values(specs, unset) == {}
    given = {"num_images_per_prompt": 2, "strength": 0.5, "use_kv_cache": False, "output_type": "pt",
             "prompt": "a cat", "height": 64, "generator": 3}
    values = widgets.given_values(specs, given)
    assert set(values) == set(given) and values["num_images_per_prompt"] == 2 and values["use_kv_cache"] is False
    assert values["generator"] == 3  # a seed: the state gets a seeded torch.Generator (params.to_state_value)
    # Every widget starts at its unset value, and says so.
    for spec in specs:
        kind, opts = widgets.widget_entry(spec)
        assert opts["default"] == (-1 if spec.kind == "seed" else unset[spec.name]), spec.name
        assert "not given" in opts["tooltip"] or "-1: the incoming state's" in opts["tooltip"], spec.name
    # Without the rule (a pack's or a user's block), a widget is always given.
    plain = input_specs([InputParam("num_images_per_prompt", type_hint=int, default=1)])
    assert widgets.given_values(plain, {"num_images_per_prompt": 1}) == {"num_images_per_prompt": 1}


def test_call_values_have_sane_limits():
    from diffusers.modular_pipelines import InputParam

    widgets = import_pack_module("nodes.widgets")
    specs = {s.name: s for s in call_input_specs([
        InputParam("num_images_per_prompt", default=1), InputParam("num_inference_steps", default=50),
        InputParam("height"), InputParam("width", type_hint=int, default=1024), InputParam("num_frames", default=81),
        InputParam("num_reference_images", default=0)], templates=compat.ui_templates())}
    limits = {name: (o["min"], o["max"]) for name, (_, o) in ((n, widgets.widget_entry(s)) for n, s in specs.items())}
    assert limits["num_images_per_prompt"] == (1, 4096) and limits["num_inference_steps"][0] == 1
    assert limits["height"] == (0, widgets.MAX_RESOLUTION) and limits["width"][1] == widgets.MAX_RESOLUTION
    assert limits["num_frames"][0] == 1 and limits["num_reference_images"][0] == 0
    # ComfyUI's limits, not a slider's: KSampler's 10000 steps and cfg 100, Apply ControlNet's strength 10
    assert limits["num_inference_steps"] == (1, 10000), limits


def test_a_workflow_nodes_limits_are_comfyuis_and_computed_values_are_tucked_away():
    from modular.core.registry import Registry
    from modular.pipelines.scan import add_shipped

    widgets = import_pack_module("nodes.widgets")
    entries = add_shipped(Registry()).entries
    sdxl = {s.name: s for s in entries["StableDiffusionXLAutoBlocks"].input_specs()}
    entry = {n: widgets.widget_entry(s) for n, s in sdxl.items()}
    assert entry["num_inference_steps"][1]["max"] == 10000
    assert entry["controlnet_conditioning_scale"][1]["max"] == 10.0
    for name in ("latents", "image_latents", "dtype", "clip_skip"):  # computed by a step, or rarely set
        assert sdxl[name].options.get("advanced"), name
    wan = {s.name: widgets.widget_entry(s) for s in entries["WanBlocks"].input_specs()}
    assert wan["max_sequence_length"][1]["max"] <= 8192
    factory = import_pack_module("nodes.factory")
    node = factory.make_node(entries["StableDiffusionXLAutoBlocks"], import_pack_module("nodes.diffusers.blocks").PipelineWorkflowNode)
    assert node.VALIDATE_INPUTS(height=8, width=0).startswith("height: 8 is not a size"), "1 .. 15 px refused"
    assert node.VALIDATE_INPUTS(height=0, width=64) is True  # 0: the pipeline's default


def test_a_seed_given_for_generator_is_a_seeded_generator_and_copies_step_apart():
    from diffusers.modular_pipelines import InputParam, ModularPipelineBlocks

    class Draw(ModularPipelineBlocks):
        @property
        def inputs(self):
            return [InputParam("generator")]

        def __call__(self, components, state):
            return components, state

    state, _ = seed_state(Draw(), [ValueSource("node", Draw().inputs, {"generator": 5})])
    generator = state.get("generator")
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=torch.Generator().manual_seed(5)))
    copy = copy_state(state)
    a = torch.randn(2, generator=copy.get("generator"))
    b = torch.randn(2, generator=state.get("generator"))
    assert torch.equal(a, b)  # the copy continues the same stream, without moving the original's


def make_folder(root, index, files):
    root.mkdir(parents=True, exist_ok=True)
    if index is not None:
        (root / "model_index.json").write_text(json.dumps(index))
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x80\x04not really")
    return root


INDEX = {"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "scheduler": ["diffusers", "EulerDiscreteScheduler"], "image_encoder": [None, None]}


def test_an_ip_adapter_file_is_a_safetensors_file_inside_the_folder(tmp_path):
    from modular.pipelines.load import ip_adapter_file

    folder = make_folder(tmp_path / "p", INDEX, ["ip_adapter/ip.safetensors", "ip_adapter/ip.bin"])
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    assert ip_adapter_file(folder, "ip_adapter/ip.safetensors") == ("ip_adapter", "ip.safetensors")
    for name, words in (("ip_adapter/ip.bin", "no IP-Adapter file"), ("ip_adapter/none.safetensors", "no IP-Adapter"),
                        ("../outside.safetensors", "inside the pipeline folder"),
                        (str(tmp_path / "outside.safetensors"), "inside the pipeline folder")):
        with pytest.raises(PipelineLoadError, match=words):
            ip_adapter_file(folder, name)


def test_model_folders_that_are_refused(tmp_path):
    with pytest.raises(PipelineLoadError, match="no model_index.json"):
        check_folder(make_folder(tmp_path / "a", None, ["unet/config.json"]))
    with pytest.raises(PipelineLoadError, match="component 'scheduler'.*subfolder scheduler/ is missing"):
        check_folder(make_folder(tmp_path / "b", INDEX, ["unet/diffusion_pytorch_model.safetensors"]))
    with pytest.raises(PipelineLoadError, match=r"'unet' has weights only as pickle files \(diffusion_pytorch_model.bin\)"):
        check_folder(make_folder(tmp_path / "c", INDEX, ["unet/diffusion_pytorch_model.bin", "scheduler/x.json"]))
    ok = make_folder(tmp_path / "d", INDEX, ["unet/diffusion_pytorch_model.safetensors", "unet/extra.bin",
                                              "scheduler/scheduler_config.json"])
    assert set(check_folder(ok)) == {"unet", "scheduler"}  # [null, null] entries are nothing to load
    configs = make_folder(tmp_path / "f", dict(INDEX, distilled_sigmas=[1.0, 0.5], pair=["a", 1]),
                          ["unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"])
    assert set(check_folder(configs)) == {"unet", "scheduler"}  # config values that are pairs (Cosmos distilled)
    remote = dict(INDEX, unet=["diffusers", "UNet2DConditionModel", {"pretrained_model_name_or_path": "org/repo"}])
    with pytest.raises(PipelineLoadError, match="read from 'org/repo', not from this folder"):
        check_folder(make_folder(tmp_path / "e", remote, ["scheduler/scheduler_config.json"]))


def test_a_runs_scheduler_and_guider_are_its_own_and_travel_in_the_state():
    from diffusers import EulerDiscreteScheduler
    from diffusers.guiders import ClassifierFreeGuidance

    pipeline = types.SimpleNamespace(scheduler=EulerDiscreteScheduler(), guider=ClassifierFreeGuidance(), unet=None)
    state = compat.PipelineState()
    first = RunComponents(pipeline)
    first.bind_state(state)
    first.scheduler.set_timesteps(3)
    assert first.scheduler is not pipeline.scheduler and len(pipeline.scheduler.timesteps) != 3  # the pipeline: untouched
    nxt = copy_state(state)  # what the next node starts from
    second = RunComponents(pipeline)
    second.bind_state(nxt)
    assert len(second.scheduler.timesteps) == 3 and second.scheduler is not first.scheduler  # carried, as a copy
    given = ClassifierFreeGuidance(guidance_scale=2.0)
    third = RunComponents(pipeline, {"guider": given})
    third.bind_state(copy_state(nxt))
    assert third.guider is given and third.unet is None


def test_latents_convert_with_the_vae_scaling_and_shift():
    pipeline = types.SimpleNamespace(vae=types.SimpleNamespace(config=types.SimpleNamespace(scaling_factor=1.5,
                                                                                            shift_factor=0.25)))
    latents = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    host = to_host_latent(pipeline, latents)
    assert torch.allclose(host, latents / 1.5 + 0.25, atol=1e-6)  # (float32 rounding near 0: not relative)
    assert torch.allclose(from_host_latent(pipeline, host), latents, atol=1e-6)
    with pytest.raises(Exception, match="packs them"):
        to_host_latent(pipeline, torch.zeros(1, 16, 64))


def test_a_folder_that_ships_code_is_refused_and_its_code_never_runs(tmp_path):
    from modular.pipelines.load import load_pipeline

    folder = make_folder(tmp_path / "code", {"_class_name": "StableDiffusionXLPipeline",
                                             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}, [])
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "EulerDiscreteScheduler"}))
    ran = tmp_path / "ran"
    (folder / "blocks.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    (folder / "modular_config.json").write_text(json.dumps({"_class_name": "MyBlocks",
                                                            "auto_map": {"ModularPipelineBlocks": "blocks.MyBlocks"}}))
    with pytest.raises(PipelineLoadError, match="could not make a pipeline"):
        load_pipeline(folder)
    assert not ran.exists()


def test_hooks_a_run_put_on_the_model_are_removed_after_it_even_when_it_failed():
    from diffusers.hooks import HookRegistry, ModelHook

    from modular.core.compat import hook_names

    unet = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    HookRegistry.check_if_exists_or_initialize(unet[0]).register_hook(ModelHook(), "users_own")  # there before
    pipeline = types.SimpleNamespace(unet=unet)
    run = RunComponents(pipeline)
    try:
        HookRegistry.check_if_exists_or_initialize(unet[1]).register_hook(ModelHook(), "guiders_layer_skip")  # a step
        raise RuntimeError("the step failed before the guider removed its hook")
    except RuntimeError:
        pass
    finally:
        run.cleanup()
    assert hook_names(unet) == {"users_own"}


def test_host_media_become_what_diffusers_takes_and_bad_media_are_named():
    from diffusers.modular_pipelines import InputParam
    from PIL import Image

    from modular.pipelines.params import media_kind

    widgets = import_pack_module("nodes.widgets")
    ConfigError = import_pack_module("modular").ConfigError  # the pack's, as the adapter imports it
    assert media_kind("image", None, compat.ui_templates().get("image")) == "image"
    assert media_kind("mask_image", None) == "mask" and media_kind("prompt", None) is None
    assert media_kind("video", list[Image.Image]) == "video" and media_kind("control_image", Image.Image) == "image"
    specs = call_input_specs([InputParam("image"), InputParam("mask_image"), InputParam("height"),
                         InputParam("control_image", type_hint=Image.Image),
                         InputParam("ip_adapter_image", type_hint=Image.Image | list[Image.Image])],
                        templates=compat.ui_templates())
    kinds = {s.name: (s.kind, s.options.get("many")) for s in specs}
    assert kinds["image"] == ("image", True) and kinds["mask_image"] == ("mask", True)
    assert kinds["control_image"] == ("image", False) and kinds["ip_adapter_image"] == ("image", True)
    _, optional = widgets.input_types(specs, [])
    assert optional["image"][0] == "IMAGE" and optional["mask_image"][0] == "MASK"
    image = torch.rand(2, 8, 6, 3)
    mask = torch.zeros(1, 8, 6)
    mask[:, :, :3] = 1.0
    given = widgets.given_values(specs, {"image": image, "mask_image": mask, "control_image": image[:1], "height": 0})
    assert [im.size for im in given["image"]] == [(6, 8), (6, 8)] and given["image"][0].mode == "RGB"
    pixels = torch.tensor(list(given["image"][1].getdata())).reshape(8, 6, 3).float() / 255
    assert (pixels - image[1]).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit, rounded
    assert given["mask_image"].mode == "L" and given["mask_image"].getpixel((0, 0)) == 255  # 1 = repaint, one mask
    assert given["mask_image"].getpixel((5, 0)) == 0 and isinstance(given["control_image"], Image.Image)
    # Load Image's empty 64x64 mask (an image without alpha) is named as such, with what to do
    with pytest.raises(ConfigError, match="empty 64x64 mask.*mask editor"):
        widgets.given_values(specs, {"image": image, "mask_image": torch.zeros(1, 64, 64), "height": 0})
    # a batch of one is one image where the input takes one (untyped, Image | list[Image]: as a diffusers user
    # passes it; Hunyuan's and Cosmos' image-to-video steps take no list), a list where it takes only lists
    one = widgets.given_values(specs, {"image": image[:1], "ip_adapter_image": image[:1], "height": 0})
    assert isinstance(one["image"], Image.Image) and isinstance(one["ip_adapter_image"], Image.Image)
    listed = call_input_specs([InputParam("image", type_hint=list[Image.Image])])
    assert isinstance(widgets.given_values(listed, {"image": image[:1]})["image"], list)
    # without a mask an image of another size than asked is resized by diffusers' image processor, as pipe() does
    assert widgets.given_values(specs, {"image": image, "height": 16})["image"][0].size == (6, 8)
    assert media_kind("video", None) == "video" and media_kind("control_video", None) == "video"
    bad = [({"control_image": image}, "takes one image, got a batch of 2"),
           ({"image": torch.rand(1, 8, 6, 4)}, "RGBA"),
           ({"image": torch.rand(0, 8, 6, 3)}, "holds no images"),
           ({"image": image, "mask_image": torch.zeros(1, 4, 4)}, "a mask is of its image's size"),
           ({"image": image, "mask_image": mask, "height": 16}, "leave height / width at 0")]
    for values, words in bad:
        with pytest.raises(ConfigError) as e:
            widgets.given_values(specs, {"height": 0, **values}, label="StableDiffusionXLAutoBlocks")
        assert words in str(e.value) and "StableDiffusionXLAutoBlocks" in str(e.value), e.value


def test_union_and_list_hints_take_what_they_declare():
    from PIL import Image

    from modular.core.params import ParamSpec, check_value

    union = ParamSpec("image", "image", Image.Image | list[Image.Image])
    picture = Image.new("RGB", (2, 2))
    assert check_value(union, picture) is None and check_value(union, [picture]) is None
    assert "expected" in check_value(union, "a cat")
    assert check_value(ParamSpec("t", "object", torch.Tensor | list), [1]) is None


def test_every_named_workflow_of_diffusers_has_a_tiny_folder_or_a_reason():
    # tests/fixtures/tiny/<family>.py: every Auto blocks class with a _workflow_map (read from the installed
    # diffusers) is declared, each of its workflows with a call or the reason it is not run; a new diffusers
    # workflow fails here until it has one.
    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    import tiny

    declared = {}
    for name in tiny.families():
        module = tiny.family(name)
        for blocks, spec in module.WORKFLOWS.items():
            declared[blocks] = (name, spec)
            assert spec["folder"] in module.FOLDERS, (name, blocks)
            for workflow, call in spec["workflows"].items():
                assert isinstance(call, (dict, str)) and call, (name, blocks, workflow)
    found = shipped.scan_workflows()
    named = [c for c in found if c.workflows != (shipped.DEFAULT_WORKFLOW,)]
    assert len(named) == 30 and sum(len(c.workflows) for c in named) == 94
    for c in named:
        assert c.name in declared and declared[c.name][0] == c.family, c.name
        assert set(declared[c.name][1]["workflows"]) == set(c.workflows), c.name
    # a pipeline's default blocks that name no workflows: the one "default" chain (Wan 2.1, Echo, MiniMax Music)
    defaults = {c.name for c in found} - {c.name for c in named}
    assert {"WanBlocks", "EchoBlocks", "MiniMaxMusic3Blocks", "WanAnimate2Blocks", "Wan22Blocks"} <= defaults
    for blocks, (_, spec) in declared.items():
        assert blocks in {c.name for c in found}, blocks
        if blocks in defaults:
            assert set(spec["workflows"]) == {shipped.DEFAULT_WORKFLOW}, blocks
    assert len({family for family, _ in declared.values()}) == 22  # with the families that name no workflows


def test_a_video_familys_frame_rate_is_read_from_its_example_code():
    # Wan 2.1 declares no fps: its pipeline's example exports at 16, read as code (a call that spans lines too)
    doc = 'EXAMPLE = """\n    >>> video = pipe(prompt="a (cat)")\n    >>> export_to_video(\n    ...     video, "out.mp4",\n    ...     fps=24)\n"""\n'
    assert shipped.example_fps(doc) == 24.0 and shipped.example_fps("x = 1") is None
    assert shipped.family_frame_rate("wan") == 16.0 and shipped.shipped().frame_rates["wan"] == 16.0


def guider_properties() -> dict:
    """{(family, pipeline class): [its properties that read `self.guider`]} of diffusers' own pipeline classes."""
    from diffusers.modular_pipelines import ModularPipeline

    found = {}
    for family in sorted(p.name for p in shipped.package_dir().iterdir() if (p / "modular_pipeline.py").is_file()):
        module = importlib.import_module(f"diffusers.modular_pipelines.{family}.modular_pipeline")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, ModularPipeline):
                props = [k for k, v in vars(cls).items()
                         if isinstance(v, property) and "self.guider" in inspect.getsource(v.fget)]
                if props:
                    found[(family, name)] = props
    return found


def test_what_a_block_asks_of_components_sees_the_runs_own_guider():
    # diffusers' text encoder steps ask `components.requires_unconditional_embeds`, a property of the family's
    # pipeline reading `self.guider`: through a run's components it must read the run's guider (a guider node's),
    # not the loaded pipeline's, exactly as `pipe.update_components(guider=...)` makes it for diffusers' own call.
    from diffusers.guiders import ClassifierFreeGuidance

    found, changed = guider_properties(), set()
    for (family, name), props in found.items():
        cls = getattr(importlib.import_module(f"diffusers.modular_pipelines.{family}.modular_pipeline"), name)
        for pipeline_on in (False, True):
            pipe = cls()
            pipe.update_components(guider=ClassifierFreeGuidance(guidance_scale=3.0, enabled=pipeline_on))
            given = ClassifierFreeGuidance(guidance_scale=3.0, enabled=not pipeline_on)
            run = RunComponents(pipe, {"guider": given})
            reference = cls()
            reference.update_components(guider=given)
            for prop in props:
                assert getattr(run, prop) == getattr(reference, prop), (family, name, prop, pipeline_on)
                if getattr(reference, prop) != getattr(pipe, prop):  # a distilled Flux 2 Klein never asks
                    changed.add(family)
            assert run.components.get("guider") is reference.components.get("guider"), (family, name)
    # the guider decides it in every family that has such a property (diffusers 0.42.1: z_image, qwenimage, wan, ...)
    assert len(changed) >= 12, sorted(changed)


def test_diffusers_declarations_are_read_once_and_list_as_the_live_ones(tmp_path, monkeypatch):
    # A start keeps what it read of diffusers (its classes from source, each node's INPUT_TYPES and DESCRIPTION) in
    # one file; the next start of the same diffusers and pack parses no source and imports no diffusers class to list
    # its nodes, and lists exactly what the live declarations give.
    from modular.core.registry import discover
    from modular.pipelines import scan as scan_module
    from modular.pipelines.declarations import DeclarationCache

    factory, pipelines = import_pack_module("nodes.factory"), import_pack_module("nodes.diffusers")
    listing = import_pack_module("nodes.listing")

    def build(cache):
        scan_module._found = None  # a new process
        registry = scan_module.add_shipped(discover(include_pack=False), cache=cache)
        classes = {nid: n.cls for nid, n in factory.generate_nodes(registry, (pipelines.entry_nodes,)).items()}
        return {**classes, **{nid: cls for nid, (cls, _) in pipelines.guider_nodes().items()}}

    first = DeclarationCache(tmp_path, key="diffusers-and-pack")
    classes = build(first)
    live = {nid: (cls.INPUT_TYPES(), cls.DESCRIPTION) for nid, cls in classes.items()}
    assert listing.keep(classes, first) == len(classes) > 500
    first.save()

    def no_reading(*args, **kwargs):
        raise AssertionError("a start with kept declarations read diffusers' source or imported its classes")

    monkeypatch.setattr(scan_module, "class_statements", no_reading)
    monkeypatch.setattr(scan_module.ShippedClass, "load", no_reading)
    monkeypatch.setattr(scan_module.ShippedGuider, "load", no_reading)
    second = DeclarationCache(tmp_path, key="diffusers-and-pack")
    again = build(second)
    assert listing.keep(again, second) == 0
    kept = second.section(listing.SECTION)
    assert len(kept) >= 0.95 * len(classes), sorted(set(classes) - set(kept))  # the rest list themselves live
    for nid in kept:
        assert (again[nid].INPUT_TYPES(), again[nid].DESCRIPTION) == live[nid], nid
    monkeypatch.undo()
    assert DeclarationCache(tmp_path, key="another diffusers").fresh  # read again when diffusers changes
    scan_module._found = None


def test_an_image_batch_the_prompts_cannot_pair_with_is_named_before_anything_runs():
    # 3 images into SDXL image-to-image with one prompt: diffusers runs both encoders and dies in the denoiser on a
    # tensor size ("48 must match 16"); the workflow names the image batch and the prompt's before running a step.
    from diffusers.modular_pipelines import StableDiffusionXLAutoBlocks
    from PIL import Image

    from modular.pipelines.run import run_workflow

    images = [Image.new("RGB", (32, 32), (k * 60, 0, 0)) for k in range(3)]
    with pytest.raises(ConfigError) as e:  # components=None: it would fail at its first step
        run_workflow(StableDiffusionXLAutoBlocks, "image2image", {"prompt": "a cat", "image": images}, label="SDXL")
    assert "'image' is a batch of 3 images, but the prompt gives a batch of 1" in str(e.value), e.value
    from modular.pipelines.run import check_batches, named_chain

    chain = named_chain(StableDiffusionXLAutoBlocks, "image2image", "SDXL")
    check_batches(chain, {"prompt": ["a", "b", "c"], "image": images}, "SDXL")  # one prompt per image: fine
    check_batches(chain, {"prompt": "a cat", "image": images, "num_images_per_prompt": 6}, "SDXL")
    check_batches(chain, {"prompt": "a cat", "image": images[:1]}, "SDXL")


def test_pipelines_in_the_local_hugging_face_cache_are_listed_and_nothing_else(tmp_path):
    # huggingface_hub's own cache scan (it reads the folder; nothing is fetched): a model repository whose snapshot
    # has an index file is a pipeline (its `main` revision); a repository of one model, or a dataset, is not.
    from modular.pipelines.load import cached_pipelines

    def repo(kind, name, files, revisions=("a" * 40,), main=0):
        folder = tmp_path / f"{kind}s--{name.replace('/', '--')}"
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(revisions[main])
        for commit in revisions:
            snapshot = folder / "snapshots" / commit
            snapshot.mkdir(parents=True)
            for file in files:
                blob = folder / "blobs" / f"{commit}-{file.replace('/', '_')}"
                blob.write_text("{}")
                (snapshot / file).parent.mkdir(parents=True, exist_ok=True)
                (snapshot / file).symlink_to(blob)
        return folder

    pipe = repo("model", "org/tiny-pipe", ["model_index.json", "unet/config.json"], ("a" * 40, "b" * 40), main=1)
    repo("model", "org/one-model", ["config.json"])
    repo("dataset", "org/data", ["model_index.json"])
    assert cached_pipelines(tmp_path) == {"org/tiny-pipe": pipe / "snapshots" / ("b" * 40)}
    assert cached_pipelines(tmp_path / "nowhere") == {}


def test_a_calls_values_seed_the_state_as_diffusers_own_call_does():
    # compat.seed_call is marked as a copy of ModularPipeline.__call__'s seeding: the state it makes is the one
    # diffusers' own pipe(state=..., **values) runs its blocks on (a kwargs_type group given as one dict included).
    from diffusers.modular_pipelines import ModularPipeline, StableDiffusionXLAutoBlocks

    chain = compat.workflow_chain(StableDiffusionXLAutoBlocks(), "text2image")

    class Seeded:  # diffusers' call with blocks that only hand back the state they are given
        inputs = chain.inputs

        def __call__(self, components, state):
            return components, state

    pipe = ModularPipeline.__new__(ModularPipeline)
    pipe._blocks = Seeded()
    start = compat.PipelineState()
    start.set("height", 48)
    values = {"prompt": "a cat", "num_inference_steps": 3, "width": 40, "denoiser_input_fields": {"extra": 1.5}}
    theirs = pipe(state=start, **values)
    ours = compat.seed_call(chain, copy_state(start), values)
    assert set(ours.values) == set(theirs.values) and ours.kwargs_mapping == theirs.kwargs_mapping
    assert all(ours.values[k] == theirs.values[k] for k in ours.values), ours.values
    assert ours.values["height"] == 48 and ours.values["extra"] == 1.5 and "denoiser_input_fields" in values


def test_a_workflow_node_shows_the_common_values_and_takes_the_rest_as_json():
    # SDXL's Auto blocks declare 75 inputs; the node shows the common ones and its media, the rest go in `more`
    # (as pipe(name=value) takes them), checked by name and type; tensors a step computes are for the steps.
    from modular.core.registry import Registry
    from modular.pipelines.params import more_values
    from modular.pipelines.scan import add_shipped

    blocks, factory = import_pack_module("nodes.diffusers.blocks"), import_pack_module("nodes.factory")
    entry = add_shipped(Registry()).entries["StableDiffusionXLAutoBlocks"]
    node = factory.make_node(entry, blocks.PipelineWorkflowNode)
    types = node.INPUT_TYPES()
    shown = {*types["required"], *types["optional"]}
    assert {"prompt", "generator", "num_images_per_prompt", "image", "mask_image", "more"} <= shown
    assert not {"clip_skip", "eta", "latents", "latents_link", "prompt_embeds", "dtype"} & shown
    inputs_of = types["required"]["workflow"][1]["inputs_of"]
    assert "image" not in inputs_of["text2image"] and {"image", "mask_image"} <= set(inputs_of["inpainting"])
    specs = entry.input_specs()
    assert more_values(specs, {"clip_skip": 2, "eta": 0.5}, "SDXL") == {"clip_skip": 2, "eta": 0.5}
    for more, words in (({"clip_skp": 2}, "'clip_skp': not a value of this call"),
                        ({"prompt": "a cat"}, "'prompt': set it on the node's own prompt input"),
                        ({"image_latents": [1]}, "'image_latents': a Tensor is not written as JSON"),
                        ({"eta": "high"}, "'eta': expected float"), ([1], "must be a JSON object")):
        with pytest.raises(ConfigError, match=words):
            more_values(specs, more, "SDXL")
