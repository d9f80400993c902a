"""Lint: ruff on the Python code and shellcheck on the recipes, as STYLE.md asks."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return found


def test_ruff_clean():
    out = subprocess.run(
        [_tool("ruff"), "check", "sertk", "tests", "tools"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_formatted():
    out = subprocess.run(
        [_tool("ruff"), "format", "--check", "sertk", "tests", "tools"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_shellcheck_recipes():
    scripts = sorted(str(p) for p in (REPO / "egs").rglob("*.sh")) + [str(REPO / ".ci" / "run")]
    scripts += [str(p) for p in (REPO / "tools").glob("*.sh")]
    out = subprocess.run(
        [_tool("shellcheck"), "-x", *scripts], cwd=REPO / "egs" / "iemocap", capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
