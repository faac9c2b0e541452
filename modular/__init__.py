"""Modular Loops core: diffusers loop wrappers and loop blocks, composed and run for any host.

Never imports ComfyUI. The folders tell the flow: `core/` (what a loop is: entries, their discovery, parameter
specs, the state, one loop run), `sampling/` (denoise loops on a host's models, and resuming them), `pipelines/`
(diffusers' own: found from source, loaded, run across nodes), `state_files.py` (a state on disk), `blocks/` (the
pack's own block files). A plain script can run any loop:

    from modular import discover, run_loop, BlockConfig
    reg = discover()
    result = run_loop(reg.entries["LoopWrapper"].cls,
                      [("block_1", BlockConfig(reg.entries["LoopBlock"].cls, {"x": 0})),
                       ("block_2", BlockConfig(reg.entries["LoopBlock"].cls))],
                      loop_values={"num_steps": 3})
    result.state.get("x")  # 6
"""

from .core import compat
from .core.compat import state_values
from .core.errors import BlockStepError, ConfigError, LoopConfigError, LoopError, ModularError  # (Loop*: the 0.1.0 names)
from .core.params import NOT_GIVEN, ParamSpec, check_value, parse_json_widget
from .core.registry import BlockEntry, LoadProblem, Registry, discover
from .core.runner import BlockConfig, LoopComponents, LoopResult, StepHooks, run_loop
from .core.state import copy_state, describe

PACK_VERSION = "0.1.0"  # pyproject.toml's version (a core test keeps them equal); recorded in state files

__all__ = [
    "BlockConfig", "BlockEntry", "BlockStepError", "LoadProblem", "LoopComponents", "ConfigError",
    "ModularError", "LoopResult", "NOT_GIVEN", "ParamSpec", "Registry", "StepHooks", "check_value", "compat",
    "copy_state", "describe", "discover", "parse_json_widget", "run_loop", "state_values",
]
