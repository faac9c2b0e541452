"""Shared test setup: the repo root on sys.path (the core tier imports `modular` directly), `--tier` to
run some tiers only, and one loud line at the end of the run for every tier that was skipped, with the
reason.

A test file's tier is in its name: `test_core*.py` core, `test_browser*.py` browser, any other host.
"""

import importlib
import json
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PACK_PACKAGE = "modular_loops_pack"


def import_pack_module(name: str):
    """A module of the pack imported as ComfyUI imports it (a package, relative imports working), e.g.
    "nodes.factory", without running the pack's `__init__.py`, which builds ComfyUI's node mappings."""
    if PACK_PACKAGE not in sys.modules:
        package = types.ModuleType(PACK_PACKAGE)
        package.__path__ = [str(ROOT)]
        sys.modules[PACK_PACKAGE] = package
    return importlib.import_module(f"{PACK_PACKAGE}.{name}")


SKIPPED_TIERS: dict[str, str] = {}
REPORT: list[str] = []  # figures a tier measured on the way (shown at the end, not asserted)


def skip_tier(tier: str, reason: str):
    """Skip every test of `tier` and make sure the run ends with one loud line saying so."""
    SKIPPED_TIERS[tier] = reason
    pytest.skip(f"{tier} tier skipped: {reason}", allow_module_level=True)


TIERS = ("core", "host", "browser")


def tier_of(path) -> str:
    name = Path(path).name
    return "core" if name.startswith("test_core") else "browser" if name.startswith("test_browser") else "host"


def pytest_addoption(parser):
    parser.addoption("--tier", action="append", choices=TIERS,
                     help="run only this tier's tests (repeatable); default: all three")


def pytest_ignore_collect(collection_path, config):
    tiers = config.getoption("--tier")
    if tiers and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return tier_of(collection_path) not in tiers
    return None


def pytest_terminal_summary(terminalreporter):
    out = os.environ.get("MODULAR_LOOPS_SUMMARY")  # .ci/run's per-host summary line
    if out:
        stats = terminalreporter.stats
        counts = {k: len(stats.get(k, [])) for k in ("passed", "failed", "skipped", "error")}
        counts["failed"] += counts.pop("error")
        Path(out).write_text(json.dumps(counts))
    for line in REPORT:
        terminalreporter.write_line(f"[Modular Loops] {line}")
    for tier, reason in SKIPPED_TIERS.items():
        terminalreporter.write_line(f"!!! {tier.upper()} TIER SKIPPED: {reason}", red=True, bold=True)


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI (`main.py --cpu`) with this pack and the test user blocks installed."""
    from comfy_host import comfy_python, find_comfyui, start_test_server

    comfy, _ = find_comfyui()
    server = start_test_server(comfy, comfy_python(comfy), tmp_path_factory.mktemp("comfy_base"), FIXTURES)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(comfy_server):
    """The host tier's server (a module may start its own instead, e.g. per cache mode)."""
    return comfy_server


@pytest.fixture(scope="module")
def info(server):
    """The server's node definitions (GET /object_info)."""
    return server.object_info()
