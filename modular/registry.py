"""Which loop wrappers and loop blocks exist: the pack's own, user block files, diffusers custom-block folders.

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
from dataclasses import dataclass, field
from pathlib import Path

from . import compat
from .sampling import HOST_VALUES, PROVIDED_IN_LOOP, is_denoise_loop
from .params import ParamSpec, component_specs, input_specs

PACK_BLOCKS_PACKAGE = __package__ + ".blocks"
USER_MODULE_PREFIX = "modular_loops_user_blocks"


@dataclass
class BlockEntry:
    """One discovered class: a loop wrapper (role "loop") or a loop block (role "block")."""

    name: str
    cls: type
    role: str
    origin: str  # "pack", "user" or "custom" (a diffusers custom-block folder)
    source: str

    @property
    def prototype(self):
        if "_prototype" not in self.__dict__:
            self.__dict__["_prototype"] = self.cls()
        return self.__dict__["_prototype"]

    @property
    def description(self) -> str:
        try:
            return self.prototype.description or ""
        except NotImplementedError:
            return ""

    def input_specs(self) -> list[ParamSpec]:
        """The specs of its own declared inputs (`loop_inputs` of a wrapper), read once."""
        if "_input_specs" not in self.__dict__:
            params = self.prototype.loop_inputs if self.role == "loop" else self.prototype.inputs
            self.__dict__["_input_specs"] = input_specs(params)
        return self.__dict__["_input_specs"]

    def component_specs(self) -> list[ParamSpec]:
        if "_component_specs" not in self.__dict__:
            p = self.prototype
            comps = p.loop_expected_components if self.role == "loop" else p.expected_components
            self.__dict__["_component_specs"] = component_specs(comps)
        return self.__dict__["_component_specs"]

    @property
    def is_denoise_loop(self) -> bool:
        """A loop wrapper that walks a sampler's sigmas (see `modular/sampling.py`)."""
        return self.role == "loop" and is_denoise_loop(s.name for s in self.input_specs())

    @property
    def family(self) -> str | None:
        """diffusers' `model_name`: the pipeline family a block is written for (None: any)."""
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

    def provided_in_loop(self, entry: BlockEntry) -> set[str]:
        """The inputs of `entry` that the loop it runs in provides, so its node does not show them: a denoise
        loop's host values; for a block of a denoise loop's family (the same `model_name`), those and
        `denoised` (`sampling.PROVIDED_IN_LOOP`). Nothing for any other block: in a plain loop a block is
        given what it reads (`latents` included)."""
        if entry.role == "loop":
            return set(HOST_VALUES) if entry.is_denoise_loop else set()
        families = {loop.family for loop in self.loops() if loop.is_denoise_loop and loop.family is not None}
        return set(PROVIDED_IN_LOOP) if entry.family in families else set()

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
        entry = BlockEntry(name=name, cls=cls, role=role, origin=origin, source=source)
        try:
            entry.input_specs(), entry.component_specs(), entry.description
        except Exception as e:  # a class whose declarations cannot be read cannot become a node
            self.problems.append(LoadProblem(source, f"{name}: cannot read its declarations: {type(e).__name__}: {e}"))
            return
        self.entries[name] = entry


def discover(user_dirs=(), include_pack=True, include_shipped=False) -> Registry:
    """Find every loop wrapper and loop block: the pack's `blocks/` package, then each user folder, then (with
    `include_shipped`) diffusers' own loops, loop blocks and steps (`modular.shipped`, imported when used)."""
    registry = Registry()
    if include_pack:
        pack_dir = Path(__file__).parent / "blocks"
        for path in sorted(pack_dir.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = importlib.import_module(f"{PACK_BLOCKS_PACKAGE}.{path.stem}")
            registry.add_module(module, "pack", str(path))
    for folder in user_dirs:
        scan_folder(registry, Path(folder))
    if include_shipped:
        from .shipped import add_shipped

        add_shipped(registry)
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
