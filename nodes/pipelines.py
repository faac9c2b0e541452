"""diffusers' own pipelines as nodes (`modular/pipelines/`): its loops and steps (the generic loop node with a
pipeline's components, and a step node that runs one block on a state), Load Diffusers Pipeline (a local folder
of `models/diffusers/`), one node per diffusers guider, Diffusers Scheduler, and the nodes between a state and
ComfyUI's IMAGE / LATENT. ComfyUI's folder list is read only when the loader is listed or run."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os

from ..modular import LoopConfigError, check_value, copy_state
from ..modular.core import compat
from ..modular.core.errors import loop_where
from ..modular.core.params import ParamSpec
from ..modular.pipelines.latents import from_host_latent, to_host_latent
from ..modular.pipelines.load import INDEX_FILES, load_pipeline
from ..modular.pipelines.media import AUDIO_NAMES, audio_rate, host_audio
from ..modular.pipelines.run import (RunComponents, chain_block, check_guidance, check_timesteps, configured, run_step,
                                     run_workflow)
from ..modular.pipelines.scan import shipped
from . import widgets
from .factory import CATEGORY as PACK_CATEGORY, BlockNode, DeclaredNode, LoopNode, make_node, node_id
from .state_files import value_named
from .widgets import GUIDER_TYPE, PIPELINE_TYPE, SCHEDULER_TYPE, STATE_TYPE

CATEGORY = f"{PACK_CATEGORY}/diffusers"
log = logging.getLogger("modular_loops")
DTYPES = ("default", "float32", "float16", "bfloat16")
DEVICES = ("default", "cpu")  # default: ComfyUI's device, through its model management
MODELS_FOLDER = "diffusers"  # ComfyUI's folder for diffusers-format models (and its extra_model_paths entries)


def pipeline_folders() -> dict[str, str]:
    """{name shown: path} of the diffusers pipelines in ComfyUI's models/diffusers folders."""
    import folder_paths

    found = {}
    for root in folder_paths.get_folder_paths(MODELS_FOLDER):
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in INDEX_FILES):
                found.setdefault(name, path)
    return found


class LoadDiffusersPipeline:
    DESCRIPTION = ("Loads a diffusers pipeline folder from models/diffusers/ (as `save_pretrained` writes it: "
                   "model_index.json and a subfolder per component) as the family's modular pipeline, for the "
                   "diffusers step and loop nodes. Local files only, weights from .safetensors only, no code from "
                   "the folder.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (PIPELINE_TYPE,)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(pipeline_folders()) or ["(no pipeline in models/diffusers)"]
        return {"required": {"folder": (names, {"tooltip": "A folder of models/diffusers/."}),
                             "dtype": (list(DTYPES), {"default": "default", "tooltip": "The weights' dtype."})},
                "optional": {"device": (list(DEVICES), {"default": "default", "tooltip": (
                                 "default: ComfyUI's device (its model management loads the modules there when a node "
                                 "uses them and offloads them when others need the room); cpu: always on the CPU.")}),
                             "ip_adapter": ("STRING", {"default": "", "tooltip": (
                                 "An IP-Adapter's weights to load into the denoiser, for the ip_adapter_* workflows: a "
                                 ".safetensors file of the folder, e.g. ip_adapter/ip-adapter_sdxl.safetensors (the "
                                 "image encoder is the folder's image_encoder). Empty: none.")})}}

    def load(self, folder, dtype, device="default", ip_adapter=""):
        import torch

        from . import host

        path = pipeline_folders().get(folder)
        if path is None:
            raise LoopConfigError(f"Load Diffusers Pipeline: no pipeline folder '{folder}' in models/diffusers/")
        pipeline = load_pipeline(path, None if dtype == "default" else getattr(torch, dtype), ip_adapter.strip())
        host.set_pipeline_device(pipeline, None if device == "default" else torch.device(device))
        return (pipeline,)


class GuiderConfig:
    """A guider node's output: the class and its parameters; `make()` builds a fresh instance for each run."""

    def __init__(self, cls, params: dict):
        self.cls, self.params = cls, dict(params)

    def make(self):
        return self.cls(**self.params)


def parameter_specs(function) -> list[ParamSpec]:
    """The specs of a constructor's parameters, for the one widget builder (`widgets`): a bool, int, float or str
    default gives that widget, anything else a JSON widget (empty: the constructor's default)."""
    specs = []
    for name, p in inspect.signature(function).parameters.items():
        if name == "self" or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default), "json")
        specs.append(ParamSpec(name, kind, type(default) if kind != "json" else None, default,
                               required=p.default is inspect.Parameter.empty))
    return specs


