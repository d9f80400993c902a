"""Attention plots: utterance choice, valid PNGs from a tiny trained lstm-attn exp dir, the eval CLI hook."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import yaml
from helpers import ToyModel, make_recipe, run
from matplotlib.image import imread
from typer.testing import CliRunner

from sertk.cli import app
from sertk.errors import SertkError
from sertk.evaluate.attention import pick_utterances, plot_attention, plot_utterance_attention
from sertk.models import MODELS, SYSTEMS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lstm_attn_conf(path, pooling="lstm"):
    config = {
        "arch": "lstm-attn",
        "feat": "toyfeat",
        "model": {
            "dense_units": 8,
            "lstm_cells": 4,
            "attention_cells": 3,
            "yang_units": 4,
            "pooling": pooling,
        },
        "train": {"lr": 0.01, "batch_size": 8, "epochs": 1, "patience": 0, "select_metric": "valid_ua_wa"},
        "input": {"max_frames": 20, "crop": "head", "normalize": "neutral", "white_noise_std": 0.6},
    }
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    recipe = make_recipe(root)
    lstm_attn_conf(recipe["conf"])
    exp = root / "exp"
    run(recipe, exp, fold="1")
    return exp


def test_pick_utterances_takes_classes_in_turn():
    assert pick_utterances([0, 0, 1, 2, 1], 4) == [0, 2, 3, 1]
    assert pick_utterances([3, 3], 5) == [0, 1]


def test_plot_attention_writes_valid_pngs(trained):
    paths = plot_attention(trained, 3, fold="1", device="cpu")
    assert len(paths) == 3 and all(p.parent == trained / "fold1" / "attention" for p in paths)
    # One utterance per class (the recipe's ids name the class after the speaker).
    assert len({p.stem.split("_")[1][:3] for p in paths}) == 3
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert imread(path).shape[2] in (3, 4)
    assert not list((trained / "fold1" / "attention").glob(".*"))  # no temp files left behind


def test_waveform_adds_a_panel(tmp_path):
    alpha = np.linspace(0.1, 0.9, 50)
    feats = np.random.default_rng(0).normal(size=(50, 6))
    plot_utterance_attention(tmp_path / "two.png", feats, alpha, 0.01, "no audio")
    wave = np.sin(np.arange(8000) / 10.0).astype(np.float32)
    plot_utterance_attention(tmp_path / "three.png", feats, alpha, 0.01, "audio", wave, 16000)
    two, three = imread(tmp_path / "two.png"), imread(tmp_path / "three.png")
    assert two.shape[1] == three.shape[1] and three.shape[0] > two.shape[0]


def test_real_audio_is_read_for_the_waveform(trained, tmp_path):
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    scp = trained.parent / "data" / "toy_system" / "wav.scp"
    original = scp.read_text()
    scp.write_text("".join(f"{line.split()[0]} {wav}\n" for line in original.splitlines()))
    try:
        with_audio = imread(plot_attention(trained, 1, fold="1", device="cpu")[0])
    finally:
        scp.write_text(original)
    # The recipe's wav.scp points at missing files: the plot then has no waveform panel and is shorter.
    without_audio = imread(plot_attention(trained, 1, fold="1", device="cpu")[0])
    assert with_audio.shape[0] > without_audio.shape[0]


def test_eval_cli_plots_attention(trained):
    result = CliRunner().invoke(
        app, ["eval", str(trained), "--fold", "1", "--device", "cpu", "--plot-attention", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (trained / "fold1" / "posteriors.tsv").is_file()
    assert len(list((trained / "fold1" / "attention").glob("*.png"))) >= 2


def test_arch_without_attention_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "toy", ToyModel)
    monkeypatch.setitem(SYSTEMS, "toy", "toy_system")
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "exp", fold="1")
    with pytest.raises(SertkError, match="arch toy has no attention weights"):
        plot_attention(tmp_path / "exp", 2, fold="1", device="cpu")


def test_bad_count_and_missing_exp_are_errors(trained, tmp_path):
    with pytest.raises(SertkError, match="plot-attention"):
        plot_attention(trained, 0, fold="1", device="cpu")
    with pytest.raises(SertkError, match="experiment.json"):
        plot_attention(tmp_path, 2)
