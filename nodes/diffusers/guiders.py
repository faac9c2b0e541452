"""What a run swaps in: one node per diffusers guider (its constructor's parameters as widgets) and Diffusers
Scheduler (any diffusers scheduler, from the pipeline's config); each gives a configuration the run makes fresh
(`modular.pipelines.run.GuiderConfig` / `SchedulerConfig`)."""

from __future__ import annotations

from ...modular import ConfigError, check_value
from ...modular.core import compat
from ...modular.core.params import ParamSpec, constructor_specs
from ...modular.pipelines.run import GuiderConfig, SchedulerConfig
from ...modular.pipelines.scan import shipped
from .. import widgets
from ..widgets import GUIDER_TYPE, SCHEDULER_TYPE
from . import CATEGORY

def given_parameters(node: str, specs, kwargs) -> dict:
    """The values a node of `constructor_specs` (or other specs) was given; bad JSON is this node's error, naming the widget."""
    problems = widgets.json_errors(specs, kwargs)
    if problems:
        raise ConfigError(f"{node}: {'; '.join(problems)}")
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
        return constructor_specs(cls.GUIDER.load().__init__)

    @classmethod
    def INPUT_TYPES(cls):
        required, optional = widgets.input_types(cls.specs(), [])
        return {"required": required, "optional": optional}

    def make(self, **kwargs):
        config = GuiderConfig(self.GUIDER.load(), given_parameters(self.GUIDER.name, self.specs(), kwargs))
        config.make()  # a bad parameter is this node's error, now, not the loop's
        return (config,)


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
            raise ConfigError(f"Diffusers Scheduler: options must be a JSON object, e.g. "
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
