"""Which loop wrappers, loop blocks and pipeline steps exist: the pack's own, user block files and diffusers
custom-block folders (diffusers' own are entries too, found from source by `modular.pipelines.scan` and imported
when used).

Only files installed on disk are ever imported. Discovery order is fixed (pack first, then each user
folder in the order given, files sorted by name), so when two classes share a name the first one
found keeps it and the later one is reported as a problem. Broken files are reported with their
path and skipped; everything else still loads.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from . import compat
from .params import ParamSpec, component_specs, input_specs

PACK_BLOCKS_DIR = Path(__file__).parent.parent / "blocks"
PACK_BLOCKS_PACKAGE = __package__.rsplit(".", 1)[0] + ".blocks"
USER_MODULE_PREFIX = "modular_loops_user_blocks"


class BlockEntry:
    """One discovered class: a loop wrapper (role "loop"), a loop block ("block"), a pipeline step ("step": a leaf
    block run once on a state, around a loop; diffusers' text encoders, set-timesteps, decoders, ...) or a
    family's Auto blocks ("workflow": the blocks `pipe(...)` runs, whose named `workflows` diffusers lays out).

    `cls` is the class, or `load()` imports it the first time it is read (diffusers' own classes: importing their
    modules pulls in diffusers' models, so they are found from source and loaded when a node needs them).
    `group`: where the node library files it (diffusers' `<family>/<stage>`); `default_blocks`: a wrapper that
    declares its own blocks (`block_classes`) and runs those when none are attached; `read_specs(entry)`: how its
    inputs are read, where not by `params.input_specs` (diffusers' own: `modular.pipelines.params.entry_specs`)."""

    def __init__(self, name: str, role: str, origin: str, source: str, cls: type | None = None,
                 load: Callable[[], type] | None = None, group: str | None = None, default_blocks: bool = False,
                 read_specs: Callable | None = None, workflows: tuple = ()):
        if (cls is None) == (load is None):
            raise ValueError(f"{name}: give the class or a way to load it, one of them")
        self.name, self.role, self.origin, self.source = name, role, origin, source
        self.group, self.default_blocks, self.read_specs, self.workflows = group, default_blocks, read_specs, workflows
        self._cls, self._load = cls, load

    def __repr__(self):
        return f"BlockEntry({self.name!r}, {self.role!r}, {self.origin!r})"

    @property
    def cls(self) -> type:
        if self._cls is None:
            self._cls = self._load()
        return self._cls

    @cached_property
    def prototype(self):
        return self.cls()

    @property
    def description(self) -> str:
        try:
            return self.prototype.description or ""
        except NotImplementedError:
            return ""

    @cached_property
    def _input_specs(self) -> list[ParamSpec]:
        if self.read_specs is not None:
            return self.read_specs(self)
        return input_specs(self.prototype.loop_inputs if self.role == "loop" else self.prototype.inputs)

    def input_specs(self) -> list[ParamSpec]:
        """The specs of its own declared inputs (`loop_inputs` of a wrapper), read once."""
        return self._input_specs

    @cached_property
    def _component_specs(self) -> list[ParamSpec]:
        p = self.prototype
        return component_specs(p.loop_expected_components if self.role == "loop" else p.expected_components)

    def component_specs(self) -> list[ParamSpec]:
        return self._component_specs

    @property
    def model_name(self) -> str | None:
        """diffusers' `model_name`: the pipeline a block is written for (None: any). (A "family" is one of diffusers'
        `modular_pipelines/<family>/` folders, `pipelines.scan`.)"""
        return getattr(self.prototype, "model_name", None)


@dataclass
class LoadProblem:
    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


@dataclass
class Registry:
    entries: dict[str, BlockEntry] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)

    def loops(self) -> list[BlockEntry]:
        return [e for e in self.entries.values() if e.role == "loop"]

    def blocks(self) -> list[BlockEntry]:
        return [e for e in self.entries.values() if e.role == "block"]

    def add_module(self, module, origin: str, source: str):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                self.add_class(cls, origin, source)

    def add_class(self, cls: type, origin: str, source: str):
        role = compat.role_of(cls)
        if role is None:
            return
        name = cls.__name__
        if name in self.entries:
            first = self.entries[name]
            if first.cls is not cls:
                self.problems.append(
                    LoadProblem(source, f"{role} class '{name}' is already defined by {first.source}; this one is skipped")
                )
            return
        entry = BlockEntry(name, role, origin, source, cls=cls, default_blocks=bool(compat.default_blocks(cls)))
        try:
            entry.input_specs(), entry.component_specs(), entry.description
        except Exception as e:  # a class whose declarations cannot be read cannot become a node
            self.problems.append(LoadProblem(source, f"{name}: cannot read its declarations: {type(e).__name__}: {e}"))
            return
        self.entries[name] = entry


def discover(user_dirs=(), include_pack=True) -> Registry:
    """Find every loop wrapper and loop block: the pack's `blocks/` package, then each user folder (diffusers' own
    are added by `modular.pipelines.scan.add_shipped`)."""
    registry = Registry()
    if include_pack:
        for path in sorted(PACK_BLOCKS_DIR.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = importlib.import_module(f"{PACK_BLOCKS_PACKAGE}.{path.stem}")
            registry.add_module(module, "pack", str(path))
    for folder in user_dirs:
        scan_folder(registry, Path(folder))
    return registry


def scan_folder(registry: Registry, folder: Path):
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        try:
            if path.is_file() and path.suffix == ".py":
                registry.add_module(_import_file(path), "user", str(path))
            elif path.is_dir() and (path / "modular_config.json").is_file():
                registry.add_class(compat.load_custom_block_class(path), "custom", str(path))
        except (Exception, SystemExit) as e:  # a user file must never stop the host from starting
            registry.problems.append(LoadProblem(str(path), f"{type(e).__name__}: {e}"))


def _import_file(path: Path):
    """Import one user block file under a private module name derived from its path."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    module_name = f"{USER_MODULE_PREFIX}.{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
