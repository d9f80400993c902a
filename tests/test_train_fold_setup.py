"""How sertk.train.run sets a fold up: its provenance record, its validation rows, its initial weights."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import make_recipe, run, write_conf

import sertk.train.run as run_module
from sertk.train.config import TrainConfig
from sertk.train.run import TrainOptions, fold_record, load_fold, resolve_experiment

SPEC = {"name": "fold1", "train": ["a", "b"], "valid": ["c"], "test": ["d"]}


def test_fold_record_changes_with_each_part_of_the_fold():
    xp = SimpleNamespace(key="sha256:experiment")
    key = fold_record(xp, SPEC).key
    assert fold_record(xp, dict(SPEC)).key == key
    for part, utts in (("train", ["a"]), ("valid", ["b", "c"]), ("test", ["d", "e"])):
        assert fold_record(xp, {**SPEC, part: utts}).key != key, part
    assert fold_record(SimpleNamespace(key="sha256:other"), SPEC).key != key


@pytest.mark.usefixtures("toy_arch")
def test_validation_rows_keep_the_centre_window_and_the_test_segment_shift(tmp_path):
    recipe = make_recipe(tmp_path, per_class=3, max_len=30)
    inputs = {
        "max_frames": 8,
        "crop": "random",
        "segment_frames": 4,
        "segment_shift_train": 4,
        "segment_shift_test": 1,
    }
    write_conf(recipe["conf"], input_opts=inputs)
    xp = resolve_experiment(
        TrainOptions(
            train_config=recipe["conf"],
            exp=tmp_path / "exp",
            **{k: recipe[k] for k in ("data", "feats", "folds")},
        )
    )
    spec = xp.folds["folds"][0]
    fold = load_fold(xp, spec, 2**30)
    lengths = fold.valid.store.lengths
    # Centre crop: (length - 8) // 2 frames skipped; then 4-frame segments every 1 frame over <= 8 kept ones.
    assert fold.valid.crop_start.tolist() == ((lengths - 8).clamp(min=0) // 2).tolist()
    kept = lengths.clamp(max=8)
    assert len(fold.valid) == int((1 + (kept - 4).clamp(min=0)).sum())


@pytest.mark.usefixtures("toy_arch")
def test_train_seed_sets_the_initial_weights(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, per_class=3)
    initial = []
    real = run_module.build_model

    def capture(*args, **kwargs):
        model = real(*args, **kwargs)
        initial.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        return model

    monkeypatch.setattr(run_module, "build_model", capture)
    monkeypatch.setattr(run_module, "fit", lambda *args, **kwargs: {})  # the initial weights are all we need
    for seed in (3, 3, 4):
        write_conf(recipe["conf"], train_opts={"seed": seed, "epochs": 1})
        run(recipe, tmp_path / f"exp{len(initial)}", fold="fold1")
    assert torch.equal(initial[0], initial[1])
    assert not torch.equal(initial[0], initial[2])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"select": "last", "patience": 5}, "select last trains every epoch"),
        ({"milestones": [30, 20]}, "milestones must be increasing"),
        ({"milestones": [0, 20]}, "milestones must be increasing"),
        ({"oversample": {"hap": 0.0}}, "oversample factors must be > 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size and train.epochs must be >= 1"),
        ({"grad_clip": -1.0}, "must be >= 0"),
    ],
)
def test_train_config_refuses_contradictory_options(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)
    assert TrainConfig(select="last", patience=0).needs_validation is False
    assert TrainConfig(select="best", patience=0).needs_validation is True
