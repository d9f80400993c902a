"""Every egs/iemocap/conf/**/*.yaml with an ``arch`` builds its model and loss and runs one tiny batch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import tiny_ssl_checkpoint

from sertk.config import read_yaml, to_dict
from sertk.features import build_feature
from sertk.losses import build_loss
from sertk.models import build_model, count_parameters, fit_model_config, model_config
from sertk.train.config import load_experiment_config

CONF = Path(__file__).resolve().parents[1] / "egs" / "iemocap" / "conf"
SYSTEM_CONFIGS = sorted(p for p in CONF.rglob("*.yaml") if "arch" in read_yaml(p))
RATE = 16000


@pytest.fixture(scope="module")
def ssl_checkpoint(tmp_path_factory) -> Path:
    """Stands in for the checkpoint a user gives the SSL configs (--ssl-checkpoint): a tiny random wav2vec2."""
    return tiny_ssl_checkpoint(tmp_path_factory.mktemp("ssl") / "wav2vec2-tiny")


def test_configs_found():
    names = {p.relative_to(CONF).as_posix() for p in SYSTEM_CONFIGS}
    assert "crnn_discriminative.yaml" in names and "crnn_discriminative/combined_pooling.yaml" in names
    assert "crnn_discriminative/lstm64.yaml" in names and "attention_pooling_cnn/fig2/h10_w2.yaml" in names
    assert {f"rlc_gca_lstm/{s}_lexical.yaml" for s in ("baseline", "s1", "s2", "s3")} <= names
    assert {"ssl.yaml", "ssl/onthefly.yaml", "ssl/finetune.yaml"} <= names


@pytest.mark.parametrize("path", SYSTEM_CONFIGS, ids=lambda p: p.relative_to(CONF).as_posix())
def test_config_builds_model_and_loss(path, ssl_checkpoint):
    data = read_yaml(path)
    feat_conf = CONF / "feats" / f"{data['feat']}.yaml"
    feat_config = read_yaml(feat_conf) if feat_conf.is_file() else {}
    model_section = dict(data.get("model") or {})
    # What a recipe fills in from --ssl-checkpoint: the ssl dump's checkpoint, an on-the-fly model.encoder's.
    if data["feat"] == "ssl":
        feat_config["checkpoint"] = str(ssl_checkpoint)
    if "encoder" in model_section:
        model_section["encoder"] = {**model_section["encoder"], "checkpoint": str(ssl_checkpoint)}
    extractor = build_feature(data["feat"], feat_config)
    cfg = model_config(data["arch"], model_section)
    cfg = fit_model_config(data["arch"], cfg, data["feat"], to_dict(extractor.cfg))  # what sertk train does
    model = build_model(data["arch"], cfg, extractor.dim, 4).eval()
    loss_fn = build_loss(data.get("loss"), 4, head=cfg.head, head_scale=cfg.head_scale)
    frames = extractor.num_frames(3 * RATE)  # 3 s of input
    feats = torch.randn(2, frames, extractor.dim)
    words = {}
    if getattr(cfg, "lexical_dim", 0):  # a lexical branch (rlc_gca_lstm.md §3.4) also reads word vectors
        words = {"words": torch.randn(2, 5, cfg.lexical_dim), "word_lengths": torch.tensor([5, 2])}
    with torch.no_grad():
        logits = model(feats, torch.tensor([frames, frames // 2]), **words)
        loss = loss_fn(logits, torch.tensor([0, 3]))
    assert logits.shape == (2, 4) and torch.isfinite(loss)


def test_config_loads_as_experiment_config():
    for path in SYSTEM_CONFIGS:
        assert load_experiment_config(path).arch == read_yaml(path)["arch"]


# Configs that vary one published row's model: (config, its parent) share loss, train and input verbatim.
VARIANTS = [
    ("crnn_discriminative/lstm64.yaml", "crnn_discriminative.yaml"),
    *[(f"rlc_gca_lstm/{s}_lexical.yaml", f"rlc_gca_lstm/{s}.yaml") for s in ("baseline", "s1", "s2", "s3")],
    *[
        (p.relative_to(CONF).as_posix(), "attention_pooling_cnn/gap.yaml")
        for p in (CONF / "attention_pooling_cnn" / "fig2").glob("*.yaml")
    ],
]


@pytest.mark.parametrize(("path", "parent"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_configs_copy_their_parents_training(path, parent):
    data, base = read_yaml(CONF / path), read_yaml(CONF / parent)
    for key in ("arch", "feat", "protocol", "loss", "train", "input"):
        assert data.get(key) == base.get(key), key


def test_crnn_lstm64_is_the_literal_reading():
    data = read_yaml(CONF / "crnn_discriminative" / "lstm64.yaml")
    base = read_yaml(CONF / "crnn_discriminative.yaml")
    assert data["model"] == {**base["model"], "lstm_cells": 64} and data["paper"] == base["paper"]


# Table 2, A+L column: (UA, F1) of Baseline, S1, S2, S3 with lexical features.
TABLE2_LEXICAL = {
    "baseline": (0.729, 0.731),
    "s1": (0.743, 0.745),
    "s2": (0.771, 0.770),
    "s3": (0.792, 0.791),
}


@pytest.mark.parametrize("system", TABLE2_LEXICAL)
def test_rlc_lexical_configs_are_table2_al_rows(system):
    data = read_yaml(CONF / "rlc_gca_lstm" / f"{system}_lexical.yaml")
    acoustic = read_yaml(CONF / "rlc_gca_lstm" / f"{system}.yaml")
    assert data["model"] == {**acoustic["model"], "lexical_dim": 300, "lexical_cells": 256}
    assert (data["paper"]["ua"], data["paper"]["macro_f1"]) == TABLE2_LEXICAL[system]


def test_attn_pool_fig2_sweeps_conv1_alone():
    """§3.2: Conv1 alone + GAP + FC (16:4); Fig. 2 top: width 2, height 2...100; bottom: height 2, width 2...80."""
    shapes = set()
    for path in (CONF / "attention_pooling_cnn" / "fig2").glob("*.yaml"):
        cfg = load_experiment_config(path)
        ((freq, time, filters),) = cfg.model["first_layer"]
        assert path.stem == f"h{freq}_w{time}" and filters == 16
        assert cfg.model["channels"] == [] and cfg.model["pool_after"] == [] and cfg.model["pooling"] == "gap"
        model = build_model(cfg.arch, cfg.model, 400, 4)
        # Conv1 (no bias) + its BN + the FC (16:4): nothing else.
        assert count_parameters(model) == freq * time * 16 + 2 * 16 + 16 * 4 + 4
        shapes.add((freq, time))
    heights = sorted(f for f, t in shapes if t == 2)
    widths = sorted(t for f, t in shapes if f == 2)
    assert shapes == {(h, 2) for h in heights} | {(2, w) for w in widths}
    assert (heights[0], heights[-1], widths[0], widths[-1]) == (2, 100, 2, 80)
    assert {10, 100} <= set(heights) and 8 in widths and len(shapes) >= 24  # "dozens", incl. the optima


def test_crnn_discriminative_grid_matches_table2():
    grid = CONF / "crnn_discriminative"
    ams = {(s, m) for s in (10.0, 30.0) for m in (0.1, 0.2, 0.4)}
    focal = {(g, a) for g in (2.0, 5.0) for a in (1.0, 2.0, 4.0)}
    found_ams, found_focal = set(), set()
    for path in grid.glob("*.yaml"):
        data = read_yaml(path)
        if match := re.fullmatch(r"ams_s(\d+)_m([\d.]+)", path.stem):
            assert data["model"] == {"head": "cosine", "head_scale": float(match[1])}
            assert data["loss"] == {"name": "ams", "margin": float(match[2])}
            found_ams.add((data["model"]["head_scale"], data["loss"]["margin"]))
        elif match := re.fullmatch(r"focal_g(\d+)_a(\d+)", path.stem):
            assert data["loss"] == {"name": "focal", "gamma": float(match[1]), "alpha": float(match[2])}
            found_focal.add((data["loss"]["gamma"], data["loss"]["alpha"]))
        elif path.stem == "combined_pooling":
            assert data["model"] == {"pooling": "attention-mean-std"} and data["loss"] == {"name": "ce"}
        else:
            assert path.stem == "lstm64"  # the baseline row's other reading (test_crnn_lstm64_...)
    assert found_ams == ams and found_focal == focal
