"""Training: exact resume, checkpoints, early stopping, optimiser groups, defaults and the exp dir layout."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import sertk.train.loop as loop
from sertk.data.datadir import write_data_dir
from sertk.errors import SertkError
from sertk.features.io import Hdf5Writer
from sertk.models import MODELS, SYSTEMS
from sertk.train.config import ParamGroup, TrainConfig
from sertk.train.loop import MetricTracker, build_optimizer, set_epoch_lr
from sertk.train.run import train

CLASSES = ["neu", "hap", "ang", "sad"]
DIM = 6


class ToyModel(nn.Module):
    """Frame projection, masked mean over time, dropout, linear logits: small enough to train in a second."""

    @dataclass
    class Config:
        hidden: int = 16
        dropout: float = 0.2
        head: str = "linear"
        head_scale: float = 30.0

    def __init__(self, cfg, input_dim, num_classes):
        super().__init__()
        self.proj = nn.Linear(input_dim, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, num_classes)

    def forward(self, feats, lengths):
        mask = (torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]).float()
        hidden = torch.relu(self.proj(feats)) * mask[..., None]
        pooled = hidden.sum(1) / lengths[:, None].float()
        return self.out(self.drop(pooled))


@pytest.fixture(autouse=True)
def toy_arch(monkeypatch):
    monkeypatch.setitem(MODELS, "toy", ToyModel)
    monkeypatch.setitem(SYSTEMS, "toy", "toy_system")


def make_recipe(root: Path, per_class: int = 10, seed: int = 0, max_len: int = 30) -> dict[str, Path]:
    """A recipe dir after stage 4: data/toy_system (+ folds.json), dump/toy_system/toyfeat, conf/toy_system.yaml.

    Class c has its features shifted by +2 in dimension c, so the task is separable.
    """
    rng = np.random.default_rng(seed)
    data = root / "data" / "toy_system"
    utts = [f"spk{i % 2}_{c}{i:03d}" for c in CLASSES for i in range(per_class)]
    utts.sort()
    emo = {u: u.split("_")[1][:3] for u in utts}
    tables = {
        "wav.scp": {u: f"/nonexistent/{u}.wav" for u in utts},
        "utt2spk": {u: u.split("_")[0] for u in utts},
        "utt2emo": emo,
        "utt2votes": {u: f"{emo[u]} {emo[u]} oth" for u in utts},
    }
    class_map = {c: c for c in CLASSES}
    write_data_dir(data, tables, {"classes": CLASSES, "class_map": class_map, "synthetic": True})
    order = list(rng.permutation(len(utts)))
    parts = np.array_split(np.array(utts)[order], 5)
    folds = []
    for k in range(2):
        test, valid = parts[k].tolist(), parts[k + 1].tolist()
        train_part = [u for u in utts if u not in test and u not in valid]
        folds.append({"name": f"fold{k + 1}", "train": train_part, "valid": valid, "test": test})
    (data / "folds.json").write_text(json.dumps({"protocol": "random", "seed": seed, "folds": folds}))
    feats = root / "dump" / "toy_system" / "toyfeat"
    feats.mkdir(parents=True)
    writer = Hdf5Writer(feats / "feats.h5", "toyfeat", {}, DIM)
    lengths = {}
    for u in utts:
        x = rng.normal(0, 1, size=(int(rng.integers(5, max_len)), DIM)).astype(np.float32)
        x[:, CLASSES.index(emo[u])] += 2.0
        writer.write(u, x)
        lengths[u] = len(x)
    writer.close()
    (feats / "feat.yaml").write_text(yaml.safe_dump({"feat": "toyfeat", "config": {}}))
    (feats / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, n in sorted(lengths.items())))
    (feats / ".done").write_text("")
    conf = root / "conf" / "toy_system.yaml"
    conf.parent.mkdir()
    write_conf(conf)
    return {"data": data, "feats": feats, "folds": data / "folds.json", "conf": conf}


def write_conf(
    path: Path, train_opts: dict | None = None, input_opts: dict | None = None, loss: dict | None = None
):
    config = {
        "arch": "toy",
        "feat": "toyfeat",
        "protocol": "random",
        "model": {"hidden": 16, "dropout": 0.2},
        "loss": loss or {"name": "ce"},
        "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 8, "epochs": 3, "patience": 0, "seed": 3}
        | (train_opts or {}),
        "input": {"normalize": "global", "white_noise_std": 0.1} | (input_opts or {}),
    }
    path.write_text(yaml.safe_dump(config))


def run(recipe, exp, **kwargs):
    paths = {k: recipe[k] for k in ("data", "feats", "folds")}
    return train(train_config=recipe["conf"], exp=exp, device="cpu", **paths, **kwargs)


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_resume_is_exact(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "straight", fold="1")

    real_validate = loop.validate
    calls = []

    def crash_in_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path / "resumed", fold="1")
    monkeypatch.setattr(loop, "validate", real_validate)
    assert not (tmp_path / "resumed" / "fold1" / ".done").exists()
    with pytest.raises(SertkError, match="pass --resume"):
        run(recipe, tmp_path / "resumed", fold="1")
    run(recipe, tmp_path / "resumed", fold="1", resume=True)

    a = torch.load(tmp_path / "straight" / "fold1" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "fold1" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    rows = read_metrics(tmp_path / "straight" / "fold1" / "metrics.csv")
    assert len(rows) == 3
    assert rows == read_metrics(tmp_path / "resumed" / "fold1" / "metrics.csv")
    log = (tmp_path / "resumed" / "fold1" / "train.log").read_text().splitlines()
    assert [line.split()[1] for line in log] == ["1", "2", "3"]


def test_checkpoints_load_with_weights_only_and_hold_the_documented_keys(tmp_path):
    recipe = make_recipe(tmp_path)
    summaries = run(recipe, tmp_path / "exp", fold="fold2", epochs=2)
    fold_dir = tmp_path / "exp" / "fold2"
    ckpt = torch.load(fold_dir / "checkpoint.pt", weights_only=True)
    documented = {"model", "optimizer", "scheduler", "epoch", "arch", "model_config", "classes", "feat"}
    documented |= {"norm_mean", "norm_std", "rng", "best", "history"}
    assert documented <= set(ckpt)
    best = torch.load(fold_dir / "best.pt", weights_only=True)
    assert best["arch"] == "toy" and best["classes"] == CLASSES and best["feat"] == "toyfeat"
    assert best["model_config"] == {"hidden": 16, "dropout": 0.2, "head": "linear", "head_scale": 30.0}
    assert best["norm_mean"].shape == (DIM,) and best["input"]["normalize"] == "global"
    assert best["epoch"] == summaries[0]["best_epoch"]
    header = (fold_dir / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_acc,valid_loss,valid_wa,valid_ua,lr,seconds"
    for name in ("config.yaml", "env.json", "train.log", ".done"):
        assert (fold_dir / name).is_file(), name
    assert json.loads((fold_dir / "env.json").read_text())["device"] == "cpu"


def test_exp_dir_files_and_skipping_done_folds(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    first = run(recipe, exp, fold="1", epochs=1)
    info = json.loads((exp / "experiment.json").read_text())
    assert info["arch"] == "toy" and info["system"] == "toy_system" and info["protocol"] == "random"
    assert info["classes"] == CLASSES and info["synthetic"] is True and info["feat"] == "toyfeat"
    assert info["feats"] == str(recipe["feats"].resolve())
    replay = (exp / "replay.sh").read_text()
    assert os.access(exp / "replay.sh", os.X_OK)
    assert f"--train-config {recipe['conf'].resolve()}" in replay and "--epochs 1" in replay
    assert yaml.safe_load((exp / "config.yaml").read_text())["train"]["epochs"] == 1
    mtime = (exp / "fold1" / "best.pt").stat().st_mtime_ns
    assert run(recipe, exp, fold="1", epochs=1) == first
    assert (exp / "fold1" / "best.pt").stat().st_mtime_ns == mtime


def test_learns_a_separable_toy_task(tmp_path):
    recipe = make_recipe(tmp_path, per_class=15)
    write_conf(recipe["conf"], {"epochs": 15, "lr": 0.03, "select_metric": "valid_ua_wa"})
    summary = run(recipe, tmp_path / "exp", fold="1")[0]
    assert summary["valid_wa"] > 0.9 and summary["valid_ua"] > 0.9


def test_soft_labels_segments_and_oversampling_run(tmp_path):
    recipe = make_recipe(tmp_path)
    write_conf(
        recipe["conf"],
        {"labels": "soft", "oversample": {"hap": 2}, "class_weights": "balanced", "grad_clip": 1.0},
        {"normalize": "neutral", "segment_frames": 8, "segment_shift_train": 4, "segment_shift_test": 2},
        loss={"name": "soft-ce"},
    )
    summary = run(recipe, tmp_path / "exp", fold="1", epochs=2)[0]
    assert summary["epochs"] == 2
    best = torch.load(tmp_path / "exp" / "fold1" / "best.pt", weights_only=True)
    assert best["input"]["segment_frames"] == 8 and best["loss"]["name"] == "soft-ce"


def test_early_stopping_tracker():
    tracker = MetricTracker("valid_wa", patience=2)
    stops = []
    for epoch, value in enumerate([0.5, 0.6, 0.6, 0.55], start=1):
        tracker.update(value, epoch)
        stops.append(tracker.should_stop)
    assert stops == [False, False, False, True]
    assert tracker.best == 0.6 and tracker.best_epoch == 2
    loss = MetricTracker("valid_loss")
    assert loss.update(1.0, 1) and loss.update(0.9, 2) and not loss.update(0.95, 3)


def test_early_stopping_ends_training_after_patience_bad_epochs(tmp_path):
    recipe = make_recipe(tmp_path)
    # An lr this small leaves the predictions, hence valid_wa, unchanged: every epoch after the first is bad.
    write_conf(recipe["conf"], {"lr": 1e-12, "patience": 2, "epochs": 10}, {"white_noise_std": 0.0})
    summary = run(recipe, tmp_path / "exp", fold="1")[0]
    assert summary["epochs"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1
    assert len(read_metrics(tmp_path / "exp" / "fold1" / "metrics.csv")) == 3


def test_param_groups_and_multistep_schedule():
    model = ToyModel(ToyModel.Config(), DIM, 4)
    cfg = TrainConfig(
        optimizer="sgd",
        lr=0.1,
        weight_decay=1e-4,
        nesterov=True,
        param_groups=[ParamGroup(prefix="proj", lr=0.5, weight_decay=1e-3)],
        scheduler="multistep",
        milestones=[3, 5],
        gamma=0.1,
    )
    optimizer = build_optimizer(model, cfg)
    proj, rest = optimizer.param_groups
    assert [p.shape for p in proj["params"]] == [model.proj.weight.shape, model.proj.bias.shape]
    assert (proj["lr"], proj["weight_decay"]) == (0.5, 1e-3)
    assert (rest["lr"], rest["weight_decay"]) == (0.1, 1e-4) and rest["nesterov"]
    lrs = [set_epoch_lr(optimizer, cfg, epoch) for epoch in range(1, 7)]
    np.testing.assert_allclose(lrs, [0.5, 0.5, 0.05, 0.05, 0.005, 0.005])
    assert rest["lr"] == pytest.approx(0.001)
    with pytest.raises(SertkError, match="matches no model parameter"):
        build_optimizer(model, TrainConfig(param_groups=[ParamGroup(prefix="lstm")]))


def test_defaults_inside_a_recipe_dir(tmp_path, monkeypatch):
    make_recipe(tmp_path)
    monkeypatch.chdir(tmp_path)
    summaries = train(arch="toy", epochs=1, device="cpu")
    assert [s["name"] for s in summaries] == ["fold1", "fold2"]
    assert (tmp_path / "exp" / "toy_system" / "fold2" / "best.pt").is_file()


def test_missing_inputs_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SertkError, match=r"conf/toy_system.yaml: .*pass --train-config"):
        train(arch="toy")
    with pytest.raises(SertkError, match="unknown arch"):
        train(arch="nope")
    recipe = make_recipe(tmp_path)
    with pytest.raises(SertkError, match="disagrees with --arch crnn-att"):
        train(arch="crnn-att", train_config=recipe["conf"])
    (recipe["feats"] / ".done").unlink()
    with pytest.raises(SertkError, match=r"run stage 3 \(sertk feats\) first"):
        train(arch="toy")
    with pytest.raises(SertkError, match=r"data/other: data dir not found \(run stage 1"):
        train(arch="toy", data=Path("data/other"))
    with pytest.raises(SertkError, match=r"dump/toy_system/nope: feature dir not found \(run stage 3"):
        train(arch="toy", feats=Path("dump/toy_system/nope"))
