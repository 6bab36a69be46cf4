"""Lint, format and types are part of the test suite: ruff (lines <= 120) and mypy on the torch-free layers.

Both read their settings from pyproject.toml; ``envs/setup.sh --dev`` installs them.
"""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

CHECKS = {
    "ruff lint": ["ruff", "check", "hpcnas", "tests", "benchmarks"],
    "ruff format": ["ruff", "format", "--check", "hpcnas", "tests", "benchmarks"],
    "mypy": ["mypy"],
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_clean(name):
    proc = subprocess.run([sys.executable, "-m", *CHECKS[name]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} found problems:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
