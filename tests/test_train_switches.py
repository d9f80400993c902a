"""Every training switch of the configs reaches the tensors the loop computes with (issue: tests that bite).

Each test runs the real ``sertk train`` on the toy recipe and records what the model and the loss see, then
compares with a hand computation from the feature arrays, labels and votes.
"""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import torch
from helpers import CLASSES, ToyModel, make_recipe, run, write_conf

import sertk.train.run as train_run
from sertk.data.datadir import read_data_dir
from sertk.data.labels import soft_labels
from sertk.errors import SertkError
from sertk.models import MODELS

pytestmark = pytest.mark.usefixtures("toy_arch")


class Recorder:
    """Wraps the loss the trainer builds: keeps every call's targets and sample weights."""

    def __init__(self):
        self.calls = []
        self.class_weights = None

    def install(self, monkeypatch):
        real = train_run.build_loss

        def build(cfg, num_classes, head="linear", class_weights=None, head_scale=None):
            self.class_weights = class_weights
            loss = real(cfg, num_classes, head=head, class_weights=class_weights, head_scale=head_scale)
            forward = loss.forward

            def recorded(logits, targets, sample_weight=None):
                self.calls.append(
                    (targets.detach().clone(), None if sample_weight is None else sample_weight.clone())
                )
                return forward(logits, targets, sample_weight)

            loss.forward = recorded
            return loss

        monkeypatch.setattr(train_run, "build_loss", build)
        return self


class SeeingModel(ToyModel):
    """ToyModel that records the (feats, lengths) of every training forward pass."""

    seen: list = []

    def forward(self, feats, lengths):
        if self.training:
            SeeingModel.seen.append((feats.detach().clone(), lengths.clone()))
        return super().forward(feats, lengths)


@pytest.fixture
def seeing(monkeypatch):
    SeeingModel.seen = []
    monkeypatch.setitem(MODELS, "toy", SeeingModel)
    return SeeingModel.seen


def train_arrays(recipe, fold="fold1"):
    folds = __import__("json").loads(recipe["folds"].read_text())
    spec = next(f for f in folds["folds"] if f["name"] == fold)
    with h5py.File(recipe["feats"] / "feats.h5") as f:
        return spec, {u: f[u][()] for u in spec["train"] + spec["valid"]}


def test_global_normalisation_uses_the_train_part_only(tmp_path):
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    spec, arrays = train_arrays(recipe)
    frames = np.concatenate([arrays[u] for u in spec["train"]])
    best = torch.load(tmp_path / "exp" / "fold1" / "best.pt", weights_only=True)
    np.testing.assert_allclose(best["norm_mean"].numpy(), frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(best["norm_std"].numpy(), frames.std(0), rtol=1e-5)


def test_neutral_normalisation_uses_the_train_parts_neutral_utterances(tmp_path):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"normalize": "neutral"})
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    spec, arrays = train_arrays(recipe)
    emo = read_data_dir(recipe["data"])["utt2emo"]
    frames = np.concatenate([arrays[u] for u in spec["train"] if emo[u] == "neu"])
    best = torch.load(tmp_path / "exp" / "fold1" / "best.pt", weights_only=True)
    np.testing.assert_allclose(best["norm_mean"].numpy(), frames.mean(0), rtol=1e-5, atol=1e-6)


def test_scalar_normalisation_is_one_mean_and_std(tmp_path):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"normalize": "global-scalar"})
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    spec, arrays = train_arrays(recipe)
    values = np.concatenate([arrays[u] for u in spec["train"]]).ravel()
    best = torch.load(tmp_path / "exp" / "fold1" / "best.pt", weights_only=True)
    np.testing.assert_allclose(best["norm_mean"].numpy(), np.full(6, values.mean()), rtol=1e-5)
    np.testing.assert_allclose(best["norm_std"].numpy(), np.full(6, values.std()), rtol=1e-5)


def test_balanced_class_weights_reach_the_loss(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], {"class_weights": "balanced"})
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    spec, _ = train_arrays(recipe)
    emo = read_data_dir(recipe["data"])["utt2emo"]
    counts = np.array([sum(emo[u] == c for u in spec["train"]) for c in CLASSES], dtype=float)
    np.testing.assert_allclose(recorder.class_weights.numpy(), counts.sum() / (4 * counts), rtol=1e-6)


