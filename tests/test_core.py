"""Core tier: the modular core alone, with no ComfyUI. Always runs."""

import shutil
import subprocess
import sys

import pytest
import torch
from diffusers.modular_pipelines import InputParam, LoopSequentialPipelineBlocks, ModularPipelineBlocks, OutputParam

from conftest import FIXTURES, ROOT
from modular import (
    BlockConfig,
    BlockStepError,
    ConfigError,
    ModularError,
    StepHooks,
    check_value,
    copy_state,
    describe,
    discover,
    parse_json_widget,
    NOT_GIVEN,
    run_loop,
)
from modular import compat
from modular.blocks.guide import LoopBlock, LoopWrapper
from modular.core.params import input_specs


@pytest.fixture(scope="module")
def registry():
    return discover([FIXTURES / "blocks"])


@pytest.fixture(scope="module")
def user(registry):
    return {name: registry.entries[name].cls for name in ("MultiplyBlock", "RangeLoop", "FailAtStepBlock", "SleepBlock")}


def guide(n_blocks, num_steps, x=0, **kw):
    blocks = [(f"block_{k}", BlockConfig(LoopBlock, {"x": x} if k == 1 else {})) for k in range(1, n_blocks + 1)]
    return run_loop(LoopWrapper, blocks, loop_values={"num_steps": num_steps}, **kw)


# --- the guide's loop -------------------------------------------------------------------------


@pytest.mark.parametrize("n_blocks, num_steps, expected", [(2, 3, 6), (1, 3, 3), (2, 0, 0), (16, 3, 48)])
def test_guide_loop_counts(n_blocks, num_steps, expected):
    result = guide(n_blocks, num_steps)
    assert result.state.get("x") == expected
    assert result.steps == num_steps


def test_guide_code_as_written_runs_through_compose():
    # The guide's own form: one block as an instance, one as a class.
    wrapper = compat.compose(LoopWrapper, {"block1": LoopBlock(), "block2": LoopBlock})
    assert all(isinstance(b, LoopBlock) for b in wrapper.sub_blocks.values())
    state = compat.PipelineState()
    state.set("num_steps", 3)
    state.set("x", 0)
    _, state = wrapper(None, state)
    assert state.get("x") == 6


def test_diffusers_quirk_from_blocks_dict_keeps_classes():
    # The quirk compose() absorbs: diffusers 0.42 keeps a class as is, so calling it fails. If this
    # test starts failing, diffusers fixed it and compat.compose can drop its instantiation step.
    wrapper = LoopWrapper.from_blocks_dict({"block1": LoopBlock(), "block2": LoopBlock})
    assert wrapper.sub_blocks["block2"] is LoopBlock
    state = compat.PipelineState()
    state.set("num_steps", 1)
    state.set("x", 0)
    with pytest.raises(TypeError):
        wrapper(None, state)


def test_loop_inputs_are_not_required_by_diffusers_outputs_quirk():
    wrapper = compat.compose(LoopWrapper, {"a": LoopBlock})
    assert [p.name for p in compat.seeded_inputs(wrapper)] == ["num_steps", "x"]


# --- order, sharing, chaining ----------------------------------------------------------------


def test_blocks_run_in_attached_order(user):
    add, mul = BlockConfig(LoopBlock), BlockConfig(user["MultiplyBlock"], {"factor": 3})
    # (x + 1) * 3 per step vs x * 3 + 1 per step, from x = 1, two steps.
    r1 = run_loop(LoopWrapper, [("a", add), ("b", mul)], {"num_steps": 2}, state=_state(x=1))
    r2 = run_loop(LoopWrapper, [("a", mul), ("b", add)], {"num_steps": 2}, state=_state(x=1))
    assert r1.state.get("x") == ((1 + 1) * 3 + 1) * 3 == 21
    assert r2.state.get("x") == (1 * 3 + 1) * 3 + 1 == 13


def test_state_chains_and_input_state_is_not_mutated():
    first = guide(2, 3)
    assert first.state.get("x") == 6
    second = run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock)), ("b", BlockConfig(LoopBlock))],
                      {"num_steps": 3}, state=first.state)
    assert second.state.get("x") == 12
    assert first.state.get("x") == 6  # the first loop's output (a cached node output) is untouched


