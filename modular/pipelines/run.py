"""One run of diffusers' own blocks across nodes: the components it sees (`run_components`: the pipeline's, with the
run's own scheduler and guider carried in the state, a guider / scheduler node's configuration made fresh, each
block's modules loaded when it runs), the checks before a loop (steps to run, guidance that can work), a batch of
images checked against the prompts', one pipeline step run on a state (`run_step`), a named workflow's chain run as
`pipe()` runs it (`run_workflow`) and laid out as nodes (`lay_out_chain`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from dataclasses import dataclass

from ..core import compat
from ..core.errors import ConfigError, ModularError, node_where
from ..core.state import ValueSource, seed_state
from . import bridge


RUN_COMPONENTS = ("scheduler", "guider")


class GuiderConfig:
    """A guider node's output: the class and its parameters; `make()` builds a fresh instance for each run."""

    def __init__(self, cls, params: dict):
        self.cls, self.params = cls, dict(params)

    def make(self):
        return self.cls(**self.params)


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


class RunComponents:
    """The components one run sees: the pipeline's, except its scheduler and guider, which keep per-run state
    (`set_timesteps`, the guider's step): those are the run's own, carried in the pipeline state from node to
    node as diffusers' one pipeline call keeps them (`compat.carried`), fresh from the pipeline's config where
    the state has none yet, or `given` (e.g. a guider node's). The pipeline itself, a cached node output shared
    by runs, is never changed."""

    def __init__(self, pipeline, given: dict | None = None, load=None):
        self._pipeline = pipeline
        self._given = {k: v for k, v in (given or {}).items() if v is not None}
        self._own = dict(self._given)
        self._load = load
        self._hooks_before = {name: compat.hook_names(model) for name, model in self._denoisers()}

    def load_for(self, block):
        """Load the modules `block` declares (its `expected_components`; a loop's: its blocks' too) right before it
        runs, with the host's `load(names)` (ComfyUI's model management), so that one block's modules need not
        fit beside every other's."""
        if self._load is not None:
            self._load({c.name for c in block.expected_components if c.name})

    def _denoisers(self):
        for name in bridge.DENOISERS:
            model = getattr(self._pipeline, name, None)
            if model is not None and hasattr(model, "modules"):
                yield name, model

    def bind_state(self, state):
        """Take the run's scheduler and guider from `state` (the one this node runs on), and carry them on in it."""
        carried = compat.carried(state)
        for name in RUN_COMPONENTS:
            if name in self._given:
                carried[name] = self._given[name]
            elif carried.get(name) is None:
                base = getattr(self._pipeline, name, None)
                if base is not None and hasattr(type(base), "from_config"):
                    carried[name] = type(base).from_config(base.config)
            if carried.get(name) is not None:
                self._own[name] = carried[name]

    def before_loop(self, state, label: str, loop=None):
        """What a run checks (and loads) before a loop: a schedule with steps to run, guidance that can work on the
        state's embeddings (and on a bridged denoiser); `loop`'s modules loaded (a workflow's loop; a loop node loads its own and its blocks'
        before it starts)."""
        check_timesteps(state, label)
        check_guidance(self.guider_for(state), state, label)
        bridge.check_guider(self.guider_for(state), self._pipeline, label)
        if loop is not None:
            self.load_for(loop)

    def guider_for(self, state):
        """The guider a run on `state` will use (given, carried in the state, or the pipeline's)."""
        return self._given.get("guider") or compat.carried(state).get("guider") or getattr(self._pipeline, "guider", None)

    def __getattr__(self, name):
        """The run's own scheduler / guider, else the pipeline's attribute; but a property or method of the
        pipeline's class (`requires_unconditional_embeds`, `components`, ...) is evaluated on this view, so what it
        reads of `self.guider` / `self.scheduler` is the run's, as `pipe.update_components(guider=...)` would make
        it for diffusers' own call."""
        own = self.__dict__.get("_own", {})
        if name in own:
            return own[name]
        pipeline = self.__dict__["_pipeline"]
        found = inspect.getattr_static(type(pipeline), name, None)
        if isinstance(found, (property, functools.cached_property)):
            return found.__get__(self, type(pipeline))
        if isinstance(found, types.FunctionType) and name not in vars(pipeline):
            return types.MethodType(found, self)
        return getattr(pipeline, name)

    def cleanup(self):
        """Remove the hooks put on the denoising model during this node's run (a guider's: PAG, SLG, SEG install
        them per step and remove them themselves only when the step ends normally), also after a failed step:
        the pipeline is shared by later runs."""
        for name, model in self._denoisers():
            added = compat.hook_names(model) - self._hooks_before.get(name, set())
            if added:
                compat.remove_hooks(model, added)