def given_parameters(node: str, specs, kwargs) -> dict:
    """The values a node of `parameter_specs` was given; bad JSON is this node's error, naming the widget."""
    problems = widgets.json_errors(specs, kwargs)
    if problems:
        raise LoopConfigError(f"{node}: {'; '.join(problems)}")
    return widgets.given_values(specs, kwargs)


class GuiderNode:
    """One of diffusers' guiders, its constructor's parameters as widgets (JSON for the others)."""

    GUIDER = None  # a modular.pipelines.scan.ShippedGuider
    RETURN_TYPES = (GUIDER_TYPE,)
    RETURN_NAMES = ("guider",)
    FUNCTION = "make"
    CATEGORY = f"{CATEGORY}/guiders"

    @classmethod
    def specs(cls):
        return parameter_specs(cls.GUIDER.load().__init__)

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = widgets.input_types(cls.specs(), [])
        return {"required": required, "optional": optional}

    def make(self, **kwargs):
        config = GuiderConfig(self.GUIDER.load(), given_parameters(self.GUIDER.name, self.specs(), kwargs))
        config.make()  # a bad parameter is this node's error, now, not the loop's
        return (config,)


class SchedulerConfig:
    """A scheduler node's output: `make(pipeline)` builds the scheduler from the pipeline's scheduler config (as
    diffusers swaps schedulers: `Cls.from_config(pipe.scheduler.config)`), with the node's options on top."""

    def __init__(self, name: str, options: dict):
        self.name, self.options = name, dict(options)

    def make(self, pipeline=None):
        import diffusers

        cls = getattr(diffusers, self.name)
        base = getattr(pipeline, "scheduler", None)
        return cls.from_config(base.config, **self.options) if base is not None else cls(**self.options)


SCHEDULER_OPTIONS = ParamSpec("options", "json", dict, {}, description=(
    "Options for the scheduler, on top of the pipeline's scheduler config, e.g. {\"use_karras_sigmas\": true}."))


class DiffusersScheduler:
    DESCRIPTION = ("Any diffusers scheduler, built from the pipeline's own scheduler config (or the class's defaults) "
                   "with `options` (JSON) on top, e.g. {\"use_karras_sigmas\": true}. Connect it to the set-timesteps "
                   "step: the run steps with it from there on.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (SCHEDULER_TYPE,)
    RETURN_NAMES = ("scheduler",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        names = compat.scheduler_names()
        required, optional = widgets.input_types([SCHEDULER_OPTIONS], [])
        default = "EulerDiscreteScheduler" if "EulerDiscreteScheduler" in names else names[0]
        return {"required": {"scheduler": (names, {"default": default}), **required}, "optional": optional}

    def make(self, scheduler, **kwargs):
        options = given_parameters("Diffusers Scheduler", [SCHEDULER_OPTIONS], kwargs).get("options", {})
        reason = check_value(SCHEDULER_OPTIONS, options)
        if reason:
            raise LoopConfigError(f"Diffusers Scheduler: options must be a JSON object, e.g. "
                                  f"{{\"timestep_spacing\": \"trailing\"}} ({reason})")
        config = SchedulerConfig(scheduler, options)
        config.make()  # an unknown class or a bad option is this node's error
        return (config,)


def guider_nodes() -> dict:
    """{node id: (class, display name)} of one node per diffusers guider (nothing imported here)."""
    made = {}
    for guider in shipped().guiders:
        cls = type(f"ModularGuider_{guider.name}", (GuiderNode,), {
            "GUIDER": guider, "__module__": __name__,
            "DESCRIPTION": f"diffusers' {guider.name} (diffusers/guiders/{guider.module}.py): a fresh one each run."})
        made[f"ModularGuider_{guider.name}"] = (cls, guider.name)
    return made


class StateToImage:
    DESCRIPTION = ("The decoded images or video of a pipeline state as a ComfyUI IMAGE. diffusers' decode step "
                   "writes `images` (for Save Image, Preview Image) or, in a video family, `videos`: those come out "
                   "as their frames, one IMAGE batch [frames, H, W, C] (several videos: their frames one after "
                   "another), for Save Animated WEBP or Create Video, with `fps` the family's frame rate (0 for "
                   "stills). Decode with output_type \"pt\", \"np\" or \"pil\".")
    CATEGORY = f"{CATEGORY}"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("image", "fps")
    OUTPUT_TOOLTIPS = ("The images, or a video's frames (an IMAGE batch, float 0..1).",
                       "A video's frame rate: the state's `fps` / `frame_rate`, else the one diffusers declares for "
                       "the family, else the one diffusers' own examples export it at (Wan: 16); 0 for stills.")
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "images", "tooltip": (
            "The state value to convert: `images`, or `videos` for a video family (read also when `images` is "
            "asked and the state has only `videos`).")})}}

    def convert(self, state, key):
        held = compat.state_values(state)
        if key == "images" and key not in held and "videos" in held:
            key = "videos"  # a video family's decoder writes `videos`
        images, video = comfy_frames(value_named(state, key, "State To Image"), key)
        return (images, frame_rate(state) if video else 0.0)