def test_tensor_state_is_copied_not_shared():
    t = torch.zeros(2, 2)
    result = run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock))], {"num_steps": 2}, state=_state(x=t))
    assert torch.equal(result.state.get("x"), torch.full((2, 2), 2.0))
    assert torch.equal(t, torch.zeros(2, 2))
    copy = copy_state(result.state)
    copy.get("x").add_(1)
    assert torch.equal(result.state.get("x"), torch.full((2, 2), 2.0))


def test_custom_wrapper_with_loop_inputs_start_stop(user):
    result = run_loop(user["RangeLoop"], [("a", BlockConfig(LoopBlock, {"x": 0}))], {"start": 2, "stop": 7})
    assert result.state.get("x") == 5
    assert result.steps == 5


def test_custom_folder_block_runs(registry):
    scale = registry.entries["ScaleBlock"]
    assert scale.origin == "custom"
    result = run_loop(LoopWrapper, [("a", BlockConfig(scale.cls, {"x": 1.0}))], {"num_steps": 2})
    assert result.state.get("x") == pytest.approx(2.0)


def test_wrapper_overriding_loop_step_keeps_its_own():
    class TwiceWrapper(LoopWrapper):
        def loop_step(self, components, block_state, **loop_vars):
            for _ in range(2):
                components, block_state = super().loop_step(components, block_state, **loop_vars)
            return components, block_state

    seen = []
    hooks = StepHooks(progress=lambda step, total, preview: seen.append((step, total)))
    result = run_loop(TwiceWrapper, [("a", BlockConfig(LoopBlock, {"x": 0}))], {"num_steps": 3}, hooks=hooks)
    assert result.state.get("x") == 6
    assert seen == [(1, 3), (2, 3), (3, 3)]


# --- hooks ------------------------------------------------------------------------------------


def test_progress_once_per_step_with_total():
    seen = []
    guide(2, 4, hooks=StepHooks(progress=lambda step, total, preview: seen.append((step, total, preview))))
    assert seen == [(1, 4, None), (2, 4, None), (3, 4, None), (4, 4, None)]


def test_progress_total_from_progress_bar(user):
    seen = []
    run_loop(user["RangeLoop"], [("a", BlockConfig(LoopBlock, {"x": 0}))], {"start": 1, "stop": 4},
             hooks=StepHooks(progress=lambda step, total, preview: seen.append((step, total))))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_preview_hook_sees_block_state():
    previews = []
    hooks = StepHooks(preview=lambda step, bs: ("x", bs.x), progress=lambda s, t, p: previews.append(p))
    guide(1, 3, hooks=hooks)
    assert previews == [("x", 1), ("x", 2), ("x", 3)]


class Stop(Exception):
    pass


def test_interrupt_stops_within_one_step():
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:  # asked before step 2 (the third step)
            raise Stop()

    seen = []
    hooks = StepHooks(interrupt=interrupt, progress=lambda s, t, p: seen.append(s), passthrough=(Stop,))
    with pytest.raises(Stop):
        guide(2, 1000, hooks=hooks)
    assert seen == [1, 2]


def test_interrupt_without_passthrough_is_reported_as_loop_error():
    def interrupt():
        raise Stop()

    with pytest.raises(ModularError, match="near step 0: Stop"):
        guide(1, 3, hooks=StepHooks(interrupt=interrupt))


# --- errors -----------------------------------------------------------------------------------


def test_no_blocks_attached():
    with pytest.raises(ConfigError, match=r"^LoopWrapper \(node 5\): no loop blocks attached; connect at least one"):
        run_loop(LoopWrapper, [], {"num_steps": 3}, label="LoopWrapper (node 5)")


def test_required_input_missing(registry):
    add = registry.entries["AddBlock"].cls
    with pytest.raises(ConfigError, match=r"required input 'amount' is missing: give it on block 'a' \(AddBlock, node 4\)"):
        run_loop(LoopWrapper, [("a", BlockConfig(add, {"x": 0}, node="4"))], {"num_steps": 2})
    ok = run_loop(LoopWrapper, [("a", BlockConfig(add, {"x": 0}))], {"num_steps": 2}, state=_state(amount=5))
    assert ok.state.get("x") == 10