@contextlib.contextmanager
def run_components(uses: set, label: str, pipeline=None, guider=None, scheduler=None, preload=(), load=None,
                   device=None):
    """The components one of diffusers' loops, steps or workflows sees in one run (`uses`: the components it
    declares): the pipeline's, with a fresh guider / scheduler from a guider / scheduler node (a `GuiderConfig` /
    `SchedulerConfig`) and the host's `device` as its execution device; `load(names)` (the host's model management)
    loads the modules a block uses when that block runs (`RunComponents.load_for`), and `preload` before anything
    runs (a loop node's, with the blocks attached to it). The hooks a run put on the denoiser are removed after it,
    also after a failure. None for a block that uses no component and was given no pipeline."""
    if pipeline is None and uses:
        raise ConfigError(f"{label}: connect a Load Diffusers Pipeline node to 'pipeline' (it uses "
                              f"{', '.join(sorted(uses))})")
    if pipeline is None:
        yield None
        return
    components = RunComponents(pipeline, {"guider": guider.make() if guider is not None else None,
                                          "scheduler": scheduler.make(pipeline) if scheduler is not None else None,
                                          "_execution_device": device}, load=load)
    if preload and load is not None:
        load(set(preload))
    try:
        yield components
    finally:
        components.cleanup()


@dataclass(frozen=True)
class StepResult:
    state: object
    notes: list


def run_step(block_cls, values: dict, state=None, components=None, node=None, label=None) -> StepResult:
    """Run one pipeline block (a step around a loop) on a copy of `state`, seeded with the `values` given on its
    node (node values > incoming state > defaults, as for loops). `block_cls`: the class, or an instance as a
    workflow's chain holds it (diffusers configures some steps: Flux Kontext's VAE encoder samples by `argmax`)."""
    block = block_cls() if isinstance(block_cls, type) else block_cls
    label = label or node_where(type(block).__name__, node)
    block = bridge.stand_in(block, components)
    seeded, notes = seed_state(block, [ValueSource(f"the step {label}", block.inputs, dict(values), node)],
                               initial=state, loop_label=label)
    if hasattr(components, "bind_state"):
        components.bind_state(seeded)
        components.load_for(block)
    try:
        _, out = block(components, seeded)
    except ModularError:
        raise
    except Exception as e:
        raise ModularError(f"{label}: the step failed: {type(e).__name__}: {e}", block_node=node) from e
    return StepResult(out, notes)


def check_guidance(guider, state, label: str):
    """A clear error, before the loop, for a guider that guides with an unconditional (negative) prediction when
    the state holds the prompt's embeddings but no negative ones (diffusers' own loops crash deep inside the
    model there, SDXL's, or silently run the positive twice, SD3's): the text encoder step had no negative prompt
    where its family needs one, or ran with a guider that needed none."""
    if guider is None or getattr(guider, "num_conditions", 1) <= 1:
        return
    values = compat.state_values(state)
    positives = [k for k in values if k.endswith("prompt_embeds") and not k.startswith("negative_")]
    missing = [k for k in positives if values.get(f"negative_{k}") is None]
    if positives and len(missing) == len(positives):
        raise ConfigError(
            f"{label}: the guider ({type(guider).__name__}) needs negative embeddings, but the state has "
            f"{', '.join(missing)} and no {', '.join('negative_' + k for k in missing)}: give the text encoder step a "
            f"negative prompt (some families encode none without one), and connect this guider node to the text "
            f"encoder step too: it asks the run's guider whether to encode the negative, and a guider given only "
            f"further on (or one that needs none, e.g. with a guidance scale of 1) was not asked")


