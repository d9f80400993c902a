"""Attention plots: utterance choice, valid PNGs from a tiny trained lstm-attn exp dir, the eval CLI hook."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import yaml
from helpers import CLASSES, DIM, ToyModel, make_recipe, run, write_conf
from matplotlib.figure import Figure
from matplotlib.image import imread
from typer.testing import CliRunner

import sertk.evaluate.attention as attention
from sertk.cli import app
from sertk.errors import SertkError
from sertk.evaluate.attention import pick_utterances, plot_attention, plot_utterance_attention
from sertk.features.io import load_features
from sertk.models import MODELS, SYSTEMS, build_model

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


class UniformAttention(ToyModel):
    """ToyModel with attention weights 1/length on each real frame and 0 on padding."""

    def attention(self, feats, lengths):
        real = torch.arange(feats.shape[1])[None, :] < lengths[:, None]
        return real.float() / lengths[:, None]


def plotted(tmp_path, monkeypatch, input_opts, count):
    """Train UniformAttention on the toy recipe (fold 1) with ``input_opts``, point wav.scp at a 1 s tone and
    plot ``count`` utterances; returns the recipe, the exp dir and each plot's arguments by utterance."""
    monkeypatch.setitem(MODELS, "toy", UniformAttention)
    monkeypatch.setitem(SYSTEMS, "toy", "toy_system")
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts=input_opts)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    scp = recipe["data"] / "wav.scp"
    scp.write_text("".join(f"{line.split()[0]} {wav}\n" for line in scp.read_text().splitlines()))
    calls = {}

    def record(path, feats, alpha, frame_shift_s, title, wave=None, sample_rate=16000):
        calls[path.stem] = {
            "feats": feats,
            "alpha": alpha,
            "shift": frame_shift_s,
            "title": title,
            "wave": wave,
        }

    monkeypatch.setattr(attention, "plot_utterance_attention", record)
    plot_attention(exp, count, fold="1", device="cpu")
    return recipe, exp, calls


def by_hand(recipe, exp, utts, start, frames):
    """Each utterance's frames start(L)..+frames, normalised with best.pt's statistics, and the model's
    softmax over them alone (unpadded)."""
    best = torch.load(exp / "fold1" / "best.pt", weights_only=True)
    model = build_model("toy", best["model_config"], DIM, len(CLASSES))
    model.load_state_dict(best["model"])
    model.eval()
    out = {}
    for utt, x in load_features(recipe["feats"], utts).items():
        first = start(len(x))
        x = (torch.from_numpy(x[first : first + frames]) - best["norm_mean"]) / best["norm_std"]
        with torch.no_grad():
            probs = model(x[None], torch.tensor([len(x)])).softmax(-1)[0]
        out[utt] = (first, x.numpy(), probs.numpy())
    return out


def test_each_plot_shows_the_first_segment_its_attention_its_audio_and_prediction(tmp_path, monkeypatch):
    segments = {"segment_frames": 12, "segment_shift_train": 6, "segment_shift_test": 6}
    recipe, exp, calls = plotted(tmp_path, monkeypatch, segments, 4)
    assert len(calls) == 4
    expected = by_hand(recipe, exp, list(calls), lambda n: 0, 12)
    assert any(len(x) < 12 for _, x, _ in expected.values())  # some rows are padded in the batch
    for utt, call in calls.items():
        _, feats, probs = expected[utt]
        # The model's input: the first 12-frame segment, normalised; 10 ms frames (toyfeat's default).
        np.testing.assert_allclose(call["feats"], feats, atol=1e-5)
        assert call["shift"] == pytest.approx(0.01)
        # UniformAttention: 1/length on each real frame of that segment, nothing for the padding.
        np.testing.assert_allclose(call["alpha"], np.full(len(feats), 1 / len(feats)), rtol=1e-6)
        # The waveform over the same frames: length x 10 ms x 16 kHz samples of the tone.
        assert call["wave"] is not None and len(call["wave"]) == len(feats) * 160
        true = utt.split("_")[1][:3]
        pred = CLASSES[int(probs.argmax())]
        assert call["title"].startswith(f"{utt}: true {true}, predicted {pred} (p={probs.max():.2f})")


def test_a_centre_crop_that_moves_the_start_drops_the_waveform(tmp_path, monkeypatch):
    crop = {"max_frames": 10, "crop": "center"}
    recipe, exp, calls = plotted(tmp_path, monkeypatch, crop, 8)
    # Centre crop of L frames to 10: start (L - 10) // 2 when L > 10, else 0.
    expected = by_hand(recipe, exp, list(calls), lambda n: max(n - 10, 0) // 2, 10)
    starts = {utt: first for utt, (first, _, _) in expected.items()}
    assert min(starts.values()) == 0 and max(starts.values()) > 0  # both cases are plotted
    for utt, call in calls.items():
        first, feats, _ = expected[utt]
        np.testing.assert_allclose(call["feats"], feats, atol=1e-5)
        if first == 0:
            assert len(call["wave"]) == len(feats) * 160
        else:
            assert call["wave"] is None


def test_pick_utterances_goes_by_class_index_not_first_appearance():
    # Class 0 first (its first utterance is index 1), then class 1 (index 2), then class 2 (index 0).
    assert pick_utterances([2, 0, 1, 0], 3) == [1, 2, 0]


def test_attention_curve_is_drawn_at_frame_centres(tmp_path, monkeypatch):
    figures = []

    class Recorded(Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(attention, "Figure", Recorded)
    feats = np.arange(6, dtype=float).reshape(3, 2)
    wave = np.zeros(480)
    plot_utterance_attention(tmp_path / "a.png", feats, np.array([0.2, 0.5, 0.3]), 0.01, "t", wave, 16000)
    wave_ax, feat_ax, alpha_ax = figures[0].axes
    # 3 frames of 10 ms: centres 5, 15, 25 ms; the axis spans the 30 ms; 480 samples at 16 kHz = 30 ms.
    np.testing.assert_allclose(alpha_ax.lines[0].get_xdata(), [0.005, 0.015, 0.025])
    np.testing.assert_allclose(alpha_ax.lines[0].get_ydata(), [0.2, 0.5, 0.3])
    assert alpha_ax.get_xlim() == pytest.approx((0.0, 0.03))
    assert feat_ax.images[0].get_extent() == pytest.approx([0.0, 0.03, 0.0, 2.0])
    np.testing.assert_allclose(wave_ax.lines[0].get_xdata()[[0, -1]], [0.0, 479 / 16000])