def test_wrong_type(user):
    with pytest.raises(ConfigError, match=r"input 'factor' of block 'b' \(MultiplyBlock, node 9\).*expected int, got str") as e:
        run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock, {"x": 0})),
                               ("b", BlockConfig(user["MultiplyBlock"], {"factor": "3"}, node="9"))],
                 {"num_steps": 1})
    assert e.value.block_node == "9"


def test_conflicting_values_are_reported_not_resolved():
    with pytest.raises(ConfigError) as info:
        run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock, {"x": 0}, node="3")),
                               ("b", BlockConfig(LoopBlock, {"x": 5}, node="4"))], {"num_steps": 1})
    msg = str(info.value)
    assert "'x'" in msg and "node 3" in msg and "node 4" in msg and "0" in msg and "5" in msg


def test_equal_values_on_two_nodes_agree():
    r = run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock, {"x": 1})), ("b", BlockConfig(LoopBlock, {"x": 1}))],
                 {"num_steps": 1})
    assert r.state.get("x") == 3


def test_node_value_beats_incoming_state_which_beats_default(user):
    r = run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock, {"x": 10}))], {"num_steps": 1}, state=_state(x=100))
    assert r.state.get("x") == 11
    r = run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock))], {"num_steps": 1}, state=_state(x=100))
    assert r.state.get("x") == 101
    mul = BlockConfig(user["MultiplyBlock"])  # factor: default 2
    r = run_loop(LoopWrapper, [("a", mul)], {"num_steps": 1}, state=_state(x=5))
    assert r.state.get("x") == 10
    r = run_loop(LoopWrapper, [("a", mul)], {"num_steps": 1}, state=_state(x=5, factor=7))
    assert r.state.get("x") == 35


def test_block_raising_at_step_1_names_loop_block_class_step_cause(user):
    blocks = [("block_1", BlockConfig(LoopBlock, {"x": 0}, node="2")),
              ("block_2", BlockConfig(user["FailAtStepBlock"], {"fail_at": 1}, node="3"))]
    with pytest.raises(BlockStepError) as info:
        run_loop(LoopWrapper, blocks, {"num_steps": 3}, label="LoopWrapper (node 1)")
    msg = str(info.value)
    for part in ("LoopWrapper (node 1)", "'block_2'", "FailAtStepBlock", "node 3", "step 1", "RuntimeError",
                 "deliberate failure at i=1"):
        assert part in msg, (part, msg)
    assert info.value.step == 1 and info.value.block_name == "block_2"
    assert info.value.block_node == "3"  # as data, for the host to mark that node


def test_where_a_loop_and_a_block_are_named():
    # One form, built in one place (modular.core.errors); messages and the hosts' tests read it.
    from modular.core.errors import block_where, node_where

    assert block_where("block_2", "FailAtStepBlock", "7") == "'block_2' (FailAtStepBlock, node 7)"
    assert block_where("block_2", "FailAtStepBlock") == "'block_2' (FailAtStepBlock)"
    assert node_where("LoopWrapper", 5) == "LoopWrapper (node 5)" and node_where("LoopWrapper") == "LoopWrapper"
    assert BlockConfig(LoopBlock, node="7").where("b") == "'b' (LoopBlock, node 7)"


def test_wrapper_failure_outside_blocks_is_a_loop_error():
    with pytest.raises(ModularError, match="LoopWrapper failed"):
        run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock, {"x": 0}))], {"num_steps": "three"})


def test_missing_value_read_by_block_names_the_block():
    # x is not required in the guide's declarations; a block that reads it unset fails at step 0.
    with pytest.raises(BlockStepError, match=r"'a' \(LoopBlock\).*step 0.*TypeError"):
        run_loop(LoopWrapper, [("a", BlockConfig(LoopBlock))], {"num_steps": 1})


# --- declarations -> specs --------------------------------------------------------------------


