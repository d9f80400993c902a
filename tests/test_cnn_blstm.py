"""cnn-blstm (cnn_blstm_vtlp.txt): length arithmetic, padding invariance, layer-wise BN, Table 1 configs, a toy task."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sertk.config import read_yaml
from sertk.models import build_model, count_parameters
from sertk.models.cnn_blstm import RecurrentLayer
from sertk.train.config import load_experiment_config
from sertk.train.loop import build_optimizer

CONF = Path(__file__).resolve().parents[1] / "egs" / "iemocap" / "conf"
TINY = {"conv_channels": [4, 4, 4], "freq_strides": [2, 2, 1], "time_strides": [2, 1, 3], "lstm_cells": 6}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_output_lengths_through_the_default_strides():
    model = build_model("cnn-blstm", {}, 256, 4)
    # Time strides 2, 2, 1, 1 with kernel 3: 21 -> 11 -> 6 (the paper's shortest), 909 -> 455 -> 228.
    assert model.output_lengths(torch.tensor([1, 2, 21, 909])).tolist() == [1, 1, 6, 228]


@pytest.mark.parametrize("norm,layers", [("none", 1), ("layer-batch", 2)])
@pytest.mark.parametrize("mode", ["train", "eval", "inference"])
def test_padding_never_changes_the_logits(norm, layers, mode):
    """Also without autograd, where channels-last maps, the mask skipped on full batches and the LSTM
    unpacked when nothing is padded must give the logits of the padded, packed path."""
    torch.manual_seed(0)
    model = build_model(
        "cnn-blstm", TINY | {"recurrent_norm": norm, "lstm_layers": layers, "dropout": 0.0}, 12, 3
    )
    model.train(mode == "train")
    feats, lengths = torch.randn(3, 17, 12), torch.tensor([17, 9, 4])
    padded = torch.cat([feats, torch.randn(3, 8, 12)], dim=1)  # garbage past the end: must be masked too
    with torch.set_grad_enabled(mode != "inference"):
        torch.testing.assert_close(model(padded, lengths), model(feats, lengths), rtol=1e-5, atol=1e-6)
        if mode != "train":
            alone = model(feats[2:, :4], lengths[2:])
            torch.testing.assert_close(model(feats, lengths)[2:], alone, rtol=1e-5, atol=1e-6)
            full = model(feats[:1], lengths[:1])
            torch.testing.assert_close(model(feats, lengths)[:1], full, rtol=1e-5, atol=1e-6)


def test_layer_batch_norm_normalises_only_the_input_projection():
    model = build_model("cnn-blstm", TINY | {"recurrent_norm": "layer-batch"}, 12, 3)
    layer = model.rnn[0]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["rnn.0.lstm.weight_ih_l0", "rnn.0.lstm.weight_ih_l0_reverse"]
    # The LSTM's input weights pick its direction's 4H gate inputs out of the normalised projection.
    cells = 6
    torch.testing.assert_close(layer.lstm.weight_ih_l0[:, : 4 * cells], torch.eye(4 * cells))
    assert torch.all(layer.lstm.weight_ih_l0[:, 4 * cells :] == 0)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) - 2 * (4 * cells) * (
        8 * cells
    )


@pytest.mark.parametrize("norm", ["none", "layer-batch"])
def test_default_parameter_count_matches_hand_formula(norm):
    model = build_model("cnn-blstm", {"recurrent_norm": norm}, 256, 4)
    # 3x3 convs with bias: 1 -> 32 -> 64 -> 64 -> 64; frequency stride 2 four times: 256 -> 16 bins.
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in [(1, 32), (32, 64), (64, 64), (64, 64)])
    rnn_in, cells = 64 * 16, 128
    if norm == "none":
        recurrent = 2 * (4 * cells * (rnn_in + cells) + 8 * cells)  # BiLSTM 1024 -> 2 x 128
    else:
        # Eq. 12: W_x (1024 -> 8H, no bias), LayerBatchNorm's per-feature scale and shift, then the LSTM's
        # recurrent weights and biases only (its input weights are a frozen selection).
        recurrent = rnn_in * 8 * cells + 2 * 8 * cells + 2 * (4 * cells * cells + 8 * cells)
    assert count_parameters(model) == convs + recurrent + 2 * cells * 4 + 4


TABLE1 = {  # column: (feat, vtlp, oversample, layer-wise lr, paper WA %, paper UA %)
    "baseline": ("spec-logpow", False, False, False, 66.4, 57.7),
    "over": ("spec-logpow", False, True, False, 63.2, 58.6),
    "aug_over": ("spec-logpow", True, True, False, 64.9, 59.5),
    "over_grdt": ("spec-logpow", False, True, True, 63.5, 59.8),
    "aug_over_grdt": ("spec-logpow", True, True, True, 64.2, 60.9),
    "best": ("spec-logpow8k", True, True, True, 64.5, 61.7),
}


@pytest.mark.parametrize("column", TABLE1)
def test_table1_configs(column):
    feat, aug, over, grdt, wa, ua = TABLE1[column]
    cfg = load_experiment_config(CONF / "cnn_blstm_vtlp" / f"{column}.yaml")
    assert (cfg.arch, cfg.feat, cfg.protocol) == ("cnn-blstm", feat, "loso-speaker")
    assert cfg.paper == pytest.approx({"wa": wa / 100, "ua": ua / 100})
    assert (cfg.input.vtlp == "utterance") == aug and (cfg.input.tta == "vtlp") == aug
    assert cfg.train.oversample == ({"hap": 2, "ang": 2} if over else {})
    assert cfg.train.optimizer == "sgd" and cfg.train.nesterov and cfg.train.weight_decay > 0
    assert cfg.input.normalize == "global-scalar"  # Eq. 5: one mean and std
    model = build_model(cfg.arch, cfg.model, 512 if feat.endswith("8k") else 256, 4)
    groups = build_optimizer(model, cfg.train).param_groups
    assert len(groups) == (2 if grdt else 1)
    if grdt:
        conv, rest = groups
        assert conv["lr"] > rest["lr"] and conv["weight_decay"] > rest["weight_decay"]
        assert sum(p.numel() for p in conv["params"]) == sum(p.numel() for p in model.convs.parameters())


def test_canonical_config_is_the_best_column():
    assert read_yaml(CONF / "cnn_blstm_vtlp.yaml") == read_yaml(CONF / "cnn_blstm_vtlp" / "best.yaml")


def test_learns_a_toy_task():
    """Class 1 has a rising tone (energy moving up the bins over time), class 0 a falling one: needs time order."""
    torch.manual_seed(0)
    batch, frames, bins = 16, 12, 8
    labels = torch.arange(batch) % 2
    steps = torch.arange(frames)
    peak = torch.where(
        labels[:, None] == 1, steps[None, :] * bins // frames, (frames - 1 - steps)[None, :] * bins // frames
    )
    feats = torch.nn.functional.one_hot(peak, bins).float() * 3 + 0.3 * torch.randn(batch, frames, bins)
    lengths = torch.randint(8, frames + 1, (batch,))
    model = build_model("cnn-blstm", TINY | {"dropout": 0.0}, bins, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(feats, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(feats, lengths).argmax(dim=1) == labels).float().mean().item()
    assert accuracy == 1.0 and loss.item() < 0.1


def test_each_direction_reads_its_own_half_of_the_normalised_projection():
    """Eq. 12 per direction: forward gates get rows 0..4H of BN(W_x x), backward gates rows 4H..8H."""
    torch.manual_seed(3)
    cells, dim = 3, 5
    layer = RecurrentLayer(dim, cells, norm=True).double().eval()
    # Fresh running statistics (mean 0, variance 1) and unit affine: BN(y) = y / sqrt(1 + eps).
    w = layer.proj.weight / math.sqrt(1.0 + layer.norm.eps)
    reference = torch.nn.LSTM(dim, cells, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for suffix, rows in (("", slice(0, 4 * cells)), ("_reverse", slice(4 * cells, 8 * cells))):
            getattr(reference, f"weight_ih_l0{suffix}").copy_(w[rows])
            for name in ("weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(reference, name + suffix).copy_(getattr(layer.lstm, name + suffix))
        x = torch.randn(2, 4, dim, dtype=torch.float64)
        out, final = layer(x, torch.tensor([4, 4]))
        expected, (h, _) = reference(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, torch.cat([h[0], h[1]], dim=-1))
