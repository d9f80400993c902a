"""Model packages: written from training outputs, reloaded without unpickling, ensembles of folds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from sertk.config import to_dict
from sertk.deploy.package import load_models, make_package, read_package
from sertk.errors import SertkError
from sertk.inputs.config import InputConfig
from sertk.models import build_model

CLASSES = ["neu", "hap", "ang", "sad"]
FEAT_CONFIG = {"num_mel_bins": 40}
TINY = {
    "crnn-att": {"conv_channels": [4, 4], "lstm_cells": 4, "dropout": 0.0},
    "attn-pool": {"first_layer": [[3, 2, 2], [2, 3, 2]], "channels": [4, 4], "pool_after": [0]},
    "rlc": {
        "first_conv": [3, 4],
        "groups": [[3, 4]],
        "blocks": 1,
        "heads": 0,
        "lstm_units": 4,
        "iterations": 2,
        "dense": [4],
        "dropout": 0.0,
    },
}


def write_checkpoint(
    fold_dir: Path, arch: str = "crnn-att", seed: int = 0, model_opts: dict | None = None, **input_opts
) -> Path:
    """A best.pt as ``sertk train`` writes it, for a tiny randomly initialised model on logmel40."""
    torch.manual_seed(seed)
    model_config = {**TINY[arch], **(model_opts or {})}
    model = build_model(arch, model_config, 40, len(CLASSES))
    # Non-trivial batch-norm statistics so that eval mode is really exercised.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    fold_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "model": model.state_dict(),
        "epoch": 3,
        "arch": arch,
        "model_config": model_config,
        "classes": CLASSES,
        "feat": "logmel40",
        "feat_config": FEAT_CONFIG,
        "norm_mean": torch.linspace(5.0, 9.0, 40),
        "norm_std": torch.linspace(1.0, 3.0, 40),
        "input": to_dict(InputConfig(normalize="global", **input_opts)),
        "input_dim": 40,
        "loss": {"name": "ce"},
    }
    torch.save(info, fold_dir / "best.pt")
    return fold_dir / "best.pt"


def write_wave(path: Path, seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.02 * rng.standard_normal(len(t))).astype(
        np.float32
    )
    subtype = "PCM_16" if str(path).endswith(".flac") else "FLOAT"
    soundfile.write(path, np.repeat(mono[:, None], channels, axis=1), rate, subtype=subtype)
    return mono


def test_package_round_trip_keeps_everything_inference_needs(tmp_path):
    ckpt = write_checkpoint(tmp_path / "exp" / "fold1")
    out = make_package(tmp_path / "exp" / "fold1", tmp_path / "pkg")
    assert out == [tmp_path / "pkg"]
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["arch"] == "crnn-att" and manifest["classes"] == CLASSES
    assert manifest["feat"] == "logmel40" and manifest["feat_config"] == FEAT_CONFIG
    assert manifest["input"]["normalize"] == "global" and manifest["input_dim"] == 40
    assert manifest["sertk_version"]
    weights = torch.load(tmp_path / "pkg" / "weights.pt", weights_only=True)
    assert set(weights) == {"model", "norm_mean", "norm_std"}
    package = read_package(tmp_path / "pkg")
    original = torch.load(ckpt, weights_only=True)
    assert torch.equal(package.norm_mean, original["norm_mean"])
    assert torch.equal(package.norm_std, original["norm_std"])
    x, lengths = torch.randn(2, 37, 40), torch.tensor([37, 20])
    reference = build_model("crnn-att", TINY["crnn-att"], 40, 4)
    reference.load_state_dict(original["model"])
    with torch.no_grad():
        assert torch.equal(package.build()(x, lengths), reference.eval()(x, lengths))


def test_exp_dir_becomes_an_ensemble_of_fold_packages(tmp_path):
    for k in (1, 2):
        write_checkpoint(tmp_path / "exp" / f"fold{k}", seed=k)
    (tmp_path / "exp" / "experiment.json").write_text("{}")
    written = make_package(tmp_path / "exp", tmp_path / "ens")
    assert written == [tmp_path / "ens" / "fold1", tmp_path / "ens" / "fold2"]
    models = load_models(tmp_path / "ens")
    assert [Path(m.source).name for m in models] == ["fold1", "fold2"]
    assert not torch.equal(models[0].state["head.weight"], models[1].state["head.weight"])
    # Packaging again replaces the old package; other data at the output path is never removed.
    make_package(tmp_path / "exp" / "fold1", tmp_path / "ens")
    assert len(load_models(tmp_path / "ens")) == 1
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(SertkError, match=r"holds files sertk did not write \(keep.txt\)"):
        make_package(tmp_path / "exp" / "fold1", tmp_path / "data")
    assert (tmp_path / "data" / "keep.txt").read_text() == "x"


def test_packaging_into_a_folder_of_other_packages_deletes_nothing(tmp_path):
    """`sertk package EXP models/` must never remove other packages or a user's files in models/."""
    for k in (1, 2):
        write_checkpoint(tmp_path / "exp" / f"fold{k}", seed=k)
    models = tmp_path / "models"
    make_package(tmp_path / "exp" / "fold1", models / "crnn_fold1")
    (models / "README.txt").write_text("mine")
    with pytest.raises(SertkError, match="holds files sertk did not write"):
        make_package(tmp_path / "exp", models)
    assert (models / "README.txt").read_text() == "mine"
    assert (models / "crnn_fold1" / "manifest.json").is_file()
    assert sorted(p.name for p in models.iterdir()) == ["README.txt", "crnn_fold1"]