def test_balanced_class_weights_count_a_segment_trained_loss_s_segments(tmp_path, monkeypatch):
    """lstm_attention.txt §4.1 weights "each sample of the class c in the loss": for 8-frame segments every
    4 frames the samples are the 1 + max(L - 8, 0) // 4 segments of each utterance, not the utterances."""
    recipe = make_recipe(tmp_path)
    write_conf(
        recipe["conf"],
        {"class_weights": "balanced"},
        {"segment_frames": 8, "segment_shift_train": 4, "segment_shift_test": 4},
    )
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    spec, arrays = train_arrays(recipe)
    emo = read_data_dir(recipe["data"])["utt2emo"]
    segments = {u: 1 + max(len(arrays[u]) - 8, 0) // 4 for u in spec["train"]}
    counts = np.array([sum(n for u, n in segments.items() if emo[u] == c) for c in CLASSES], dtype=float)
    utt_counts = np.array([sum(emo[u] == c for u in spec["train"]) for c in CLASSES], dtype=float)
    assert not np.allclose(counts / counts.sum(), utt_counts / utt_counts.sum())  # the two counts differ
    np.testing.assert_allclose(recorder.class_weights.numpy(), counts.sum() / (4 * counts), rtol=1e-6)


def test_no_class_weights_by_default(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    assert recorder.class_weights is None


def test_soft_labels_and_sample_weights_reach_the_loss(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], {"labels": "soft"}, loss={"name": "soft-ce"})
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    targets = torch.cat([t for t, _ in recorder.calls if t.dim() == 2])
    weights = torch.cat([w for t, w in recorder.calls if t.dim() == 2])
    data = read_data_dir(recipe["data"])
    spec, _ = train_arrays(recipe)
    utts = spec["train"]
    expected, expected_w = soft_labels(
        [data["utt2votes"][u] for u in utts], data.labels(utts), CLASSES, data.class_map
    )
    # Votes "c c oth": 2/3 of the mass inside the classes, all of it on the true class.
    assert np.allclose(expected_w, 2 / 3)
    train_calls = len(utts)
    np.testing.assert_allclose(
        np.sort(targets[:train_calls].numpy(), axis=0), np.sort(expected, axis=0), atol=1e-6
    )
    np.testing.assert_allclose(weights[:train_calls].numpy(), 2 / 3, rtol=1e-6)


def test_hard_labels_have_no_sample_weights(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    assert all(t.dim() == 1 and w is None for t, w in recorder.calls)


def test_oversampling_draws_the_class_twice(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], {"oversample": {"hap": 2.0}})
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    labels = torch.cat([t for t, _ in recorder.calls])
    spec, _ = train_arrays(recipe)
    data = read_data_dir(recipe["data"])
    train_labels = np.bincount(data.labels(spec["train"]), minlength=4)
    valid_labels = np.bincount(data.labels(spec["valid"]), minlength=4)
    seen = np.bincount(labels.numpy(), minlength=4) - valid_labels  # validation calls the loss once too
    np.testing.assert_array_equal(seen, train_labels * np.array([1, 2, 1, 1]))


def test_white_noise_is_added_to_training_inputs_only_on_real_frames(tmp_path, seeing):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"normalize": "none", "white_noise_std": 0.0})
    run(recipe, tmp_path / "clean", fold="1", epochs=1)
    clean = list(seeing)
    seeing.clear()
    write_conf(recipe["conf"], input_opts={"normalize": "none", "white_noise_std": 0.5})
    run(recipe, tmp_path / "noisy", fold="1", epochs=1)
    for (a, lengths), (b, _) in zip(clean, seeing, strict=True):
        mask = (torch.arange(a.shape[1])[None, :] < lengths[:, None])[..., None]
        diff = (b - a) * mask
        assert 0.4 < diff[mask.expand_as(diff)].std() < 0.6
        assert torch.all((b - a)[~mask.expand_as(a)] == 0)


def test_fixed_padding_shows_the_model_the_zeros(tmp_path, seeing):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"max_frames": 12, "pad": "fixed"})
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    for feats, lengths in seeing:
        assert feats.shape[1] == 12 and torch.all(lengths == 12)


def test_batch_padding_passes_real_lengths(tmp_path, seeing):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"max_frames": 12})
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    assert any(int(lengths.min()) < 12 for _, lengths in seeing)
    assert all(feats.shape[1] == int(lengths.max()) for feats, lengths in seeing)


@pytest.mark.parametrize("crop, differs", [("random", True), ("head", False)])
def test_random_crop_draws_new_windows_each_epoch(tmp_path, seeing, crop, differs):
    recipe = make_recipe(tmp_path, max_len=60)
    inputs = {"normalize": "none", "white_noise_std": 0.0, "max_frames": 4, "crop": crop}
    write_conf(recipe["conf"], {"batch_size": 200}, inputs)
    run(recipe, tmp_path / "exp", fold="1", epochs=2)
    (first, _), (second, _) = seeing
    assert torch.equal(first.sort(dim=0).values, second.sort(dim=0).values) is not differs


def test_grad_clip_bounds_the_global_norm(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], {"grad_clip": 0.01})
    norms = []
    real = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm):
        params = list(params)
        total = real(params, max_norm)
        norms.append((float(total), float(torch.norm(torch.stack([p.grad.norm() for p in params])))))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    assert norms and all(after <= 0.01 * 1.001 for _, after in norms)
    assert any(before > 0.01 for before, _ in norms)


