"""Training: exact resume, checkpoints, early stopping, optimiser groups, defaults and the exp dir layout."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import CLASSES, DIM, ToyModel, crash_in_epoch, make_recipe, run, write_conf

import sertk.train.run as run_module
from sertk.errors import SertkError
from sertk.train.config import ParamGroup, TrainConfig
from sertk.train.loop import MetricTracker, build_optimizer, set_epoch_lr
from sertk.train.run import TrainOptions, train

pytestmark = pytest.mark.usefixtures("toy_arch")


def read_metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_resume_is_exact(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "straight", fold="1")

    with monkeypatch.context() as patch:
        crash_in_epoch(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            run(recipe, tmp_path / "resumed", fold="1")
    assert not (tmp_path / "resumed" / "fold1" / "train.provenance.json").exists()
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
    documented |= {"norm_mean", "norm_std", "rng", "best", "history", "input_dim", "provenance_key"}
    assert documented <= set(ckpt)
    best = torch.load(fold_dir / "best.pt", weights_only=True)
    assert best["arch"] == "toy" and best["classes"] == CLASSES and best["feat"] == "toyfeat"
    assert best["model_config"] == {"hidden": 16, "dropout": 0.2, "head": "linear", "head_scale": 30.0}
    assert best["norm_mean"].shape == (DIM,) and best["input"]["normalize"] == "global"
    assert best["epoch"] == summaries[0]["best_epoch"]
    header = (fold_dir / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_acc,valid_loss,valid_wa,valid_ua,lr,seconds"
    for name in ("config.yaml", "env.json", "train.log", "train.provenance.json"):
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


@pytest.mark.parametrize("metric", ["valid_loss", "valid_ua"])
def test_a_diverged_epoch_never_holds_the_selection(metric):
    """NaN is worse than any number: a NaN first epoch is replaced by the first finite one, a later NaN is bad."""
    tracker = MetricTracker(metric, patience=2)
    assert tracker.update(math.nan, 1)  # something must be selected (best.pt) even if it diverged
    assert tracker.update(0.7, 2) and (tracker.best, tracker.best_epoch, tracker.bad_epochs) == (0.7, 2, 0)
    assert not tracker.update(math.nan, 3) and tracker.best == 0.7 and tracker.bad_epochs == 1
    nan_only = MetricTracker(metric, patience=2)
    assert (
        nan_only.update(math.nan, 1) and not nan_only.update(math.nan, 2) and not nan_only.update(math.nan, 3)
    )
    assert nan_only.best_epoch == 1 and nan_only.should_stop


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
    summaries = train(TrainOptions(arch="toy", epochs=1, device="cpu"))
    assert [s["name"] for s in summaries] == ["fold1", "fold2"]
    assert (tmp_path / "exp" / "toy_system" / "fold2" / "best.pt").is_file()


def test_missing_inputs_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SertkError, match=r"conf/toy_system.yaml: .*pass --train-config"):
        train(TrainOptions(arch="toy"))
    with pytest.raises(SertkError, match="unknown arch"):
        train(TrainOptions(arch="nope"))
    recipe = make_recipe(tmp_path)
    with pytest.raises(SertkError, match="disagrees with --arch crnn-att"):
        train(TrainOptions(arch="crnn-att", train_config=recipe["conf"]))
    with pytest.raises(SertkError, match=r"data/other: data dir not found \(run stage 1"):
        train(TrainOptions(arch="toy", data=Path("data/other")))
    with pytest.raises(SertkError, match=r"dump/toy_system/nope: feature dir not found \(run stage 3"):
        train(TrainOptions(arch="toy", feats=Path("dump/toy_system/nope")))
    (recipe["feats"] / "feats.provenance.json").unlink()
    with pytest.raises(SertkError, match=r"feature dump is incomplete"):
        train(TrainOptions(arch="toy"))


def test_set_overrides_reach_the_config_and_the_replay(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1, overrides={"train.lr": 0.02, "input.specaugment.freq_masks": 1})
    merged = yaml.safe_load((exp / "config.yaml").read_text())
    assert merged["train"]["lr"] == 0.02 and merged["input"]["specaugment"]["freq_masks"] == 1
    assert "--set train.lr=0.02" in (exp / "replay.sh").read_text()
    with pytest.raises(SertkError, match=r"unknown key\(s\) colour"):
        run(recipe, tmp_path / "bad", overrides={"train.colour": 1})


def test_plan_opens_the_experiment_once_and_planned_fold_jobs_write_only_their_fold(tmp_path):
    """--plan: experiment files, replay.sh of the whole selection, stale folds cleared, nothing trained;
    --planned fold jobs: no experiment-level write (replay.sh keeps the selection), refused once it changed."""
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    write_conf(recipe["conf"], train_opts={"lr": 0.02})  # another experiment in the same exp dir
    assert run(recipe, exp, fold="all", epochs=1, plan=True, resume=True, overwrite=True) == []
    assert not (exp / "fold1" / "best.pt").exists() and not (exp / "fold2").exists()
    assert "--fold all" in (exp / "replay.sh").read_text()
    planned = {n: (exp / n).stat().st_mtime_ns for n in ("replay.sh", "config.yaml", "experiment.json")}
    summaries = run(recipe, exp, fold="2", epochs=1, resume=True, planned=True)
    assert [s["name"] for s in summaries] == ["fold2"] and (exp / "fold2" / "best.pt").is_file()
    assert {n: (exp / n).stat().st_mtime_ns for n in planned} == planned
    assert not (exp / "fold1" / "best.pt").exists()
    write_conf(recipe["conf"], train_opts={"lr": 0.03})
    with pytest.raises(SertkError, match="not planned for these inputs .* run sertk train --plan first"):
        run(recipe, exp, fold="1", epochs=1, resume=True, planned=True)
    assert (exp / "fold2" / "best.pt").is_file()


def test_resume_keeps_the_selected_epoch_and_the_early_stopping_count(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    # At this lr valid_wa never changes: epoch 1 stays the best (a tie is no improvement), epochs 2, 3, 4
    # are bad, and patience 3 stops training after epoch 4, with or without a crash in epoch 3.
    write_conf(recipe["conf"], {"lr": 1e-12, "patience": 3, "epochs": 6}, {"white_noise_std": 0.0})
    straight = run(recipe, tmp_path / "straight", fold="1")[0]
    with monkeypatch.context() as patch:
        crash_in_epoch(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            run(recipe, tmp_path / "resumed", fold="1")
    resumed = run(recipe, tmp_path / "resumed", fold="1", resume=True)[0]
    assert straight["best_epoch"] == resumed["best_epoch"] == 1
    assert straight["epochs"] == resumed["epochs"] == 4 and resumed["stopped_early"]
    best = torch.load(tmp_path / "resumed" / "fold1" / "best.pt", weights_only=True)
    assert best["epoch"] == 1


def test_dropout_is_reseeded_every_epoch_so_draws_before_training_change_nothing(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, per_class=4)
    run(recipe, tmp_path / "plain", fold="1", epochs=2)
    real = run_module.build_model

    def build_and_draw(*args, **kwargs):
        model = real(*args, **kwargs)
        torch.rand(7)  # e.g. a backend drawing from the global generator while setting up
        return model

    monkeypatch.setattr(run_module, "build_model", build_and_draw)
    run(recipe, tmp_path / "drawn", fold="1", epochs=2)
    a = torch.load(tmp_path / "plain" / "fold1" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "drawn" / "fold1" / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
