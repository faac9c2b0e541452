"""diffusers' own pipelines as nodes (`modular/pipelines/`): its loops and steps (the generic loop node with a
pipeline's components, and a step node that runs one block on a state), Load Diffusers Pipeline (a local folder
of `models/diffusers/`), one node per diffusers guider, Diffusers Scheduler, and the nodes between a state and
ComfyUI's IMAGE / LATENT. ComfyUI's folder list is read only when the loader is listed or run."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os

from ..modular import LoopConfigError, check_value, copy_state
from ..modular.core import compat
from ..modular.core.errors import loop_where
from ..modular.core.params import ParamSpec
from ..modular.pipelines.latents import from_host_latent, to_host_latent
from ..modular.pipelines.load import INDEX_FILES, load_pipeline
from ..modular.pipelines.run import RunComponents, check_guidance, run_step, run_workflow
from ..modular.pipelines.scan import scan_guiders
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
                                 "uses them and offloads them when others need the room); cpu: always on the CPU.")})}}

    def load(self, folder, dtype, device="default"):
        import torch

        from . import host

        path = pipeline_folders().get(folder)
        if path is None:
            raise LoopConfigError(f"Load Diffusers Pipeline: no pipeline folder '{folder}' in models/diffusers/")
        pipeline = load_pipeline(path, None if dtype == "default" else getattr(torch, dtype))
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
    for guider in scan_guiders():
        cls = type(f"ModularGuider_{guider.name}", (GuiderNode,), {
            "GUIDER": guider, "__module__": __name__,
            "DESCRIPTION": f"diffusers' {guider.name} (diffusers/guiders/{guider.module}.py): a fresh one each run."})
        made[f"ModularGuider_{guider.name}"] = (cls, guider.name)
    return made


class StateToImage:
    DESCRIPTION = ("The decoded images of a pipeline state (diffusers' decode step writes `images`) as a ComfyUI "
                   "IMAGE, for Save Image or Preview Image. Decode with output_type \"pt\" or \"np\" (or \"pil\").")
    CATEGORY = f"{CATEGORY}"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"state": (STATE_TYPE,), "key": ("STRING", {"default": "images"})}}

    def convert(self, state, key):
        return (as_comfy_image(value_named(state, key, "State To Image"), key),)


def as_comfy_image(images, key="images"):
    """diffusers' images (a [B, C, H, W] tensor in 0..1, a [B, H, W, C] array, or a list of PIL images) as
    ComfyUI's IMAGE: a float32 [B, H, W, C] tensor in 0..1."""
    import numpy as np
    import torch

    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        images = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
        return images.float() if images.ndim == 4 else images.float()[None]
    if torch.is_tensor(images) and images.ndim == 4:
        return images.detach().float().permute(0, 2, 3, 1).cpu().contiguous()
    raise TypeError(f"State To Image: '{key}' holds {type(images).__name__}, not decoded images; decode first")


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
         "ModularStateToLatent": (StateToLatent, "State To LATENT"),
         "ModularLatentToState": (LatentToState, "LATENT To State")}


# --- diffusers' own loops and steps ------------------------------------------------------------------


def pipeline_sockets(entry) -> dict:
    """The pipeline socket of one of diffusers' loops or steps, and guider / scheduler sockets where it declares
    those components."""
    sockets = {"pipeline": (PIPELINE_TYPE, {"tooltip": "The loaded diffusers pipeline whose components it uses."})}
    declared = {s.name for s in entry.component_specs()}
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

    if pipeline is None and entry.component_specs():
        needs = ", ".join(s.name for s in entry.component_specs())
        raise LoopConfigError(f"{label}: connect a Load Diffusers Pipeline node to 'pipeline' (it uses {needs})")
    if pipeline is None:
        yield None
        return
    used = {s.name for s in entry.component_specs()}
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
               **cls.own_sockets()}
        return {"required": required, "optional": {**own, **optional}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, unique_id=None, state=None, **kwargs):
        from . import host

        label = loop_where(self.ENTRY.name, unique_id)
        sockets = {name: kwargs.pop(name, None) for name in self.own_sockets()}
        given, _ = self.given(kwargs)
        with run_components(self.ENTRY, label, **sockets) as components:
            with host.failed_block_reported():
                result = run_step(self.ENTRY.cls, given, state, components, unique_id)
        for note in result.notes:
            log.warning("[Modular Loops] %s", note)
        return (result.state,)


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


def entry_nodes(entry, registry) -> dict | None:
    """{node id: (class, display name)} of one of diffusers' own loops or steps (or loop blocks, which are the
    generic block node), filed as diffusers files them; None for an entry that is not diffusers'."""
    if entry.origin != "diffusers":
        return None
    base = {"loop": PipelineLoopNode, "block": PipelineBlockNode, "step": PipelineStepNode,
            "workflow": PipelineWorkflowNode}[entry.role]
    shown = f"{entry.name} (workflows)" if entry.role == "workflow" else entry.name
    return {node_id(entry): (make_node(entry, base, category=f"{CATEGORY}/{entry.group}"), shown)}