def as_comfy_image(images, key="images"):
    """diffusers' decoded images or videos as ComfyUI's IMAGE: a float32 [B, H, W, C] tensor in 0..1 (a video:
    its frames, [F, H, W, C]; see `comfy_frames`)."""
    return comfy_frames(images, key)[0]


def _is_pil(value) -> bool:
    return hasattr(value, "convert") and hasattr(value, "mode") and hasattr(value, "size")


def _described(value) -> str:
    if hasattr(value, "shape"):
        name = type(value).__name__
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name} of shape {list(value.shape)}"
    if isinstance(value, (list, tuple)):
        inner = {_described(v) for v in value[:3]}
        return f"a {type(value).__name__} of {len(value)}" + (f" ({'; '.join(sorted(inner))}, ...)" if inner else "")
    return f"a {type(value).__name__}"


def comfy_frames(value, key="images"):
    """-> (IMAGE, is_video). diffusers' decoders give, by output_type: images as a [B, C, H, W] tensor ("pt"), a
    [B, H, W, C] array ("np") or a list of PIL images ("pil"); videos (a VideoProcessor's `postprocess_video`) as a
    [B, F, C, H, W] tensor, a [B, F, H, W, C] array or a list of B lists of F PIL frames (or a list of one
    [F, C, H, W] tensor / [F, H, W, C] array per video). All become a float32 [N, H, W, C] tensor in 0..1 on the
    CPU: the images, or every video's frames one after another (ComfyUI's video convention). Anything else, and a
    video of 0 frames, is a ValueError naming the node, the value and its shape."""
    import numpy as np
    import torch

    def refuse(why):
        raise ValueError(
            f"State To Image: '{key}' holds {_described(value)}, {why}. It takes decoded images ([B, C, H, W] tensor, "
            f"[B, H, W, C] array, PIL images) or videos ([B, F, C, H, W] tensor, [B, F, H, W, C] array, lists of PIL "
            f"frames) with 1, 3 or 4 channels: connect the decode step's state (output_type pt, np or pil)")

    def from_pil(images):
        return torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]))

    def frames(array, video: bool, batched: bool):
        """[N, H, W, C] of one array / tensor; `video`: it holds frames ([.., F, ...]); `batched`: a leading batch."""
        channels_last = isinstance(array, np.ndarray)
        if channels_last:
            scale = 255.0 if np.issubdtype(array.dtype, np.integer) else 1.0
            array = torch.from_numpy(np.ascontiguousarray(array)).float() / scale
        array = array.detach().float().cpu()
        if not channels_last:
            array = array.movedim(-3, -1)
        lead = array.shape[:-3]
        if len(lead) != int(video) + int(batched) or array.shape[-1] not in (1, 3, 4):
            refuse("neither images nor video frames")
        if video and (array.shape[-4] == 0):
            refuse("a video of 0 frames")
        if 0 in array.shape:
            refuse("no images")
        return array.reshape(-1, *array.shape[-3:])

    tensor_like = (np.ndarray, torch.Tensor)
    if _is_pil(value):
        return from_pil([value]), False
    if isinstance(value, tensor_like):
        if value.ndim not in (3, 4, 5):
            refuse("neither images nor video frames")
        return frames(value, video=value.ndim == 5, batched=value.ndim > 3).contiguous(), value.ndim == 5
    if isinstance(value, (list, tuple)) and value:
        if all(_is_pil(v) for v in value):
            return from_pil(value), False
        if all(isinstance(v, (list, tuple)) and all(_is_pil(f) for f in v) for v in value):
            if not all(value):
                refuse("a video of 0 frames")
            return from_pil([f for v in value for f in v]), True
        if all(isinstance(v, tensor_like) and v.ndim in (3, 4) for v in value):
            video = value[0].ndim == 4
            if any(v.ndim != value[0].ndim for v in value):
                refuse("a mix of images and videos")
            parts = [frames(v, video=video, batched=False) for v in value]
            if len({tuple(p.shape[1:]) for p in parts}) > 1:
                refuse("images or videos of different sizes")
            return torch.cat(parts).contiguous(), video
    if isinstance(value, (list, tuple)):
        refuse("no images" if not value else "neither images nor video frames")
    refuse("not decoded images")


