"""diffusers' own blocks: the loop wrappers, loop blocks and steps it ships in its model families
(`diffusers/modular_pipelines/<family>/<stage>.py`), and its guiders (`diffusers/guiders/*.py`), found without
importing them.

Importing those modules pulls in diffusers' models and takes seconds, so discovery reads their source with the
standard library's `ast` (exactly, importing nothing): a class is a loop wrapper, a leaf block or neither by the
same rule as `compat.role_of`, applied to the module's class statements (bases resolved within it). Each class is
imported the first time a node needs its declarations (`ShippedClass.load`, the entry's `load`). A core test
checks, for every module, that the source reading agrees with `compat.role_of` on the imported classes.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.registry import BlockEntry, Registry

PACKAGE = "diffusers.modular_pipelines"
# Modules of a family that hold no blocks of their own (compositions, the pipeline class, helpers).
NOT_BLOCKS = ("__init__", "modular_pipeline", "constants", "image_processor")
LOOP_BASE = "LoopSequentialPipelineBlocks"
LEAF_BASE = "ModularPipelineBlocks"
COMPOSITES = ("SequentialPipelineBlocks", "AutoPipelineBlocks", "ConditionalPipelineBlocks", LOOP_BASE)


def package_dir(package: str = PACKAGE) -> Path | None:
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


@dataclass(frozen=True)
class ShippedClass:
    family: str  # the folder, e.g. "stable_diffusion_xl"
    stage: str  # the module, e.g. "denoise", "before_denoise", "encoders"
    name: str
    role: str  # "loop", "block" (a loop block, in denoise.py), "step" (any other leaf block) or "workflow"
    default_blocks: bool  # a wrapper with its own `block_classes`: it runs those when none are attached
    workflows: tuple = ()  # a family's Auto blocks: the names of its `_workflow_map`, in its order

    @property
    def module(self) -> str:
        return f"{PACKAGE}.{self.family}.{self.stage}"

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.name)


@dataclass(frozen=True)
class ClassStatement:
    """What a module's source says of one top-level class."""

    bases: tuple  # the base names as written, last part only (`mod.Base[...]` -> "Base")
    calls: bool  # defines `__call__`
    block_classes: bool  # assigns `block_classes` in its body
    workflow_map: dict | None = None  # its `_workflow_map` literal (a family's Auto blocks), else None
    default_blocks: str | None = None  # its `default_blocks_name` literal (a family's pipeline class), else None
    composes: tuple = ()  # the names its `block_classes` list holds (classes, or configured instances)


def _base_name(node) -> str | None:
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def class_statements(path: Path) -> dict[str, ClassStatement]:
    """{name: ClassStatement} of every top-level class statement of the module at `path` (its source parsed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        calls = any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == "__call__" for s in node.body)
        assigned = [t for s in node.body if isinstance(s, ast.Assign) for t in s.targets]
        assigned += [s.target for s in node.body if isinstance(s, ast.AnnAssign)]
        blocks = any(isinstance(t, ast.Name) and t.id == "block_classes" for t in assigned)
        bases = tuple(n for n in map(_base_name, node.bases) if n)
        found[node.name] = ClassStatement(bases, calls, blocks, _literal_assignment(node, "_workflow_map"),
                                          _literal_assignment(node, "default_blocks_name"), _composed(node))
    return found


def _composed(node: ast.ClassDef) -> tuple:
    """The class names a `block_classes = [A, B(...), ...]` of a class body names."""
    names = []
    for statement in node.body:
        if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "block_classes"
                                                     for t in statement.targets):
            for item in getattr(statement.value, "elts", []):
                item = item.func if isinstance(item, ast.Call) else item
                if isinstance(item, (ast.Name, ast.Attribute)):
                    names.append(_base_name(item))
    return tuple(names)


def _literal_assignment(node: ast.ClassDef, name: str):
    """The value of `name = <literal>` in a class body (read with `ast.literal_eval`: nothing runs), else None."""
    for statement in node.body:
        if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in statement.targets):
            try:
                return ast.literal_eval(statement.value)
            except ValueError:
                return None
    return None


def _kinds(classes: dict[str, ClassStatement]) -> dict[str, tuple]:
    """{name: (root base: LOOP_BASE / LEAF_BASE / a composite / None, has a __call__ of its own or of a base in the
    module, has block_classes)} of a module's class statements (bases resolved within the module)."""
    memo: dict[str, tuple[str | None, bool, bool]] = {}

    def kind(name: str, seen=()):
        if name in memo:
            return memo[name]
        if name not in classes or name in seen:
            return (name if name in (LEAF_BASE, *COMPOSITES) else None), False, False
        statement = classes[name]
        root, call, blocks = None, statement.calls, statement.block_classes
        for base in statement.bases:
            b_root, b_call, b_blocks = kind(base, (*seen, name))
            if b_root is not None and root is None:
                root = b_root
                call = call or (b_call and base in classes)
                blocks = blocks or b_blocks
        memo[name] = (root, call, blocks)
        return memo[name]

    return {name: kind(name) for name in classes}