def check_timesteps(state, label: str):
    """A clear error, before the loop, for a schedule with no step to run: image-to-image keeps the last
    `strength` x `num_inference_steps` steps (diffusers' `int(...)`), so strength 0.3 over 2 steps keeps none and
    diffusers' own run fails later, at decoding, with a reshape error."""
    values = compat.state_values(state)
    timesteps = values.get("timesteps")
    if timesteps is None or not hasattr(timesteps, "__len__") or len(timesteps) > 0:
        return
    strength, steps = values.get("strength"), values.get("num_inference_steps")
    why = (f" (strength {strength} x num_inference_steps {steps} < 1: image-to-image keeps int(strength x steps) of "
           f"them); raise the strength or the steps" if strength is not None and steps is not None else "")
    raise ConfigError(f"{label}: the schedule holds no step to run{why}")


def check_batches(chain, values: dict, label: str):
    """A clear error, before anything runs, for a batch of images that the call's prompts cannot pair with: in a
    workflow that starts from its images (it takes a `strength`: image-to-image, inpainting), diffusers encodes n
    images as n starting latents and repeats them only to a multiple of n (prompts x images per prompt); any other
    batch runs the text and image encoders and then fails inside the denoiser on a tensor size, naming nothing
    (diffusers' own pipe() too)."""
    if "strength" not in {p.name for p in chain.inputs}:
        return  # reference images (Flux 2, Qwen-Image Edit): several for one prompt is what they are for
    prompt = values.get("prompt")
    prompts = len(prompt) if isinstance(prompt, (list, tuple)) else 1
    per_prompt = values.get("num_images_per_prompt") or 1
    for name in ("image", "mask_image"):
        given = values.get(name)
        n = len(given) if isinstance(given, (list, tuple)) else 1
        if n > 1 and (prompts * per_prompt) % n:
            raise ConfigError(
                f"{label}: '{name}' is a batch of {n} images, but the prompt gives a batch of {prompts * per_prompt} "
                f"({prompts} prompt(s) x num_images_per_prompt {per_prompt}): give one image, or {n} prompts (a list), "
                f"or a num_images_per_prompt that is a multiple of {n}")


def named_chain(blocks_cls, workflow: str, label: str, values: dict | None = None):
    """diffusers' own chain for a named workflow of a family's Auto blocks (`get_workflow`; "default" of blocks that
    name none: the one their given `values` select): the leaf steps and the loop that `pipe(...)` runs, in order."""
    blocks = blocks_cls()
    names = compat.workflow_names(blocks)
    if workflow not in names:
        raise ConfigError(f"{label}: no workflow {workflow!r}; {blocks_cls.__name__} has {', '.join(names)}")
    return compat.workflow_chain(blocks, workflow, values)


def workflow_inputs(blocks_cls) -> dict:
    """{workflow: the names of the inputs its chain reads} of a family's Auto blocks (a "default" workflow, whose
    chain the call's values select: every input of the blocks)."""
    blocks = blocks_cls()
    found = {}
    for workflow in compat.workflow_names(blocks):
        chain = blocks if workflow == compat.DEFAULT_WORKFLOW else compat.workflow_chain(blocks, workflow)
        found[workflow] = sorted(p.name for p in chain.inputs if p.name)
    return found


def configured(block) -> bool:
    """Whether diffusers configured a chain's block (its attributes differ from a fresh instance's: Flux Kontext's
    VAE encoder samples by argmax, Flux 3 distilled's set-timesteps step has its own steps, Qwen-Image's inputs
    step its extra batch inputs)."""
    try:
        fresh = vars(type(block)())
    except Exception:
        return True
    return any(k != "sub_blocks" and repr(fresh.get(k, fresh)) != repr(v) for k, v in vars(block).items())


@dataclass(frozen=True)
class ChainNode:
    """One node of a workflow's chain laid out as nodes: its `role` ("step" or "loop"), the block's class name,
    diffusers' name for it in the chain, the call's values it `takes`, and whether diffusers `configured` it there
    (its node then runs diffusers' instance, `chain_block`)."""

    role: str
    block: str
    name: str
    takes: tuple
    configured: bool