FRAME_RATE_NAMES = ("fps", "frame_rate")  # what diffusers' blocks call a video's frame rate (Wan Animate, LTX)


def frame_rate(state) -> float:
    """The frame rate of the video a state holds: the state's own `fps` / `frame_rate` (what the run was given);
    else the family's (`family_frame_rate`) for the family of the loop that made the state; else diffusers'
    `export_to_video` default."""
    for name in FRAME_RATE_NAMES:
        value = compat.state_values(state).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    family = _loop_families().get(compat.made_by(state).get("loop"))
    rate = family_frame_rate(family) if family else None
    return float(rate or _export_default_fps())


@functools.lru_cache(maxsize=None)
def _loop_families() -> dict:
    """{loop wrapper class name: family folder} of diffusers' shipped loops (as the start read them)."""
    return {c.name: c.family for c in shipped().classes if c.role == "loop"}


@functools.lru_cache(maxsize=None)
def family_frame_rate(family: str) -> float | None:
    """A family's frame rate as diffusers gives it: the default of an input named `fps` / `frame_rate` that its
    modular blocks declare (`diffusers/modular_pipelines/<family>/`, e.g. LTX's 25); where none does (Wan 2.1
    declares none, neither in its blocks, its pipeline class nor its models' configs), the `fps=` its own
    text-to-video pipeline's example exports at (`diffusers/pipelines/<family>/pipeline_<family>.py`, Wan:
    `export_to_video(output, "output.mp4", fps=16)`, read with `example_fps`). Read from source; None when neither
    says."""
    import ast

    from ..modular.pipelines.scan import package_dir

    blocks = package_dir()
    for path in sorted((blocks / family).glob("*.py")) if blocks else ():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = getattr(node, "func", None)
            if not (isinstance(node, ast.Call) and getattr(called, "id", getattr(called, "attr", None)) == "InputParam"):
                continue
            named = {k.arg: k.value for k in node.keywords}
            name = node.args[0] if node.args else named.get("name")
            default = named.get("default")
            if (isinstance(name, ast.Constant) and name.value in FRAME_RATE_NAMES and isinstance(default, ast.Constant)
                    and isinstance(default.value, (int, float)) and not isinstance(default.value, bool)):
                return float(default.value)
    pipelines = package_dir("diffusers.pipelines")
    example = pipelines / family / f"pipeline_{family}.py" if pipelines else None
    if example is not None and example.is_file():
        return example_fps(example.read_text(encoding="utf-8"))
    return None


def example_fps(source: str) -> float | None:
    """The `fps=` of the first `export_to_video(...)` call in a module's usage examples: its string constants'
    doctest lines (`>>> ` / `... `), each example parsed as code with `ast` (a regex breaks on the first call that
    spans lines). None when none says."""
    import ast

    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and ">>> " in node.value):
            continue
        code = "\n".join(line.strip()[4:] for line in node.value.splitlines() if line.strip()[:4] in (">>> ", "... "))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for call in ast.walk(tree):
            name = getattr(getattr(call, "func", None), "id", getattr(getattr(call, "func", None), "attr", None))
            if isinstance(call, ast.Call) and name == "export_to_video":
                for keyword in call.keywords:
                    if keyword.arg == "fps" and isinstance(keyword.value, ast.Constant):
                        return float(keyword.value.value)
    return None


def _export_default_fps() -> float:
    """diffusers' `export_to_video` default frame rate (10 in 0.42.1): a video of no known family."""
    from diffusers.utils import export_to_video

    return float(inspect.signature(export_to_video).parameters["fps"].default)