def loop_compositions(path: Path) -> set[str]:
    """The block names the loop wrappers of a module compose: their `block_classes` lists, and the module-level
    values those may read (Echo's `block_classes = EchoDenoiseLoopBlocks.values()`)."""
    classes = class_statements(path)
    names = {n for name, (root, _, _) in _kinds(classes).items() if root == LOOP_BASE for n in classes[name].composes}
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            names |= {n.id for n in ast.walk(statement.value) if isinstance(n, ast.Name)}
    return names


def scan_module(path: Path, family: str, composed: frozenset | None = None) -> list[ShippedClass]:
    """The loop wrappers and leaf blocks a module defines, read from its source (class statements, their bases
    within the module, whether they define `__call__` or set `block_classes`). A leaf block of a `denoise` module
    is a loop block, unless `composed` (the names the family's loop wrappers compose) is given and lacks it: then
    it is a step that runs on a state (Ideogram 4's after-denoise step, Echo's unpack-latents step)."""
    found = []
    for name, (root, call, blocks) in _kinds(class_statements(path)).items():
        if root == LOOP_BASE and call:
            found.append(ShippedClass(family, path.stem, name, "loop", blocks))
        elif root == LEAF_BASE and call:
            in_loop = path.stem == "denoise" and (composed is None or name in composed)
            found.append(ShippedClass(family, path.stem, name, "block" if in_loop else "step", False))
    return found


def scan(root: Path | None = None) -> list[ShippedClass]:
    """Every shipped loop wrapper and leaf block, family by family, module by module (sorted)."""
    root = root or package_dir()
    if root is None:
        return []
    found = []
    for family in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        paths = [p for p in sorted(family.glob("*.py"))
                 if p.stem not in NOT_BLOCKS and not p.stem.startswith("modular_blocks")]
        composed = frozenset(n for path in paths for n in loop_compositions(path))
        for path in paths:
            found.extend(scan_module(path, family.name, composed))
    return found


DEFAULT_WORKFLOW = "default"  # the one chain of a pipeline's default blocks that name no workflows (compat's too)


def scan_workflows(root: Path | None = None) -> list[ShippedClass]:
    """Every family's Auto blocks with named workflows (a `_workflow_map` in `<family>/modular_blocks_*.py`): the
    classes diffusers' pipelines run (`pipe(...)`), each with the workflows `get_workflow(name)` lays out; then the
    default blocks of the family's pipelines (`default_blocks_name` in `<family>/modular_pipeline.py`) that name no
    workflows (Wan 2.1's `WanBlocks`, `EchoBlocks`, ...), each with the one workflow "default": the chain its
    inputs select, as `pipe(...)` runs it."""
    root = root or package_dir()
    if root is None:
        return []
    found = []
    for family in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        classes = {}
        for path in sorted(family.glob("modular_blocks*.py")):
            for name, statement in class_statements(path).items():
                classes.setdefault(name, path.stem)
                if isinstance(statement.workflow_map, dict) and statement.workflow_map:
                    found.append(ShippedClass(family.name, path.stem, name, "workflow", False,
                                              tuple(statement.workflow_map)))
        named = {c.name for c in found}
        pipeline = family / "modular_pipeline.py"
        for statement in class_statements(pipeline).values() if pipeline.is_file() else ():
            default = statement.default_blocks
            if isinstance(default, str) and default in classes and default not in named:
                named.add(default)
                found.append(ShippedClass(family.name, classes[default], default, "workflow", False,
                                          (DEFAULT_WORKFLOW,)))
    return found


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
    root = root or package_dir(GUIDERS_PACKAGE)
    if root is None:
        return []
    found = []
    for path in sorted(root.glob("*.py")):
        classes = {name: s.bases for name, s in class_statements(path).items()}

        def derives(name, seen=()):
            return any(b == GUIDER_BASE or (b in classes and b not in seen and derives(b, (*seen, name)))
                       for b in classes.get(name, ()))

        found.extend(ShippedGuider(path.stem, name) for name in classes if name != GUIDER_BASE and derives(name))
    return found


@dataclass(frozen=True)
class Shipped:
    """Everything diffusers ships that becomes a node: its loops, loop blocks and steps (`scan`), its workflow classes
    (`scan_workflows`) and its guiders (`scan_guiders`)."""

    classes: tuple
    workflows: tuple
    guiders: tuple
    frame_rates: dict  # {family folder: its frame rate (`family_frame_rate`)} of the families whose rate is known


FRAME_RATE_NAMES = ("fps", "frame_rate")  # what diffusers' blocks call a video's frame rate (Wan Animate, LTX)


