"""Host tier, ComfyUI's cache modes: what the pack's correctness rests on (block nodes are configuration, so an
unchanged loop is taken from the cache and a changed block widget runs it again; a loop never changes the state it
was given, so a cached state output stays as it was when later nodes run on it) holds under every cache mode the
host offers, as ComfyUI's own execution tests run each scenario under each (`--cache-classic`, `--cache-lru`,
`--cache-none`, and on 0.33 `--cache-ram`, its default). One server per mode; skipped, loudly, without a ComfyUI."""

import re

import pytest

from comfy_host import ComfyServer, Graph, comfy_python, install_blocks, require_host
from conftest import FIXTURES

COMFY = require_host()
LOOP, BLOCK = "ModularLoop_LoopWrapper", "ModularBlock_LoopBlock"


def cache_modes() -> dict:
    """{mode: its command-line arguments} of the cache modes this host's ComfyUI has (read from its cli_args.py)."""
    text = (COMFY / "comfy" / "cli_args.py").read_text(encoding="utf-8")
    modes = {"classic": ["--cache-classic"], "lru": ["--cache-lru", "8"], "none": ["--cache-none"],
             "ram": ["--cache-ram"]}
    return {mode: args for mode, args in modes.items() if re.search(rf'"{args[0]}"', text)}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("user")  # one for every mode's server: the pack keeps diffusers' declarations there


@pytest.fixture(scope="module", params=list(cache_modes()))
def server(request, tmp_path_factory, user_dir):
    base = tmp_path_factory.mktemp(f"cache_{request.param}")
    server = ComfyServer(COMFY, comfy_python(COMFY), base,
                         extra_args=[*cache_modes()[request.param], "--user-directory", str(user_dir)])
    install_blocks(server.blocks_dir, FIXTURES)
    server.mode = request.param
    yield server.start()
    server.stop()


def chain(factor=3, second_factor=2):
    """loop 1 (x = 0, then (x + 1) * factor per step, 2 steps) -> its state into loop 2 (x + 1, then * second_factor,
    2 steps); x read out of both."""
    g = Graph()
    first = g.node(LOOP, num_steps="2", block_1=g.node(BLOCK, x="0"),
                   block_2=g.node("ModularBlock_MultiplyBlock", x="", factor=factor))
    second = g.node(LOOP, num_steps="2", state=first, block_1=g.node(BLOCK, x=""),
                    block_2=g.node("ModularBlock_MultiplyBlock", x="", factor=second_factor))
    reads = [g.node("PreviewAny", source=g.node("ModularStateGet", state=loop, key="x")) for loop in (first, second)]
    return g, first, second, reads


def test_loops_are_cached_and_rerun_as_the_mode_says_and_a_cached_state_is_never_changed(server):
    g, first, second, reads = chain()
    run = server.run(g)
    assert run.status == "success", run.error
    assert [run.text(r) for r in reads] == ["12", "54"]  # ((0+1)*3+1)*3; ((12+1)*2+1)*2
    again = server.run(g)
    assert [again.text(r) for r in reads] == ["12", "54"]
    if server.mode == "none":
        assert {first.id, second.id} <= again.ran(), server.mode  # nothing kept: everything runs again
    else:
        assert {first.id, second.id} <= again.cached() and not {first.id, second.id} & again.ran(), server.mode
    g2, first2, second2, reads2 = chain(second_factor=5)  # a block widget of the second loop changed
    changed = server.run(g2)
    assert [changed.text(r) for r in reads2] == ["12", "330"]  # ((12+1)*5+1)*5: the first loop's state as it was
    assert second2.id in changed.ran(), server.mode
    if server.mode != "none":
        assert first2.id in changed.cached(), server.mode  # its cached state, which the second loop read, unchanged