class StateToAudio:
    DESCRIPTION = ("The decoded audio of a pipeline state as a ComfyUI AUDIO ({\"waveform\": [B, C, T], "
                   "\"sample_rate\"}), for Save Audio, Preview Audio, Create Video. diffusers' decoders write `audio` "
                   "(LTX-2, Echo, MiniMax-H3), `audios` (MiniMax Music) or `sound` (Cosmos); the rate is the state's "
                   "`sampling_rate`, else the pipeline's (its vocoder's output rate): connect the pipeline where the "
                   "state has none.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "audio", "tooltip": (
                    "The state value to convert (read also: `audios`, `sound`, when the state has no `audio`).")})},
                "optional": {"pipeline": (PIPELINE_TYPE, {"tooltip": "The pipeline that made it: its audio rate."})}}

    def convert(self, state, key, pipeline=None):
        held = compat.state_values(state)
        if key == AUDIO_NAMES[0] and key not in held:
            key = next((k for k in AUDIO_NAMES if held.get(k) is not None), key)
        label = f"State To Audio: '{key}'"
        waveform = host_audio(value_named(state, key, "State To Audio"), label)
        rate = audio_rate(held, pipeline)
        if rate is None:
            raise LoopConfigError(f"{label}: the state holds no sampling_rate; connect the pipeline that made it")
        return ({"waveform": waveform, "sample_rate": rate},)


class StateToLatent:
    DESCRIPTION = ("The latents of a pipeline state as a ComfyUI LATENT (undoing the pipeline VAE's scaling and "
                   "shift), for VAE Decode, KSampler and every node that takes a LATENT.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "pipeline": (PIPELINE_TYPE,)}}

    def convert(self, state, pipeline):
        latents = value_named(state, "latents", "State To LATENT")
        if latents is None:
            raise KeyError("State To LATENT: the state's 'latents' is empty")
        try:
            return ({"samples": to_host_latent(pipeline, latents).detach().cpu()},)
        except LoopConfigError as e:
            raise LoopConfigError(f"State To LATENT: {e}") from e


class LatentToState:
    DESCRIPTION = ("A ComfyUI LATENT as the `latents` of a pipeline state (with the pipeline VAE's scaling and "
                   "shift), for diffusers' decode step or loops; into a copy of `state` when one is connected.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",), "pipeline": (PIPELINE_TYPE,)}, "optional": {"state": (STATE_TYPE,)}}

    def convert(self, latent, pipeline, state=None):
        new = copy_state(state)
        new.set("latents", from_host_latent(pipeline, latent["samples"]))
        return (new,)


NODES = {"ModularDiffusersLoader": (LoadDiffusersPipeline, "Load Diffusers Pipeline"),
         "ModularDiffusersScheduler": (DiffusersScheduler, "Diffusers Scheduler"),
         "ModularStateToImage": (StateToImage, "State To Image"),
         "ModularStateToAudio": (StateToAudio, "State To Audio"),
         "ModularStateToLatent": (StateToLatent, "State To LATENT"),
         "ModularLatentToState": (LatentToState, "LATENT To State")}


# --- diffusers' own loops and steps ------------------------------------------------------------------


def used_components(entry) -> set[str]:
    """The components one of diffusers' loops, steps or workflows uses: its own and, for a loop, those of the blocks
    it runs by itself (diffusers' `expected_components` of the composed class: a loop's denoiser and guider)."""
    return {c.name for c in entry.prototype.expected_components if c.name}


def pipeline_sockets(entry) -> dict:
    """The pipeline socket of one of diffusers' loops or steps, and guider / scheduler sockets where it uses those
    components (a loop: also where its own blocks do, e.g. Z-Image's and Wan's guider)."""
    sockets = {"pipeline": (PIPELINE_TYPE, {"tooltip": "The loaded diffusers pipeline whose components it uses."})}
    declared = used_components(entry)
    if "guider" in declared:
        sockets["guider"] = (GUIDER_TYPE, {"tooltip": "A guider node: the run's guider from this node on."})
    if "scheduler" in declared:
        sockets["scheduler"] = (SCHEDULER_TYPE, {"tooltip": "A scheduler node: the run's scheduler from this node on "
                                                            "(connect it where the timesteps are set)."})
    return sockets