def test_multistep_schedule_reaches_the_optimiser(tmp_path):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], {"scheduler": "multistep", "milestones": [2, 3], "gamma": 0.5, "epochs": 3})
    run(recipe, tmp_path / "exp", fold="1")
    with open(tmp_path / "exp" / "fold1" / "metrics.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f)]
    np.testing.assert_allclose(lrs, [0.01, 0.005, 0.0025])


def test_select_metric_picks_the_best_epoch_of_that_metric(tmp_path):
    recipe = make_recipe(tmp_path)
    for metric in ("valid_loss", "valid_wa", "valid_ua", "valid_ua_wa"):
        write_conf(recipe["conf"], {"select_metric": metric, "epochs": 4, "lr": 0.05})
        summary = run(recipe, tmp_path / metric, fold="1")[0]
        with open(tmp_path / metric / "fold1" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        values = [
            float(r["valid_wa"]) + float(r["valid_ua"]) if metric == "valid_ua_wa" else float(r[metric])
            for r in rows
        ]
        best = int(np.argmin(values) if metric == "valid_loss" else np.argmax(values)) + 1
        assert summary["best_epoch"] == best, metric
        # The summary reports the selected epoch's validation numbers, not the last epoch's.
        for key in ("valid_loss", "valid_wa", "valid_ua"):
            assert summary[key] == float(rows[best - 1][key]), (metric, key)
        ckpt = torch.load(tmp_path / metric / "fold1" / "best.pt", weights_only=True)
        assert ckpt["epoch"] == best


def test_early_stop_metric_is_the_one_configured(tmp_path):
    recipe = make_recipe(tmp_path)
    # valid_loss keeps falling at a tiny lr while the accuracies stay put: stopping on loss never triggers.
    write_conf(recipe["conf"], {"lr": 1e-4, "patience": 2, "epochs": 6, "early_stop_metric": "valid_loss"})
    assert run(recipe, tmp_path / "loss", fold="1")[0]["epochs"] == 6
    write_conf(recipe["conf"], {"lr": 1e-12, "patience": 2, "epochs": 6, "early_stop_metric": "valid_wa"})
    assert run(recipe, tmp_path / "wa", fold="1")[0]["epochs"] == 3


def test_select_last_keeps_the_final_epoch_and_allows_no_validation(tmp_path):
    recipe = make_recipe(tmp_path)
    folds = __import__("json").loads(recipe["folds"].read_text())
    for fold in folds["folds"]:
        fold["train"] += fold.pop("valid")
        fold["valid"] = []
    from helpers import write_folds_file

    write_folds_file(recipe["data"], folds["folds"], protocol="random", name="noval.json")
    recipe = {**recipe, "folds": recipe["data"] / "noval.json"}
    with pytest.raises(SertkError, match="no validation part"):
        run(recipe, tmp_path / "best", fold="1")
    write_conf(recipe["conf"], {"select": "last", "epochs": 3})
    summary = run(recipe, tmp_path / "last", fold="1")[0]
    assert summary["best_epoch"] == 3 and summary["valid_ua"] is None
    assert torch.load(tmp_path / "last" / "fold1" / "best.pt", weights_only=True)["epoch"] == 3
    rows = list(csv.DictReader(open(tmp_path / "last" / "fold1" / "metrics.csv")))
    assert [r["valid_ua"] for r in rows] == ["", "", ""]


def test_bf16_precision_runs_under_autocast_on_cpu(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    dtypes = []

    class Probe(ToyModel):
        def forward(self, feats, lengths):
            out = super().forward(feats, lengths)
            dtypes.append(out.dtype)
            return out

    monkeypatch.setitem(MODELS, "toy", Probe)
    run(recipe, tmp_path / "fp32", fold="1", epochs=1)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    run(recipe, tmp_path / "bf16", fold="1", epochs=1, precision="bf16")
    assert torch.bfloat16 in dtypes
    assert torch.load(tmp_path / "bf16" / "fold1" / "best.pt", weights_only=True)["precision"] == "bf16"


def test_specaugment_masks_reach_the_training_inputs(tmp_path, seeing):
    recipe = make_recipe(tmp_path)
    masks = {"freq_masks": 1, "freq_width": 3, "time_masks": 0}
    for name, spec in (("none", {}), ("masked", masks)):
        seeing.clear()
        write_conf(recipe["conf"], input_opts={"specaugment": spec})
        run(recipe, tmp_path / name, fold="1", epochs=1)
        columns = sum(
            int(
                ((feats == 0) | (torch.arange(feats.shape[1])[None, :, None] >= lengths[:, None, None]))
                .all(1)
                .sum()
            )
            for feats, lengths in seeing
        )
        assert (columns > 0) is (name == "masked")


def test_mixup_mixes_the_targets_the_loss_sees(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"mixup": {"alpha": 0.4}})
    recorder = Recorder().install(monkeypatch)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    train_targets = [t for t, _ in recorder.calls if t.dim() == 2]
    assert train_targets, "mixup gives the loss distributions"
    mixed = torch.cat(train_targets)
    np.testing.assert_allclose(mixed.sum(1).numpy(), 1.0, atol=1e-6)
    assert ((mixed > 0) & (mixed < 1)).any()  # not one-hot: two rows' labels mixed
    write_conf(recipe["conf"], input_opts={"mixup": {"alpha": 0.4}}, loss={"name": "focal"})
    with pytest.raises(SertkError, match="need a loss on distributions"):
        run(recipe, tmp_path / "focal", fold="1", epochs=1)
