"""Data-parallel training (sertk train --nproc 2, gloo on CPU) against one process with the same global batch.

The 2-process run must end with the weights, batch norm statistics and metrics.csv of the 1-process run
(float tolerance: sums are split over ranks), including random transforms (white noise, SpecAugment, random
crop, mixup) and class-weighted loss on unequal shards (batch 7 -> 4 + 3 rows), both batch norms synced; an
interrupted 2-process run resumed with --resume ends the same; rank 0 alone writes.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ddp_toys import BatchNormToy
from helpers import ToyModel, make_recipe, run, write_conf

from sertk.models import MODELS, SYSTEMS

ENTRY = Path(__file__).with_name("ddp_entry.py")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    recipe = make_recipe(tmp_path_factory.mktemp("ddp"), per_class=8)  # fold1: 18 train rows
    write_conf(
        recipe["conf"],
        train_opts={"optimizer": "sgd", "lr": 0.1, "batch_size": 7, "epochs": 3, "class_weights": "balanced"},
        input_opts={
            "max_frames": 20,
            "crop": "random",
            "specaugment": {"freq_masks": 1, "freq_width": 2, "time_masks": 1, "time_width": 3},
            "mixup": {"alpha": 0.4, "prob": 0.5},
        },
    )
    text = recipe["conf"].read_text().replace("arch: toy\n", "arch: toy-bn\n")
    recipe["conf"].write_text(text.replace("dropout: 0.2", "dropout: 0.0"))
    return recipe


def train_processes(recipe, exp: Path, nproc: int, *extra: str, env: dict | None = None):
    """The real command line through tests/ddp_entry.py (sertk's CLI with the toy archs registered)."""
    args = [sys.executable, str(ENTRY), "train", "--train-config", str(recipe["conf"]), "--fold", "1"]
    for key in ("data", "feats", "folds"):
        args += [f"--{key}", str(recipe[key])]
    args += ["--exp", str(exp), "--device", "cpu", "--nproc", str(nproc), *extra]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=120)


@pytest.fixture(scope="module")
def one_process(recipe, tmp_path_factory):
    exp = tmp_path_factory.mktemp("one") / "exp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(MODELS, "toy-bn", BatchNormToy)
        mp.setitem(SYSTEMS, "toy-bn", "toy_system")
        run(recipe, exp, fold="1")
    return exp / "fold1"


def metrics(fold_dir: Path) -> list[dict]:
    with open(fold_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def assert_same_training(fold_dir: Path, reference: Path, epochs: int = 3) -> None:
    for name in ("checkpoint.pt", "best.pt"):
        got = torch.load(fold_dir / name, weights_only=True)["model"]
        want = torch.load(reference / name, weights_only=True)["model"]
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
    got, want = metrics(fold_dir), metrics(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [float(e + 1) for e in range(epochs)]
    for g, w in zip(got, want, strict=True):
        for key in w:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=2e-6), (g["epoch"], key)


def test_two_processes_interrupted_and_resumed_train_like_one(recipe, one_process, tmp_path):
    """Epoch 1 under 2 ranks, rank 0 killed in epoch 2, then --resume for epochs 2-3: the 1-process run."""
    exp, writers = tmp_path / "exp", tmp_path / "writers.log"
    logged = {"SERTK_TEST_WRITERS": str(writers)}
    crashed = train_processes(recipe, exp, 2, env={**logged, "SERTK_TEST_CRASH_EPOCH": "2"})
    assert crashed.returncode == 1
    last = crashed.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "rank 0 failed" in last, crashed.stderr[-2000:]
    assert "Traceback" not in crashed.stderr  # rank 1, stopped by the launcher, adds no noise
    assert [r["epoch"] for r in metrics(exp / "fold1")] == [1.0]
    resumed = train_processes(recipe, exp, 2, "--resume", env=logged)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("resuming after epoch 1") == 1  # every rank resumes; one speaks
    assert_same_training(exp / "fold1", one_process)
    ranks = {line.split()[0] for line in writers.read_text().splitlines()}
    assert ranks == {"0"}, "only rank 0 may write checkpoints, metrics and provenance records"
    # The comparison is between trained models, not two untouched initialisations.
    trained = torch.load(one_process / "checkpoint.pt", weights_only=True)["model"]
    torch.manual_seed(3)
    init = BatchNormToy(ToyModel.Config(hidden=16, dropout=0.0), 6, 4).state_dict()
    assert not torch.allclose(trained["proj.weight"], init["proj.weight"])
    assert int(trained["frame_norm.num_batches_tracked"]) == 3 * 3  # 3 epochs of 18 rows: 7 + 7 + 4


def test_crnn_att_with_torch_batch_norm_trains_like_one_process(recipe, tmp_path):
    """A real arch whose nn.BatchNorm2d normalise over padded maps: converted to the synced batch norm."""
    conf = tmp_path / "crnn.yaml"
    write_conf(conf, train_opts={"optimizer": "sgd", "lr": 0.05, "batch_size": 7, "epochs": 2})
    config = yaml.safe_load(conf.read_text())
    config["arch"], config["model"] = "crnn-att", {"conv_channels": [4, 4], "dropout": 0.0, "lstm_cells": 4}
    conf.write_text(yaml.safe_dump(config))
    crnn = {**recipe, "conf": conf}
    run(crnn, tmp_path / "one", fold="1")
    result = train_processes(crnn, tmp_path / "two", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training(tmp_path / "two" / "fold1", tmp_path / "one" / "fold1", epochs=2)
