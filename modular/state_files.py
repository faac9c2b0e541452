"""A pipeline state in one `.safetensors` file, and back: safetensors for tensors, JSON for everything else.

The file: every tensor value of the state is a tensor of the file (on the CPU, contiguous; the name is the
value's name); the file's metadata holds one entry, `modular_loops.state`, a JSON object with
- `format` (1), `pack_version`, `loop` / `blocks` / `step`: what made the state and where it stood (`step`: the
  position in its whole schedule it stopped at, `compat.stopped_at`);
- `values`: {name: encoded value} for the other values, each with its type kept
  (`{"t": "int", "v": 3}`, lists, tuples and dicts element by element, None, bools, floats, strings);
- `tensors`: {name: {"dtype", "shape"}} of the tensor values, checked against the tensors when loading;
- `kwargs_mapping`: the state's kwargs_type groups.
Nothing is ever unpickled or evaluated: `safetensors.safe_open` reads the tensors (memory-mapped: a large file
is not read into memory twice) and `json` the rest. Writing goes to a temporary file in the same folder, renamed
into place when whole: a failed save leaves no file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .core import compat
from .core.errors import ModularError

FORMAT = 1
META_KEY = "modular_loops.state"
SUFFIX = ".safetensors"


class StateFileError(ModularError):
    """A state that cannot be saved, or a file that is not a state file; the message names the file and why."""


def _encode(value, path: str):
    """-> JSON-able value with its type kept, or raise TypeError naming `path`."""
    if value is None:
        return {"t": "none"}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, int):
        return {"t": "int", "v": value}
    if isinstance(value, float):
        return {"t": "float", "v": repr(value)}  # repr keeps inf / nan and every digit
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if isinstance(value, (list, tuple)):
        return {"t": type(value).__name__, "v": [_encode(v, f"{path}[{k}]") for k, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"t": "dict", "v": {k: _encode(v, f"{path}[{k!r}]") for k, v in value.items()}}
    raise TypeError(f"{path} ({type(value).__name__})")


def _decode(data):
    kind, value = data["t"], data.get("v")
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        expected = {"bool": bool, "int": int, "str": str}[kind]
        if type(value) is not expected:
            raise ValueError(f"a value of type {kind} holds {value!r}")
        return value
    if kind == "float":
        return float(value)
    if kind in ("list", "tuple"):
        items = [_decode(v) for v in value]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _decode(v) for k, v in value.items()}
    raise ValueError(f"unknown value type {kind!r}")


def _is_tensor(value) -> bool:
    return hasattr(value, "detach") and hasattr(value, "dtype") and hasattr(value, "shape")


def encode_state(state, skip_unsupported=False) -> tuple[dict, dict, list[str]]:
    """-> (tensors, JSON-able values, names skipped). Raises StateFileError listing every value that is neither
    a tensor nor a JSON value (a generator, a model, a scheduler) unless `skip_unsupported`."""
    tensors, values, unsupported, storages = {}, {}, [], set()
    for name, value in compat.state_values(state).items():
        if _is_tensor(value):
            tensor = value.detach().to("cpu").contiguous()
            storage = tensor.untyped_storage().data_ptr()
            if storage in storages:  # one tensor under two names (DPM++ 2M's denoised / old_denoised), or a view:
                tensor = tensor.clone()  # safetensors stores each name on its own
            storages.add(storage)
            tensors[name] = tensor
            continue
        try:
            values[name] = _encode(value, name)
        except TypeError as e:
            unsupported.append(str(e.args[0]))
    if unsupported and not skip_unsupported:
        raise StateFileError(
            f"the state holds values that are neither tensors nor JSON values, which a state file cannot hold: "
            f"{', '.join(unsupported)}; choose to skip them on the node, or drop them from the state")
    return tensors, values, unsupported


def save_state(state, path, info: dict | None = None, skip_unsupported=False) -> list[str]:
    """Write `state` to `path` (see the module's docstring); `info`: what made it (default: the loop, blocks and
    position the state records, and this pack's version). -> the names skipped. Nothing is written when it fails."""
    from safetensors.torch import save_file

    from . import PACK_VERSION

    path = Path(path)
    if info is None:
        info = {"pack_version": PACK_VERSION, **compat.made_by(state)}
    tensors, values, skipped = encode_state(state, skip_unsupported)
    meta = {"format": FORMAT, **(info or {}), "values": values,
            "tensors": {k: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)} for k, t in tensors.items()},
            "kwargs_mapping": {k: list(v) for k, v in getattr(state, "kwargs_mapping", {}).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=SUFFIX + ".part", dir=str(path.parent))
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return skipped