def test_specs_from_declarations(registry):
    mul = {s.name: s for s in registry.entries["MultiplyBlock"].input_specs()}
    assert mul["factor"].kind == "int" and mul["factor"].default == 2
    assert mul["factor"].options == {"min": 0, "max": 100}
    assert mul["factor"].description == "What x is multiplied by."
    assert mul["x"].kind == "json"
    rng = {s.name: s for s in registry.entries["RangeLoop"].input_specs()}
    assert rng["stop"].required and rng["stop"].default == 4 and rng["start"].kind == "int"
    assert registry.entries["RangeLoop"].role == "loop"
    assert registry.entries["LoopWrapper"].description == "I'm a loop!!"


def test_kinds_of_type_hints():
    specs = {s.name: s.kind for s in input_specs([
        InputParam("a", type_hint=float), InputParam("b", type_hint=bool), InputParam("c", type_hint=str),
        InputParam("d", type_hint=list), InputParam("e", type_hint=torch.Tensor), InputParam("f"),
        InputParam("g", type_hint=int | None), InputParam(kwargs_type="denoiser_input_fields"),
    ])}
    assert specs == {"a": "float", "b": "bool", "c": "str", "d": "json", "e": "object", "f": "json", "g": "int"}


def test_json_widget_parsing_never_evaluates():
    assert parse_json_widget("") is NOT_GIVEN
    assert parse_json_widget(" [1, 2] ") == [1, 2]
    with pytest.raises(ValueError):
        parse_json_widget("__import__('os').system('true')")


def test_check_value():
    spec = input_specs([InputParam("f", type_hint=float)])[0]
    assert check_value(spec, 1) is None and check_value(spec, 1.5) is None
    assert "expected float" in check_value(spec, "1.5")
    assert "expected float" in check_value(spec, True)


def test_describe_state():
    rows = dict((k, (t, d)) for k, t, d in describe(_state(x=3, t=torch.zeros(1, 4))))
    assert rows["x"] == ("int", "3")
    assert rows["t"][0] == "Tensor" and "shape=(1, 4)" in rows["t"][1] and "float32" in rows["t"][1]


# --- discovery --------------------------------------------------------------------------------


def test_discovery_of_pack_user_and_custom_blocks(registry):
    origins = {name: e.origin for name, e in registry.entries.items()}
    assert origins["LoopWrapper"] == "pack" and origins["LoopBlock"] == "pack"
    assert origins["MultiplyBlock"] == "user" and origins["RangeLoop"] == "user"
    assert origins["ScaleBlock"] == "custom"
    assert not registry.problems


def test_broken_file_is_reported_and_others_still_load(tmp_path):
    shutil.copy(FIXTURES / "broken" / "broken_blocks.py", tmp_path / "a_broken.py")
    shutil.copy(FIXTURES / "blocks" / "user_blocks.py", tmp_path / "b_good.py")
    (tmp_path / "exits.py").write_text("raise SystemExit(3)\n")
    reg = discover([tmp_path])
    assert "MultiplyBlock" in reg.entries
    paths = {p.path for p in reg.problems}
    assert str(tmp_path / "a_broken.py") in paths and str(tmp_path / "exits.py") in paths
    assert any("SyntaxError" in p.message for p in reg.problems)


def test_duplicate_class_name_keeps_first_and_reports_second(tmp_path):
    (tmp_path / "dup.py").write_text(
        "from diffusers.modular_pipelines import ModularPipelineBlocks\n"
        "class LoopBlock(ModularPipelineBlocks):\n"
        "    def __call__(self, components, block_state, **kw):\n"
        "        return components, block_state\n"
    )
    reg = discover([tmp_path])
    assert reg.entries["LoopBlock"].cls is LoopBlock
    assert any("already defined" in p.message and p.path.endswith("dup.py") for p in reg.problems)


def test_only_leaf_blocks_and_concrete_wrappers_become_entries():
    assert compat.role_of(LoopWrapper) == "loop" and compat.role_of(LoopBlock) == "block"
    assert compat.role_of(LoopSequentialPipelineBlocks) is None
    assert compat.role_of(ModularPipelineBlocks) is None
    assert compat.role_of(OutputParam) is None


def test_core_never_imports_comfyui():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import modular\n"
        "modular.discover()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'nodes', 'server', 'folder_paths', 'comfy_api')]\n"
        "assert not bad, bad\n" % str(ROOT)
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT.parent))


def _state(**values):
    state = compat.PipelineState()
    for k, v in values.items():
        state.set(k, v)
    return state