def lay_out_chain(blocks_cls, workflow: str, given, shows, label: str) -> tuple[list, list]:
    """The chain of nodes a workflow of `blocks_cls` is run by, in diffusers' order (`named_chain`; for "default",
    the chain the `given` names select), each value given once going to the first node that shows that input
    (`shows(role, block class name)` -> the input names its node shows, None where there is no node): the rule a
    user follows by hand, the later nodes reading it from the state. -> ([ChainNode], the given names no node
    takes: they only chose the chain, which holds that choice now, e.g. Cosmos' `enable_sound`)."""
    chain = named_chain(blocks_cls, workflow, label, {name: True for name in given})
    left, laid = list(given), []
    for name, block in compat.chain_steps(chain):
        role = "loop" if compat.role_of(type(block)) == "loop" else "step"
        inputs = shows(role, type(block).__name__)
        if inputs is None:
            raise ConfigError(f"{label}, workflow {workflow}: no node for its step '{name}' ({type(block).__name__})")
        takes = tuple(n for n in left if n in inputs)
        left = [n for n in left if n not in takes]
        laid.append(ChainNode(role, type(block).__name__, name, takes,
                              role == "step" and workflow != compat.DEFAULT_WORKFLOW and configured(block)))
    return laid, left


def configured_step(where: str, block_cls, label: str):
    """The instance of `block_cls` that diffusers' chain for a workflow holds, named `where` =
    "<Blocks class>/<workflow>/<step name>" (a step node's `configured_as`, set when a workflow node is expanded):
    the Blocks class is looked up among diffusers' own workflow classes only (as the start read them), never built
    from a name in a workflow."""
    from .scan import shipped

    parts = where.split("/", 2)
    blocks = {c.name: c for c in shipped().workflows}.get(parts[0]) if len(parts) == 3 else None
    if blocks is None:
        raise ConfigError(f"{label}: configured_as {where!r} is not <Blocks class>/<workflow>/<step name> of one of "
                          f"diffusers' workflow classes")
    return chain_block(blocks.load(), parts[1], parts[2], block_cls, label)


def chain_block(blocks_cls, workflow: str, name: str, block_cls, label: str):
    """The block at `name` of diffusers' chain for a named `workflow` of `blocks_cls`, as diffusers configured it
    (it must be a `block_cls`): what a step node expanded from a workflow node runs."""
    chain = named_chain(blocks_cls, workflow, label)
    block = dict(compat.chain_steps(chain)).get(name)
    if type(block) is not block_cls:
        raise ConfigError(f"{label}: {blocks_cls.__name__}'s workflow {workflow!r} has no {block_cls.__name__} "
                              f"named {name!r} (a diffusers release that changed it?): clear 'configured_as' to run "
                              f"the step as its class declares it")
    return block


def run_workflow(blocks_cls, workflow: str, values: dict, state=None, components=None, node=None, hooks=None,
                 device=None, label=None) -> StepResult:
    """Run a named workflow of a family's Auto blocks as `pipe(**values)` does: the call's values set once in the
    state (`compat.seed_call`), then diffusers' chain for that workflow step by step, each step and the loop as their
    own nodes run them (`run_step`, `runner.run_loop` with the loop's own blocks), so the one node, the chain of
    nodes and diffusers' pipeline call give the same result."""
    from ..core.params import to_state_value
    from ..core.runner import BlockConfig, run_loop
    from ..core.state import copy_state

    label = label or node_where(blocks_cls.__name__, node)
    values = {k: to_state_value(k, v) for k, v in values.items()}
    chain = named_chain(blocks_cls, workflow, label, values)
    check_batches(chain, values, label)
    state = compat.seed_call(chain, copy_state(state), values)
    notes = []
    for name, block in compat.chain_steps(chain):
        where = f"{label}, workflow {workflow}, step '{name}' ({type(block).__name__})"
        if compat.role_of(type(block)) == "loop":
            if hasattr(components, "before_loop"):
                components.before_loop(state, where, block)
            else:
                check_timesteps(state, where)
            result = run_loop(type(block), [(k, BlockConfig.of(b)) for k, b in compat.chain_steps(block)],
                              state=state, components=components, hooks=hooks, device=device, label=where)
        else:
            result = run_step(block, {}, state, components, node, label=where)
        state = result.state
        notes += result.notes
    return StepResult(state, notes)

