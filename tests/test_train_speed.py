"""The GPU-minded parts of the training loop, checked on CPU: torch.compile trains to the same weights, and
the helpers DDP relies on (global batches of at least one row per rank, shard weights) do what they claim.
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_recipe, run, write_conf

from sertk.train.distributed import Dist, min_batch_rows, shard
from sertk.train.loop import one_batch_safe

pytestmark = pytest.mark.usefixtures("toy_arch")


def test_compiled_model_trains_to_the_same_weights(tmp_path, monkeypatch):
    """train.compile: true on the toy recipe (TorchDynamo capture; aot_eager backend, since inductor's C++
    build takes ~50 s on this CPU) ends within float tolerance of the eager run."""
    recipe = make_recipe(tmp_path / "r", per_class=4)
    write_conf(recipe["conf"], train_opts={"epochs": 2}, input_opts={"white_noise_std": 0.0})
    run(recipe, tmp_path / "eager", fold="1")
    calls = []
    real = torch.compile

    def compile_(model, **kwargs):
        calls.append(type(model).__name__)
        return real(model, **{"backend": "aot_eager", **kwargs})

    monkeypatch.setattr(torch, "compile", compile_)
    run(recipe, tmp_path / "compiled", fold="1", overrides={"train.compile": True})
    assert calls == ["ToyModel"]
    for name in ("checkpoint.pt", "best.pt"):
        eager = torch.load(tmp_path / "eager" / "fold1" / name, weights_only=True)["model"]
        compiled = torch.load(tmp_path / "compiled" / "fold1" / name, weights_only=True)["model"]
        assert compiled.keys() == eager.keys()  # the plain model's names, no _orig_mod. prefix
        for key in eager:
            torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6)


def test_small_last_batch_folds_so_every_rank_gets_a_row():
    batches = [torch.arange(7), torch.arange(7, 9), torch.arange(9, 16)]
    assert [len(b) for b in one_batch_safe(list(batches), min_batch_rows(Dist(0, 3)))] == [9, 7]
    assert [len(b) for b in one_batch_safe(list(batches), min_batch_rows(Dist(0, 2)))] == [7, 2, 7]
    assert [len(b) for b in one_batch_safe([torch.arange(5), torch.arange(1)])] == [6]


def test_shard_weights_make_the_rank_average_the_global_mean():
    """Rows r::N and weight b_r N / B: the mean over ranks of weight x shard mean is the batch mean."""
    losses = torch.tensor([0.3, 1.2, 0.7, 2.0, 0.1, 0.9, 1.5])
    for world in (2, 3):
        parts = [shard(Dist(r, world), len(losses)) for r in range(world)]
        assert sorted(torch.cat([torch.arange(7)[rows] for rows, _ in parts]).tolist()) == list(range(7))
        average = sum(weight * losses[rows].mean() for rows, weight in parts) / world
        assert float(average) == pytest.approx(float(losses.mean()), rel=1e-6)
    rows, weight = shard(Dist(1, 2), 7)
    assert torch.arange(7)[rows].tolist() == [1, 3, 5] and weight == pytest.approx(6 / 7)
