"""Shared by the recipe tests (tests/test_recipe*.py): running egs/ scripts as the README does, and the
checks they share. The recipe copy and the demo run they start from are conftest.py's session fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The one-system recipes (the grids and run_all.sh train many systems: test_crnn_grid_runs_... covers them).
RECIPES = sorted(
    p.name
    for p in (REPO / "egs" / "iemocap").glob("run_*.sh")
    if not p.name.endswith("_grid.sh") and p.name != "run_all.sh"
)
# One epoch of one fold on CPU: every recipe end to end in seconds.
QUICK = ("--epochs", "1", "--folds", "1", "--nj", "1", "--device", "cpu")
RESULT_KEYS = {"system", "protocol", "classes", "synthetic", "folds", "mean", "std", "pooled"}


def recipe_env() -> dict:
    env = dict(os.environ)
    env.pop("IEMOCAP", None)
    # The recipe's path.sh finds `sertk` on PATH when the copy has no .venv next to it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


def run_command(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(
        command, cwd=cwd, env=env or recipe_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def run(recipe_dir: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """A recipe script, run from the repository root as the README does."""
    return run_command(["bash", str(recipe_dir / script), *args], cwd=recipe_dir.parent.parent)


def sequential(recipe: Path) -> Path:
    return recipe.parent.parent / "sequential_fold1_posteriors.tsv"


def fails(recipe: Path, script: str, *args: str) -> str:
    out = subprocess.run(
        ["bash", str(recipe / script), *args],
        cwd=recipe,
        env=recipe_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def same_posteriors(fold_dir: Path, reference: Path) -> None:
    """Same utterances, labels and predictions as the ``reference`` posteriors.tsv, scores within 1e-4."""
    rows = [
        [line.split("\t") for line in path.read_text().splitlines()[1:]]
        for path in (fold_dir / "posteriors.tsv", reference)
    ]
    assert [r[:3] for r in rows[0]] == [r[:3] for r in rows[1]] and rows[0]
    scores = [np.array([[float(x) for x in r[3:]] for r in part]) for part in rows]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-4)
