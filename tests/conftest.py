"""Shared fixtures."""

import shutil
from pathlib import Path

import pytest
import torch
from recipes import QUICK, REPO, run, sequential


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny tensors gain nothing from intra-op threads, and on a shared
    2-core machine the threads only oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_arch(monkeypatch):
    """Register tests/helpers.py's ToyModel as arch ``toy`` of system ``toy_system``."""
    from helpers import ToyModel

    from sertk.models import MODELS, SYSTEMS

    monkeypatch.setitem(MODELS, "toy", ToyModel)
    monkeypatch.setitem(SYSTEMS, "toy", "toy_system")


@pytest.fixture(scope="session")
def recipe_copy(tmp_path_factory) -> Path:
    """A copy of egs/ (outputs stay out of the repository) for the recipe tests, once per test process."""
    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(REPO / "egs", root / "egs", symlinks=True)
    recipe = root / "egs" / "iemocap"
    for sub in ("data", "dump", "exp", "corpus"):
        shutil.rmtree(recipe / sub, ignore_errors=True)
    return recipe


@pytest.fixture(scope="session")
def demo_run(recipe_copy):
    """run.sh without IEMOCAP: stage 0 generates the corpus, the demo config trains."""
    out = run(
        recipe_copy,
        "run.sh",
        "--synth-size",
        "tiny",
        *QUICK,
    )
    # The sequential (--nj 1) fold1's posteriors, kept apart: later tests may retrain exp/crnn_discriminative.
    shutil.copy(
        recipe_copy / "exp" / "crnn_discriminative" / "fold1" / "posteriors.tsv", sequential(recipe_copy)
    )
    return recipe_copy, out