@contextlib.contextmanager
def run_components(entry, label, blocks=(), pipeline=None, guider=None, scheduler=None):
    """The components one of diffusers' loops or steps sees in one run: the pipeline's, with a fresh guider /
    scheduler from a guider / scheduler node, the modules it uses loaded by ComfyUI's model management onto
    ComfyUI's device; the hooks a run put on the denoiser are removed after it, also after a failure."""
    from . import host

    if pipeline is None and used_components(entry):
        needs = ", ".join(sorted(used_components(entry)))
        raise LoopConfigError(f"{label}: connect a Load Diffusers Pipeline node to 'pipeline' (it uses {needs})")
    if pipeline is None:
        yield None
        return
    used = used_components(entry)
    for _, config in blocks:
        used |= {c.name for c in config.cls().expected_components}
    host.load_components(pipeline, used)
    components = RunComponents(pipeline, {"guider": guider.make() if guider is not None else None,
                                          "scheduler": scheduler.make(pipeline) if scheduler is not None else None,
                                          "_execution_device": host.pipeline_device(pipeline)})
    try:
        yield components
    finally:
        components.cleanup()


class PipelineNode(DeclaredNode):
    """What diffusers' own loop and step nodes share: the components come from a loaded pipeline (its socket),
    not from sockets of their own."""

    @classmethod
    def component_sockets(cls):
        return []

    @classmethod
    def own_sockets(cls) -> dict:
        return pipeline_sockets(cls.ENTRY)


class PipelineLoopNode(PipelineNode, LoopNode):
    """One of diffusers' own loops: the generic loop node, on a pipeline's components; it runs its own blocks
    (`block_classes`) when none are attached."""

    @contextlib.contextmanager
    def run_components(self, components, blocks, state, label, **sockets):
        with run_components(self.ENTRY, label, blocks, **sockets) as run:
            if state is not None:
                check_timesteps(state, label)
            if run is not None and state is not None:
                check_guidance(run.guider_for(state), state, label)
            yield run


class PipelineBlockNode(PipelineNode, BlockNode):
    """One of diffusers' own loop blocks: the generic block node; its components are the pipeline's."""


class PipelineStepNode(PipelineNode):
    """One of diffusers' pipeline steps around a loop (text encoder, set timesteps, prepare latents, decode, ...):
    runs the block once on the incoming state and outputs the new state."""

    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        own = {"state": (STATE_TYPE, {"tooltip": "The pipeline state so far (the previous step's output)."}),
               **cls.own_sockets(),
               CONFIGURED_AS: ("STRING", {"default": "", "advanced": True, "tooltip": (
                   "<Blocks class>/<workflow>/<step name>: run this step as diffusers configured it in that "
                   "workflow's chain (set when a workflow node is expanded into steps); empty: as its class "
                   "declares it.")})}
        return {"required": required, "optional": {**own, **optional}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, unique_id=None, state=None, **kwargs):
        from . import host

        label = loop_where(self.ENTRY.name, unique_id)
        sockets = {name: kwargs.pop(name, None) for name in self.own_sockets()}
        block = self.configured_block(kwargs.pop(CONFIGURED_AS, ""), label)
        given, _ = self.given(kwargs)
        with run_components(self.ENTRY, label, **sockets) as components:
            with host.failed_block_reported():
                result = run_step(block, given, state, components, unique_id)
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


    @classmethod
    def configured_block(cls, where: str, label: str):
        """The step's block: its class, or (`where` = "<Blocks>/<workflow>/<name>") the instance diffusers' chain for
        that workflow holds, chosen among diffusers' own workflow classes only."""
        if not where:
            return cls.ENTRY.cls
        parts = where.split("/", 2)
        blocks = workflow_classes().get(parts[0]) if len(parts) == 3 else None
        if blocks is None:
            raise LoopConfigError(f"{label}: configured_as {where!r} is not <Blocks class>/<workflow>/<step name> of "
                                  f"one of diffusers' workflow classes")
        return chain_block(blocks.load(), parts[1], parts[2], cls.ENTRY.cls, label)


CONFIGURED_AS = "configured_as"


@functools.lru_cache(maxsize=None)
def workflow_classes() -> dict:
    """{name: ShippedClass} of diffusers' workflow classes (as the start read them)."""
    return {c.name: c for c in shipped().workflows}