class Autosave:
    """Where a running loop stands, kept in one state file: written every `every` steps (at the positions of the
    whole schedule that are a multiple of `every`, so a resumed run keeps its numbers) and, by `finish()`, once more
    at the last finished step when the run ends, done, interrupted or failed: an Interrupt or a crash loses at most
    `every` steps.

    The host hands `step_done(position, snapshot)` the state after each step (`position`: where the loop stands in
    its whole schedule, as the runner tells it; `snapshot()`: a copy, made then); `path()` names the file (asked at
    the first write); `written(position, path)` is told after each write."""

    def __init__(self, every: int, path, written=None, label: str = "loop"):
        if every < 1:
            raise ValueError(f"{label}: save every {every} steps: it must be 1 or more")
        self.every, self._path, self.written, self.label = every, path, written, label
        self.last = None  # (position, state) after the last finished step
        self.saved_at = None  # the position of the state last written
        self.file = None

    def step_done(self, position: int, snapshot):
        self.last = (position, snapshot())
        if position % self.every == 0:
            self.write()

    def write(self):
        position, state = self.last
        if self.file is None:
            self.file = Path(self._path())
        try:
            save_state(state, self.file)
        except StateFileError as e:
            raise StateFileError(f"{self.label}: saving step {position} (save_every): {e}") from e
        self.saved_at = position
        if self.written is not None:
            self.written(position, self.file)

    def finish(self):
        """Write the last finished step, unless it is the one written last (after the run, however it ended)."""
        if self.last is not None and self.saved_at != self.last[0]:
            self.write()


def read_info(path) -> dict:
    """The state file's JSON metadata (format, what made it, the values); StateFileError if it is not a state file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as e:  # not a safetensors file: a pickle renamed, a truncated file, anything else
        raise StateFileError(f"{path.name}: not a safetensors file ({type(e).__name__}: {e})") from e
    if META_KEY not in meta:
        raise StateFileError(f"{path.name}: a safetensors file, but not a pipeline state (no '{META_KEY}' metadata; "
                             f"a checkpoint or a latent?)")
    try:
        info = json.loads(meta[META_KEY])
    except ValueError as e:
        raise StateFileError(f"{path.name}: its state metadata is not valid JSON ({e})") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise StateFileError(f"{path.name}: state format {info.get('format') if isinstance(info, dict) else '?'!r}, "
                             f"this pack reads format {FORMAT}")
    return info


def load_state(path):
    """-> (PipelineState, info) of a state file, checking every tensor against its declared dtype and shape."""
    from safetensors import safe_open

    path = Path(path)
    info = read_info(path)
    state = compat.PipelineState()
    declared = info.get("tensors", {})
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if keys != set(declared):
                raise StateFileError(f"{path.name}: its tensors ({', '.join(sorted(keys)) or 'none'}) are not the ones "
                                     f"its metadata declares ({', '.join(sorted(declared)) or 'none'})")
            for name in sorted(keys):
                tensor = f.get_tensor(name)
                want = declared[name]
                if list(tensor.shape) != list(want.get("shape", [])) or str(tensor.dtype).replace("torch.", "") != want.get("dtype"):
                    raise StateFileError(f"{path.name}: tensor '{name}' is {str(tensor.dtype)} {list(tensor.shape)}, "
                                         f"its metadata declares {want.get('dtype')} {want.get('shape')}")
                state.values[name] = tensor
        for name, value in info.get("values", {}).items():
            state.values[name] = _decode(value)
    except StateFileError:
        raise
    except Exception as e:
        raise StateFileError(f"{path.name}: cannot be read as a pipeline state ({type(e).__name__}: {e})") from e
    state.kwargs_mapping = {k: list(v) for k, v in info.get("kwargs_mapping", {}).items()}
    if info.get("loop"):
        compat.set_made_by(state, info["loop"], info.get("blocks", []), info.get("step"))
    return state, info


def confined(name: str, root) -> Path:
    """The path of the file `name` (from a workflow: untrusted) inside the folder `root`; StateFileError for an
    absolute path, `..`, a symlink that leads out of `root`, or another extension."""
    root = Path(root).resolve()
    if not name or os.path.isabs(name) or Path(name).drive:
        raise StateFileError(f"{name!r}: a state file is named relative to its folder, not by an absolute path")
    parts = Path(name).parts
    if ".." in parts:
        raise StateFileError(f"{name!r}: '..' leads out of the folder; name a file inside it")
    if not name.endswith(SUFFIX):
        raise StateFileError(f"{name!r}: state files end in {SUFFIX}")
    path = (root / name).resolve()
    if os.path.commonpath([str(root), str(path)]) != str(root):
        raise StateFileError(f"{name!r}: leads out of its folder (a symlink?)")
    return path
