"""Shared fixtures."""

import pytest
import torch


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