class PipelineWorkflowNode(PipelineNode):
    """A family's Auto blocks (the blocks diffusers' `pipe(...)` runs) with a choice of its named workflows: runs
    diffusers' own chain for the chosen one (`get_workflow`) as `pipe(...)` does, the call's values given once on
    this node. The page can expand it in place into that chain of step and loop nodes."""

    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        workflows = list(cls.ENTRY.workflows)
        choice = {"workflow": (workflows, {"default": workflows[0], "tooltip": (
            "diffusers' named workflow (its `_workflow_map`): which chain of steps runs. Give the inputs it needs "
            "(an image for image2image, a mask for inpainting, ...).")})}
        own = {"state": (STATE_TYPE, {"tooltip": "A state to continue (as pipe(state=...)); empty: a new call."}),
               **cls.own_sockets()}
        return {"required": {**choice, **required}, "optional": {**own, **optional}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, workflow, unique_id=None, state=None, **kwargs):
        from . import host

        label = loop_where(self.ENTRY.name, unique_id)
        sockets = {name: kwargs.pop(name, None) for name in self.own_sockets()}
        given, _ = self.given(kwargs)
        with run_components(self.ENTRY, label, **sockets) as components:
            with host.failed_block_reported():
                result = run_workflow(self.ENTRY.cls, workflow, given, state, components, unique_id,
                                      hooks=host.step_hooks(progress=host.progress_bar_hook()), device=host.device(),
                                      label=label)
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


NODE_OF_ROLE = {"loop": "ModularLoop_", "step": "ModularStep_"}
CHAIN_SOCKETS = ("state", "pipeline", "guider", "scheduler")  # the workflow node's own, not a call's values


def expand_workflow(classes: dict, node_type: str, workflow: str, given=()) -> dict:
    """The chain of step and loop nodes a workflow node (`node_type`, a `ModularWorkflow_<Class>`) expands into, in
    the order diffusers' chain runs them (`get_workflow`; for "default", the chain `given` selects):
    [{"class_type", "name" (diffusers' name in the chain), "takes": the `given` inputs this node is given,
    "values": its own widget values (`configured_as` for a step diffusers configured)}]. A value given once on the
    workflow node goes to the first node of the chain that has that input, as a user gives a call's value once (the
    later nodes read it from the state). -> {"nodes": [...], "dropped": the given names no node of the chain reads:
    they only chose the chain, which holds that choice now (Cosmos' `enable_sound`)}. `classes`: ComfyUI's node
    classes."""
    from ..modular.pipelines.run import workflow_chain

    workflow_cls = classes.get(node_type)
    if workflow_cls is None or not issubclass(workflow_cls, PipelineWorkflowNode):
        raise LoopConfigError(f"no workflow node {node_type!r}")
    label = workflow_cls.ENTRY.name
    chain = workflow_chain(workflow_cls.ENTRY.cls, workflow, label, {name: True for name in given})
    left, nodes = [n for n in given if n not in CHAIN_SOCKETS], []
    for name, block in compat.chain_steps(chain):
        role = "loop" if compat.role_of(type(block)) == "loop" else "step"
        cls = classes.get(NODE_OF_ROLE[role] + type(block).__name__)
        if cls is None:
            raise LoopConfigError(f"{label}, workflow {workflow}: no node for its step '{name}' "
                                  f"({type(block).__name__})")
        types = cls.INPUT_TYPES()
        inputs = {**types.get("required", {}), **types.get("optional", {})}
        takes = [n for n in left if n in inputs or n + widgets.LINK_SUFFIX in inputs]
        left = [n for n in left if n not in takes]
        node = {"class_type": NODE_OF_ROLE[role] + type(block).__name__, "name": name, "takes": takes}
        if role == "step" and workflow != compat.DEFAULT_WORKFLOW and configured(block):
            node["values"] = {CONFIGURED_AS: f"{workflow_cls.ENTRY.name}/{workflow}/{name}"}
        nodes.append(node)
    return {"nodes": nodes, "dropped": left}


def entry_nodes(entry, registry) -> dict | None:
    """{node id: (class, display name)} of one of diffusers' own loops or steps (or loop blocks, which are the
    generic block node), filed as diffusers files them; None for an entry that is not diffusers'."""
    if entry.origin != "diffusers":
        return None
    base = {"loop": PipelineLoopNode, "block": PipelineBlockNode, "step": PipelineStepNode,
            "workflow": PipelineWorkflowNode}[entry.role]
    shown = f"{entry.name} (workflows)" if entry.role == "workflow" else entry.name
    return {node_id(entry): (make_node(entry, base, category=f"{CATEGORY}/{entry.group}"), shown)}
