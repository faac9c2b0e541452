"""diffusers' own blocks: the loop wrappers, loop blocks and steps it ships in its model families
(`diffusers/modular_pipelines/<family>/<stage>.py`), found without importing them.

Importing those modules pulls in diffusers' models and takes seconds, so discovery reads their source
text: a class is a loop wrapper, a leaf block or neither by the same rule as `compat.role_of`, applied to
the class statements of the module (bases resolved within it). The class itself is imported
the first time a node needs its declarations (`ShippedEntry.cls`), when ComfyUI first lists its nodes or
runs one. A core test checks, for every module, that the source reading agrees with `compat.role_of` on
the imported classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from .params import ParamSpec, input_specs
from .registry import BlockEntry

PACKAGE = "diffusers.modular_pipelines"
# Modules of a family that hold no blocks of their own (compositions, the pipeline class, helpers).
NOT_BLOCKS = ("__init__", "modular_pipeline", "constants", "image_processor")
LOOP_BASE = "LoopSequentialPipelineBlocks"
LEAF_BASE = "ModularPipelineBlocks"
COMPOSITES = ("SequentialPipelineBlocks", "AutoPipelineBlocks", "ConditionalPipelineBlocks", LOOP_BASE)


def package_dir() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


@dataclass(frozen=True)
class ShippedClass:
    family: str  # the folder, e.g. "stable_diffusion_xl"
    stage: str  # the module, e.g. "denoise", "before_denoise", "encoders"
    name: str
    role: str  # "loop", "block" (a loop block, in denoise.py) or "step" (any other leaf block)
    default_blocks: bool  # a wrapper with its own `block_classes`: it runs those when none are attached

    @property
    def module(self) -> str:
        return f"{PACKAGE}.{self.family}.{self.stage}"


CLASS = re.compile(r"^class\s+(\w+)\s*(?:\(([^)]*)\))?\s*:", re.M)
TOP_LEVEL = re.compile(r"^(?=[^\s#)])", re.M)


def _class_bodies(text: str):
    """(name, base names, body text) of every top-level class statement."""
    starts = [(m.start(), m.group(1), m.group(2) or "") for m in CLASS.finditer(text)]
    for k, (start, name, bases) in enumerate(starts):
        header_end = text.index(":", text.index(name, start) + len(name) + len(bases))
        rest = text[header_end + 1:]
        end = TOP_LEVEL.search(rest, 1)
        body = rest[: end.start()] if end else rest
        names = [b.strip().split(".")[-1].split("[")[0] for b in bases.replace("\n", " ").split(",") if b.strip()]
        yield name, [n for n in names if n and "=" not in n], body


def scan_module(path: Path, family: str) -> list[ShippedClass]:
    """The loop wrappers and leaf blocks a module defines, read from its source (class statements, their bases
    within the module, whether they define `__call__` or set `block_classes`)."""
    classes = {name: (bases, body) for name, bases, body in _class_bodies(path.read_text(encoding="utf-8"))}
    memo: dict[str, tuple[str | None, bool, bool]] = {}

    def kind(name: str, seen=()):
        """-> (root base: LOOP_BASE / LEAF_BASE / a composite / None, has a __call__ of its own or of a base in
        the module, has block_classes)."""
        if name in memo:
            return memo[name]
        if name not in classes or name in seen:
            return (name if name in (LEAF_BASE, *COMPOSITES) else None), False, False
        bases, body = classes[name]
        root, call, blocks = None, bool(CALL.search(body)), bool(BLOCK_CLASSES.search(body))
        for base in bases:
            b_root, b_call, b_blocks = kind(base, (*seen, name))
            if b_root is not None and root is None:
                root = b_root
                call = call or (b_call and base in classes)
                blocks = blocks or b_blocks
        memo[name] = (root, call, blocks)
        return memo[name]

    stage = path.stem
    found = []
    for name in classes:
        root, call, blocks = kind(name)
        if root == LOOP_BASE and call:
            found.append(ShippedClass(family, stage, name, "loop", blocks))
        elif root == LEAF_BASE and call:
            found.append(ShippedClass(family, stage, name, "block" if stage == "denoise" else "step", False))
    return found


CALL = re.compile(r"^\s+(?:async\s+)?def\s+__call__\s*\(", re.M)
BLOCK_CLASSES = re.compile(r"^\s+block_classes\s*[:=]", re.M)


def scan(root: Path | None = None) -> list[ShippedClass]:
    """Every shipped loop wrapper and leaf block, family by family, module by module (sorted)."""
    root = root or package_dir()
    if root is None:
        return []
    found = []
    for family in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for path in sorted(family.glob("*.py")):
            if path.stem in NOT_BLOCKS or path.stem.startswith("modular_blocks"):
                continue
            found.extend(scan_module(path, family.name))
    return found


class ShippedEntry(BlockEntry):
    """A registry entry for a class diffusers ships, imported on first use of `cls`."""

    def __init__(self, shipped: ShippedClass, source: str):
        self.shipped = shipped
        super().__init__(name=shipped.name, cls=None, role="loop" if shipped.role == "loop" else "block",
                         origin="diffusers", source=source)

    @property
    def cls(self) -> type:
        if self.__dict__.get("_cls") is None:
            self.__dict__["_cls"] = getattr(importlib.import_module(self.shipped.module), self.shipped.name)
        return self.__dict__["_cls"]

    @cls.setter
    def cls(self, value):
        self.__dict__["_cls"] = value

    def input_specs(self) -> list[ParamSpec]:
        if "_input_specs" not in self.__dict__:
            params = self.prototype.loop_inputs if self.role == "loop" else self.prototype.inputs
            self.__dict__["_input_specs"] = input_specs(params, templates=ui_templates(), typed_by_default=True)
        return self.__dict__["_input_specs"]

    @property
    def is_step(self) -> bool:
        return self.shipped.role == "step"

    @property
    def is_denoise_loop(self) -> bool:  # diffusers' loops step their own schedulers, not a host's sigmas
        return False

    @property
    def family(self) -> str | None:  # not read from the class: that would import it
        return None

    @property
    def category(self) -> str:
        return f"{self.shipped.family}/{self.shipped.stage}"


def add_shipped(registry, root: Path | None = None):
    """Add diffusers' shipped classes to `registry` (a name the registry already has keeps its first owner)."""
    for shipped in scan(root):
        if shipped.name in registry.entries:
            continue
        registry.entries[shipped.name] = ShippedEntry(shipped, f"diffusers/modular_pipelines/{shipped.family}/{shipped.stage}.py")
    return registry


