"""diffusers' own loops, loop blocks, pipeline steps and workflow nodes: the generic loop and block nodes on a
loaded pipeline's components, a step node that runs one block on a state, and a family's Auto blocks as one node
running a named workflow. What a run does is `modular.pipelines.run`; these classes take ComfyUI's sockets and
hooks to it."""

from __future__ import annotations

import contextlib
import functools

from ...modular import ConfigError
from ...modular.core.errors import node_where
from ...modular.core.params import ParamSpec
from ...modular.pipelines import run
from ...modular.pipelines.params import MORE, more_values, shown_on_workflow_node
from .. import widgets
from ..names import CHAIN_SOCKETS, NODE_PREFIXES
from ..factory import BlockNode, DeclaredNode, LoopNode, make_node, node_id
from ..widgets import GUIDER_TYPE, PIPELINE_TYPE, SCHEDULER_TYPE, STATE_TYPE
from . import CATEGORY

CONFIGURED_AS = "configured_as"


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
    """`run.run_components` with ComfyUI's model management and device: a block's modules are loaded when it runs;
    a loop node's (with the blocks attached to it) before it starts; a MODEL's (a bridged pipeline's denoiser) in
    one sampling session for the node's run."""
    from .. import host
    from .bridge import sessions

    uses = used_components(entry)
    preload = ()
    if entry.role == "loop":
        preload = uses | {c.name for _, config in blocks for c in config.cls().expected_components if c.name}
    with run.run_components(uses, label, pipeline, guider, scheduler, preload,
                            load=functools.partial(host.load_components, pipeline) if pipeline is not None else None,
                            device=host.pipeline_device(pipeline) if pipeline is not None else None) as components:
        with sessions(pipeline, components):
            yield components


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
        with run_components(self.ENTRY, label, blocks, **sockets) as components:
            if components is not None and state is not None:
                components.before_loop(state, label)
            elif state is not None:
                run.check_timesteps(state, label)
            yield components


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
        from .. import host

        label = node_where(self.ENTRY.name, unique_id)
        sockets = {name: kwargs.pop(name, None) for name in self.own_sockets()}
        block = self.configured_block(kwargs.pop(CONFIGURED_AS, ""), label)
        given, _ = self.given(kwargs)
        with run_components(self.ENTRY, label, **sockets) as components:
            return host.reported(lambda: run.run_step(block, given, state, components, unique_id))

    @classmethod
    def configured_block(cls, where: str, label: str):
        """The step's block: its class, or the instance a workflow's chain holds (`run.configured_step`)."""
        return run.configured_step(where, cls.ENTRY.cls, label) if where else cls.ENTRY.cls


MORE_SPEC = ParamSpec(MORE, "json", dict, None, options={"link": False}, description=(
    "The call's other values, as JSON: {\"name\": value, ...} (e.g. {\"clip_skip\": 2, \"eta\": 0.5}), as "
    "pipe(name=value) takes them. Tensors and other values a step computes: expand the node into steps (right-click) "
    "and connect them there."))


class PipelineWorkflowNode(PipelineNode):
    """A family's Auto blocks (the blocks diffusers' `pipe(...)` runs) with a choice of its named workflows: runs
    diffusers' own chain for the chosen one (`get_workflow`) as `pipe(...)` does, the call's values given once on
    this node: the common ones and its media on inputs of their own, the rest in `more` (JSON). The page shows the
    media sockets the chosen workflow reads, and can expand the node in place into that chain of step and loop
    nodes, where every input is."""

    RETURN_TYPES = (STATE_TYPE,)
    RETURN_NAMES = ("state",)
    FUNCTION = "run"

    @classmethod
    def specs(cls):
        return [s for s in cls.ENTRY.input_specs() if shown_on_workflow_node(s)] + [MORE_SPEC]

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = cls.declared_inputs()
        workflows = list(cls.ENTRY.workflows)
        choice = {"workflow": (workflows, {"default": workflows[0], "tooltip": (
            "diffusers' named workflow (its `_workflow_map`): which chain of steps runs. Give the inputs it needs "
            "(an image for image2image, a mask for inpainting, ...)."),
            "inputs_of": run.workflow_inputs(cls.ENTRY.cls)})}  # the page shows the media sockets a workflow reads
        own = {"state": (STATE_TYPE, {"tooltip": "A state to continue (as pipe(state=...)); empty: a new call."}),
               **cls.own_sockets()}
        return {"required": {**choice, **required}, "optional": {**own, **optional}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, workflow, unique_id=None, state=None, **kwargs):
        from .. import host

        label = node_where(self.ENTRY.name, unique_id)
        sockets = {name: kwargs.pop(name, None) for name in self.own_sockets()}
        given, _ = self.given(kwargs)
        given.update(more_values(self.ENTRY.input_specs(), given.pop(MORE, {}), label))
        with run_components(self.ENTRY, label, **sockets) as components:
            return host.reported(lambda: run.run_workflow(
                self.ENTRY.cls, workflow, given, state, components, unique_id,
                hooks=host.step_hooks(progress=host.progress_bar_hook()), device=host.device(), label=label))


def expand_workflow(classes: dict, node_type: str, workflow: str, given=()) -> dict:
    """The chain of step and loop nodes a workflow node (`node_type`, a `ModularWorkflow_<Class>`) expands into
    (`run.lay_out_chain`, over ComfyUI's node classes `classes`): {"nodes": [{"class_type", "name" (diffusers' name
    in the chain), "takes": the `given` inputs it is given, "values": its own widget values (`configured_as` for a
    step diffusers configured)}], "dropped": the given names that only chose the chain}."""
    workflow_cls = classes.get(node_type)
    if workflow_cls is None or not issubclass(workflow_cls, PipelineWorkflowNode):
        raise ConfigError(f"no workflow node {node_type!r}")
    entry = workflow_cls.ENTRY

    def shows(role, block):
        cls = classes.get(NODE_PREFIXES[role] + block)
        if cls is None:
            return None
        types = cls.INPUT_TYPES()
        names = {*types.get("required", {}), *types.get("optional", {})}
        return names | {n[:-len(widgets.LINK_SUFFIX)] for n in names if n.endswith(widgets.LINK_SUFFIX)}

    laid, dropped = run.lay_out_chain(entry.cls, workflow, [n for n in given if n not in CHAIN_SOCKETS], shows,
                                      entry.name)
    nodes = [{"class_type": NODE_PREFIXES[n.role] + n.block, "name": n.name, "takes": list(n.takes),
              **({"values": {CONFIGURED_AS: f"{entry.name}/{workflow}/{n.name}"}} if n.configured else {})}
             for n in laid]
    return {"nodes": nodes, "dropped": dropped}


def entry_nodes(entry, registry) -> dict | None:
    """{node id: (class, display name)} of one of diffusers' own loops or steps (or loop blocks, which are the
    generic block node), filed as diffusers files them; None for an entry that is not diffusers'."""
    if entry.origin != "diffusers":
        return None
    base = {"loop": PipelineLoopNode, "block": PipelineBlockNode, "step": PipelineStepNode,
            "workflow": PipelineWorkflowNode}[entry.role]
    shown = f"{entry.name} (workflows)" if entry.role == "workflow" else entry.name
    return {node_id(entry): (make_node(entry, base, category=f"{CATEGORY}/{entry.group}"), shown)}