def test_loading_never_unpickles_objects_and_errors_are_one_line(tmp_path):
    write_checkpoint(tmp_path / "fold1")
    make_package(tmp_path / "fold1", tmp_path / "pkg")
    # A weights file holding an arbitrary Python object is refused by weights_only loading.
    torch.save(
        {"model": {}, "norm_mean": None, "norm_std": None, "x": Path("evil")}, tmp_path / "pkg" / "weights.pt"
    )
    with pytest.raises(SertkError, match="cannot load weights"):
        read_package(tmp_path / "pkg")
    (tmp_path / "pkg" / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(SertkError, match="package format 99"):
        read_package(tmp_path / "pkg")
    with pytest.raises(SertkError, match="model not found"):
        load_models(tmp_path / "nope")
    write_checkpoint(tmp_path / "other" / "fold1")
    ckpt = torch.load(tmp_path / "other" / "fold1" / "best.pt", weights_only=True)
    (tmp_path / "other" / "fold2").mkdir()
    torch.save({**ckpt, "classes": ["a", "b", "c", "d"]}, tmp_path / "other" / "fold2" / "best.pt")
    with pytest.raises(SertkError, match="differ"):
        load_models(tmp_path / "other")


def test_foreign_or_damaged_checkpoints_are_one_line_errors(tmp_path):
    ckpt = write_checkpoint(tmp_path / "fold1")
    state = torch.load(ckpt, weights_only=True)
    bad = tmp_path / "bad.pt"
    torch.save({k: v for k, v in state.items() if k != "arch"}, bad)
    with pytest.raises(SertkError, match=r"not a sertk checkpoint with model info \(missing arch\)"):
        load_models(bad)
    torch.save([1, 2], bad)
    with pytest.raises(SertkError, match=r"not a sertk checkpoint \(a list, not a mapping\)"):
        load_models(bad)
    torch.save({**state, "input_dim": "forty"}, bad)
    with pytest.raises(SertkError, match="malformed checkpoint"):
        load_models(bad)
    # Weights of a 4-cell LSTM under a config that asks for 8 cells: refused when the network is built.
    torch.save({**state, "model_config": {**TINY["crnn-att"], "lstm_cells": 8}}, bad)
    (model,) = load_models(bad)
    with pytest.raises(SertkError, match="weights do not fit arch crnn-att"):
        model.build()


def test_manifest_says_whether_the_model_normalises_and_a_missing_weights_file_is_named(tmp_path):
    ckpt = write_checkpoint(tmp_path / "fold1")
    make_package(tmp_path / "fold1", tmp_path / "pkg")
    assert json.loads((tmp_path / "pkg" / "manifest.json").read_text())["normalized"] is True
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "norm_mean": None, "norm_std": None}, ckpt)
    make_package(tmp_path / "fold1", tmp_path / "raw")
    assert json.loads((tmp_path / "raw" / "manifest.json").read_text())["normalized"] is False
    assert read_package(tmp_path / "raw").normalizer is None
    (tmp_path / "raw" / "weights.pt").unlink()
    with pytest.raises(SertkError, match=r"raw/weights.pt: weights file missing"):
        read_package(tmp_path / "raw")


def test_packages_sertk_did_not_list_there_are_never_replaced(tmp_path):
    """Only an ensemble's listed members, the package files and encoder-* copy dirs may be replaced."""
    for k in (1, 2):
        write_checkpoint(tmp_path / "exp" / f"fold{k}", seed=k)
    # models/ holds nothing but another package: it is not an ensemble sertk wrote there.
    models = tmp_path / "models"
    make_package(tmp_path / "exp" / "fold1", models / "crnn_fold1")
    with pytest.raises(SertkError, match=r"holds files sertk did not write \(crnn_fold1\)"):
        make_package(tmp_path / "exp", models)
    assert sorted(p.name for p in models.iterdir()) == ["crnn_fold1"]
    # An ensemble whose listed fold2 the user replaced by a folder of their own (no manifest.json).
    make_package(tmp_path / "exp", tmp_path / "ens")
    for entry in (tmp_path / "ens" / "fold2").iterdir():
        entry.unlink()
    (tmp_path / "ens" / "fold2" / "notes.txt").write_text("mine")
    with pytest.raises(SertkError, match=r"holds files sertk did not write \(fold2\)"):
        make_package(tmp_path / "exp", tmp_path / "ens")
    assert (tmp_path / "ens" / "fold2" / "notes.txt").read_text() == "mine"
    # A user's file named like an encoder copy is not one: only encoder-* directories are sertk's.
    make_package(tmp_path / "exp" / "fold1", tmp_path / "pkg")
    (tmp_path / "pkg" / "encoder-notes.txt").write_text("mine")
    with pytest.raises(SertkError, match=r"holds files sertk did not write \(encoder-notes.txt\)"):
        make_package(tmp_path / "exp" / "fold1", tmp_path / "pkg")
    assert (tmp_path / "pkg" / "encoder-notes.txt").read_text() == "mine"