def family_frame_rate(family: str) -> float | None:
    """A family's frame rate as diffusers gives it: the default of an input named `fps` / `frame_rate` that its
    modular blocks declare (`diffusers/modular_pipelines/<family>/`, e.g. LTX's 25); where none does (Wan 2.1
    declares none, neither in its blocks, its pipeline class nor its models' configs), the `fps=` its own
    text-to-video pipeline's example exports at (`diffusers/pipelines/<family>/pipeline_<family>.py`, Wan:
    `export_to_video(output, "output.mp4", fps=16)`, read with `example_fps`). Read from source; None when neither
    says."""
    blocks = package_dir()
    for path in sorted((blocks / family).glob("*.py")) if blocks else ():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = getattr(node, "func", None)
            if not (isinstance(node, ast.Call) and getattr(called, "id", getattr(called, "attr", None)) == "InputParam"):
                continue
            named = {k.arg: k.value for k in node.keywords}
            name = node.args[0] if node.args else named.get("name")
            default = named.get("default")
            if (isinstance(name, ast.Constant) and name.value in FRAME_RATE_NAMES and isinstance(default, ast.Constant)
                    and isinstance(default.value, (int, float)) and not isinstance(default.value, bool)):
                return float(default.value)
    pipelines = package_dir("diffusers.pipelines")
    example = pipelines / family / f"pipeline_{family}.py" if pipelines else None
    if example is not None and example.is_file():
        return example_fps(example.read_text(encoding="utf-8"))
    return None


def example_fps(source: str) -> float | None:
    """The `fps=` of the first `export_to_video(...)` call in a module's usage examples: its string constants'
    doctest lines (`>>> ` / `... `), each example parsed as code with `ast` (a regex breaks on the first call that
    spans lines). None when none says."""
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and ">>> " in node.value):
            continue
        code = "\n".join(line.strip()[4:] for line in node.value.splitlines() if line.strip()[:4] in (">>> ", "... "))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for call in ast.walk(tree):
            name = getattr(getattr(call, "func", None), "id", getattr(getattr(call, "func", None), "attr", None))
            if isinstance(call, ast.Call) and name == "export_to_video":
                for keyword in call.keywords:
                    if keyword.arg == "fps" and isinstance(keyword.value, ast.Constant):
                        return float(keyword.value.value)
    return None


SECTION = "shipped"
_found: Shipped | None = None


def shipped(cache=None) -> Shipped:
    """What diffusers ships, read from its source once per process, and kept in `cache` (a
    `declarations.DeclarationCache`) for the next starts of the same diffusers: a start with a kept reading parses
    no source. Later calls (e.g. at run time) get the same reading."""
    global _found
    if _found is not None and cache is None:
        return _found
    kept = cache.section(SECTION) if cache is not None else {}
    try:
        _found = Shipped(tuple(ShippedClass(**{**c, "workflows": tuple(c["workflows"])}) for c in kept["classes"]),
                         tuple(ShippedClass(**{**c, "workflows": tuple(c["workflows"])}) for c in kept["workflows"]),
                         tuple(ShippedGuider(**g) for g in kept["guiders"]), dict(kept["frame_rates"]))
    except (KeyError, TypeError):  # nothing kept (or kept by another layout): read the source
        classes = tuple(scan())
        rates = {f: family_frame_rate(f) for f in sorted({c.family for c in classes if c.role == "loop"})}
        _found = Shipped(classes, tuple(scan_workflows()), tuple(scan_guiders()),
                         {f: rate for f, rate in rates.items() if rate is not None})
        if cache is not None:
            cache.put(SECTION, {"classes": [asdict(c) for c in _found.classes],
                                "workflows": [asdict(c) for c in _found.workflows],
                                "guiders": [asdict(g) for g in _found.guiders], "frame_rates": _found.frame_rates})
    return _found


def add_shipped(registry: Registry, root: Path | None = None, cache=None) -> Registry:
    """Add diffusers' own loops, loop blocks and steps (found from source, `pipelines.scan`; each imported when
    used) to `registry`; a name the registry already has keeps its first owner. `root`: another diffusers'
    modular_pipelines folder (read as it is); `cache`: where the reading of the installed one is kept."""
    from .params import entry_specs

    if root is not None:
        found_all = [*scan(root), *scan_workflows(root)]
    else:
        read = shipped(cache)
        found_all = [*read.classes, *read.workflows]
    for found in found_all:
        if found.name not in registry.entries:
            registry.entries[found.name] = BlockEntry(
                found.name, found.role, "diffusers", f"diffusers/modular_pipelines/{found.family}/{found.stage}.py",
                load=found.load, group=found.family if found.role == "workflow" else f"{found.family}/{found.stage}",
                default_blocks=found.default_blocks, read_specs=entry_specs, workflows=found.workflows)
    return registry
