"""The code passes ruff with the rules in pyproject.toml ([tool.ruff]), so that CI fails on lint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    if find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it comes with the test extra: pip install -e '.[test]')")
    return [exe]


@pytest.mark.slow
def test_ruff_finds_nothing():
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    status, report = proc.returncode, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert status == 0, f"`ruff check .` found problems (`ruff check --fix .` mends some):\n{report}"