def ui_templates() -> dict:
    """diffusers' UI templates of standard pipeline parameters (its Mellon node templates: `prompt` is text,
    `height` an int, ...), which type the untyped inputs of its blocks; {} where this diffusers has none."""
    try:
        from diffusers.modular_pipelines.mellon_node_utils import MELLON_PARAM_TEMPLATES
    except ImportError:
        return {}
    return MELLON_PARAM_TEMPLATES


GUIDERS_PACKAGE = "diffusers.guiders"
GUIDER_BASE = "BaseGuidance"


@dataclass(frozen=True)
class ShippedGuider:
    """A guider class diffusers ships (`diffusers/guiders/<module>.py`), found without importing it."""

    module: str
    name: str

    def load(self) -> type:
        return getattr(importlib.import_module(f"{GUIDERS_PACKAGE}.{self.module}"), self.name)


def scan_guiders(root: Path | None = None) -> list[ShippedGuider]:
    """Every concrete guider: a class of `diffusers/guiders/*.py` whose bases lead to BaseGuidance."""
    if root is None:
        spec = importlib.util.find_spec(GUIDERS_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return []
        root = Path(spec.submodule_search_locations[0])
    found = []
    for path in sorted(root.glob("*.py")):
        classes = {name: bases for name, bases, _ in _class_bodies(path.read_text(encoding="utf-8"))}

        def derives(name, seen=()):
            bases = classes.get(name, [])
            return any(b == GUIDER_BASE or (b in classes and b not in seen and derives(b, (*seen, name))) for b in bases)

        found.extend(ShippedGuider(path.stem, name) for name in classes if name != GUIDER_BASE and derives(name))
    return found
