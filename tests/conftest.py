"""Shared test setup: the repo root on sys.path (the core tier imports `modular` directly), and one
loud line at the end of the run for every tier that was skipped, with the reason."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SKIPPED_TIERS: dict[str, str] = {}


def skip_tier(tier: str, reason: str):
    """Skip every test of `tier` and make sure the run ends with one loud line saying so."""
    SKIPPED_TIERS[tier] = reason
    pytest.skip(f"{tier} tier skipped: {reason}", allow_module_level=True)


def pytest_terminal_summary(terminalreporter):
    for tier, reason in SKIPPED_TIERS.items():
        terminalreporter.write_line(f"!!! {tier.upper()} TIER SKIPPED: {reason}", red=True, bold=True)


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES
