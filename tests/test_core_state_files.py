"""Core tier: a pipeline state in a .safetensors file and back (modular/state_files.py), and the files that are
refused: no pickle is ever read, names from a workflow stay in their folder."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from modular import PACK_VERSION, compat
from modular.state_files import StateFileError, confined, load_state, read_info, save_state


def state_of(**values):
    state = compat.PipelineState()
    for k, v in values.items():
        state.set(k, v)
    return state


EVERY_KIND = dict(
    latents=torch.randn(1, 4, 8, 8), half=torch.randn(2, 3).half(), brain=torch.randn(3).bfloat16(),
    steps=torch.arange(5), mask=torch.tensor([True, False]), scalar=torch.tensor(1.5),
    n=3, big=2**62, f=0.1, inf=math.inf, flag=True, off=False, text="a cat", nothing=None,
    items=[1, 2.5, "x", None], pair=(0, 0), nested={"a": [1, (2, 3)], "b": {"c": "d"}}, empty_list=[], empty_dict={},
)


def test_every_kind_of_value_round_trips(tmp_path):
    state = state_of(**EVERY_KIND)
    state.kwargs_mapping = {"denoiser_input_fields": ["latents"]}
    compat.set_made_by(state, "LoopWrapper", ["LoopBlock", "LoopBlock"], 3)
    save_state(state, tmp_path / "s.safetensors", {"pack_version": PACK_VERSION, **compat.made_by(state)})
    loaded, info = load_state(tmp_path / "s.safetensors")
    for name, value in EVERY_KIND.items():
        got = loaded.get(name)
        if torch.is_tensor(value):
            assert got.dtype == value.dtype and got.shape == value.shape and torch.equal(got, value), name
        else:
            assert type(got) is type(value) and got == value, name  # tuples stay tuples, ints ints
    assert loaded.kwargs_mapping == {"denoiser_input_fields": ["latents"]}
    assert info["loop"] == "LoopWrapper" and info["blocks"] == ["LoopBlock", "LoopBlock"] and info["step"] == 3
    assert info["pack_version"] == PACK_VERSION


def test_the_pack_version_is_pyprojects():
    assert re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1) == PACK_VERSION


def test_a_value_a_file_cannot_hold_is_named_and_nothing_is_written(tmp_path):
    state = state_of(x=1, generator=torch.Generator().manual_seed(0), model=torch.nn.Linear(2, 2), t=torch.ones(2))
    with pytest.raises(StateFileError, match=r"generator \(Generator\), model \(Linear\)"):
        save_state(state, tmp_path / "s.safetensors")
    assert os.listdir(tmp_path) == []  # no file, no leftover temporary file
    skipped = save_state(state, tmp_path / "s.safetensors", skip_unsupported=True)
    assert skipped == ["generator (Generator)", "model (Linear)"]
    loaded, _ = load_state(tmp_path / "s.safetensors")
    assert set(loaded.values) == {"x", "t"}
    with pytest.raises(StateFileError, match=r"items\[1\] \(object\)"):
        save_state(state_of(items=[1, object()]), tmp_path / "t.safetensors")


def test_files_that_are_not_state_files_are_refused_with_the_reason(tmp_path):
    marker = tmp_path / "unpickled"
    pickle = tmp_path / "pickle.safetensors"
    torch.save({"x": torch.ones(1)}, pickle)  # a pickle renamed .safetensors: never unpickled
    with pytest.raises(StateFileError, match="pickle.safetensors: not a safetensors file"):
        load_state(pickle)
    assert not marker.exists()
    from safetensors.torch import save_file

    save_file({"model.weight": torch.ones(2)}, tmp_path / "checkpoint.safetensors")
    with pytest.raises(StateFileError, match="not a pipeline state"):
        load_state(tmp_path / "checkpoint.safetensors")
    save_state(state_of(latents=torch.randn(64, 64)), tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match="truncated.safetensors"):
        load_state(tmp_path / "truncated.safetensors")
    save_file({"x": torch.ones(2)}, tmp_path / "badmeta.safetensors", metadata={"modular_loops.state": "{not json"})
    with pytest.raises(StateFileError, match="not valid JSON"):
        load_state(tmp_path / "badmeta.safetensors")
    meta = {"format": 1, "values": {}, "tensors": {"x": {"dtype": "float32", "shape": [3]}}}
    save_file({"x": torch.ones(2)}, tmp_path / "shape.safetensors", metadata={"modular_loops.state": json.dumps(meta)})
    with pytest.raises(StateFileError, match=r"tensor 'x' is torch.float32 \[2\], its metadata declares float32 \[3\]"):
        load_state(tmp_path / "shape.safetensors")
    meta = {"format": 1, "values": {"n": {"t": "int", "v": "3"}}, "tensors": {}}
    save_file({}, tmp_path / "type.safetensors", metadata={"modular_loops.state": json.dumps(meta)})
    with pytest.raises(StateFileError, match="a value of type int holds '3'"):
        load_state(tmp_path / "type.safetensors")
    assert read_info(tmp_path / "good.safetensors")["tensors"]["latents"]["shape"] == [64, 64]


def test_names_from_a_workflow_stay_in_their_folder(tmp_path):
    root = tmp_path / "input"
    (root / "states").mkdir(parents=True)
    (root / "states" / "a.safetensors").write_bytes(b"")
    assert confined("states/a.safetensors", root) == (root / "states" / "a.safetensors").resolve()
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"")
    (root / "link.safetensors").symlink_to(outside)
    for name, why in [(str(outside), "absolute"), ("../secret.safetensors", r"'\.\.'"),
                      ("link.safetensors", "symlink"), ("states/a.ckpt", "end in .safetensors"), ("", "absolute")]:
        with pytest.raises(StateFileError, match=why):
            confined(name, root)
    assert Path(confined("states/a.safetensors", root)).is_relative_to(root.resolve())


def test_one_tensor_under_two_names_and_views_are_saved_each_on_its_own(tmp_path):
    t = torch.randn(3, 4)
    state = state_of(denoised=t, old_denoised=t, row=t[1], latents=torch.ones(2))  # as DPM++ 2M leaves them
    save_state(state, tmp_path / "s.safetensors")
    loaded, _ = load_state(tmp_path / "s.safetensors")
    assert torch.equal(loaded.get("denoised"), t) and torch.equal(loaded.get("old_denoised"), t)
    assert torch.equal(loaded.get("row"), t[1]) and torch.equal(loaded.get("latents"), torch.ones(2))
    assert t.data_ptr() == state.get("denoised").data_ptr()  # the state itself is left as it was
