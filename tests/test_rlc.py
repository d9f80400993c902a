"""rlc (rlc_gca_lstm.md): Fig. 2 front end, Table 2 parameter counts by hand, self-attention, padding, keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sertk.config import read_yaml
from sertk.errors import SertkError
from sertk.models import MODELS, SYSTEMS, build_model, count_parameters
from sertk.models.rlc import ResidualBlock, Rlc, masked_self_attention

CONF = Path(__file__).resolve().parents[1] / "egs" / "iemocap" / "conf"

PAPER_PARAMS = {"baseline": 9_270_000, "s1": 9_150_000, "s2": 9_070_000, "s3": 9_110_000}  # Table 2

TINY = {
    "first_conv": [4, 4],
    "groups": [[3, 8], [3, 8]],
    "blocks": 2,
    "heads": 2,
    "dropout": 0.0,
    "lstm_units": 6,
    "iterations": 2,
    "dense": [5],
}
VARIANTS = {
    "s3": {},
    "s2": {"recurrent": "lstm"},
    "s1": {"recurrent": "lstm", "heads": 0},
    "baseline": {"residual_cnn": False, "heads": 0, "recurrent": "lstm"},
}

pytestmark = pytest.mark.usefixtures("one_thread")


# Hand formulas for the layers rlc is made of (PyTorch's parameter layouts).
def conv(kernel: int, c_in: int, c_out: int) -> int:
    return kernel * c_in * c_out  # no bias: batch norm follows


def bn(channels: int) -> int:
    return 2 * channels


def linear(d_in: int, d_out: int, bias: bool = True) -> int:
    return d_in * d_out + (d_out if bias else 0)


def lstm(d_in: int, hidden: int) -> int:
    return 4 * hidden * (d_in + hidden) + 8 * hidden  # W_ih, W_hh and two bias vectors


def self_attention(channels: int) -> int:
    return 4 * channels * channels + 4 * channels  # W^Q, W^K, W^V, W^O with biases (Eq. 3)


def rcn(d_in: int, heads: bool, first=(10, 32), groups=((5, 64), (5, 128), (3, 256), (3, 512))) -> int:
    """Fig. 2: conv (10, 32); per group two blocks of two convs (+BN), a projection shortcut in the first."""
    kernel, channels = first
    total = conv(kernel, d_in, channels) + bn(channels)
    for kernel, filters in groups:
        total += conv(kernel, channels, filters) + conv(kernel, filters, filters) + 2 * bn(filters)
        total += conv(1, channels, filters) + bn(filters)  # projection shortcut (He et al. option B)
        total += 2 * conv(kernel, filters, filters) + 2 * bn(filters)  # the second block
        total += 2 * self_attention(filters) if heads else 0
        channels = filters
    return total


def gca_lstm(d_in: int, hidden: int) -> int:
    """Eq. 4-12: first LSTM, W_e2 on [h; F] and W_e1 (no bias), second LSTM's W, b and U, W_F."""
    return (
        lstm(d_in, hidden)
        + linear(2 * hidden, hidden)
        + linear(hidden, 1, bias=False)
        + linear(hidden, 4 * hidden)
        + linear(hidden, 4 * hidden, bias=False)
        + linear(2 * hidden, hidden)
    )


def classifier(d_in: int, classes: int = 4) -> int:
    return linear(d_in, 256) + 2 * linear(256, 256) + linear(256, classes)  # 3 x FC-256, then the logits


def table2_count(system: str, units: int) -> int:
    if system == "s3":
        return rcn(17, heads=True) + gca_lstm(512, units) + classifier(units)
    d_in = 17 if system == "baseline" else 512
    front = 0 if system == "baseline" else rcn(17, heads=system == "s2")
    return front + lstm(d_in, units) + lstm(units, units) + classifier(units)


def test_registered_with_canonical_system():
    assert MODELS["rlc"] is Rlc and SYSTEMS["rlc"] == "rlc_gca_lstm"
    assert (CONF / "rlc_gca_lstm.yaml").resolve() == (CONF / "rlc_gca_lstm" / "s3.yaml").resolve()


@pytest.mark.parametrize("system", sorted(PAPER_PARAMS))
def test_table2_parameter_counts(system):
    data = read_yaml(CONF / "rlc_gca_lstm" / f"{system}.yaml")
    model = build_model(data["arch"], data["model"], 17, 4)
    units = model.cfg.lstm_units
    count = count_parameters(model)
    print(f"rlc {system}: {count:,} parameters, {units} LSTM units (paper {PAPER_PARAMS[system] / 1e6:.2f}M)")
    assert count == table2_count(system, units)
    # The paper's counts are ~6% above ours (its text does not pin down conv biases, W_e2 or d_k) ...
    assert -0.07 < (count - PAPER_PARAMS[system]) / PAPER_PARAMS[system] < 0
    # ... and the ablations' units are balanced to keep Table 2's ratios to S3 (its note), within 0.1%.
    s3 = table2_count("s3", 256)
    target = s3 * PAPER_PARAMS[system] / PAPER_PARAMS["s3"]
    assert abs(count - target) / target < 1e-3
    if system == "s3":
        assert units == 256 and model.cfg.iterations == 3 and model.cfg.heads == 4


def test_front_end_is_fig2_17_convs_5_strides_160ms_steps():
    model = build_model("rlc", {"dropout": 0.0}, 17, 4).eval()
    convs = [m for m in model.rcn.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] > 1]
    assert [(m.kernel_size[0], m.out_channels) for m in convs] == [(10, 32)] + [
        (k, c) for k, c in [(5, 64), (5, 128), (3, 256), (3, 512)] for _ in range(4)
    ]
    assert [m.stride[0] for m in convs] == [2] + [2, 1, 1, 1] * 4  # each group's first conv is strided
    projections = [m for m in model.rcn.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] == 1]
    assert [(m.in_channels, m.out_channels, m.stride[0]) for m in projections] == [
        (32, 64, 2),
        (64, 128, 2),
        (128, 256, 2),
        (256, 512, 2),
    ]
    attention = [m for m in model.rcn.modules() if isinstance(m, nn.MultiheadAttention)]
    assert [(m.embed_dim, m.num_heads) for m in attention] == [
        (c, 4) for c in (64, 64, 128, 128, 256, 256, 512, 512)
    ]
    # 320 frames of 5 ms = 1.6 s -> ten 160 ms steps; 33 frames -> ceil(33 / 32) = 2; 1 frame -> 1.
    with torch.no_grad():
        steps, lengths = model.suprasegmental(torch.randn(3, 320, 17), torch.tensor([320, 33, 1]))
    assert steps.shape == (3, 10, 512) and lengths.tolist() == [10, 2, 1]
    assert torch.all(steps[1, 2:] == 0) and torch.all(steps[2, 1:] == 0)


def test_self_attention_is_torch_multihead_attention_masked_like_the_lone_sequence():
    torch.manual_seed(0)
    block = ResidualBlock(4, 8, 3, 1, heads=4, dropout=0.0).double()
    attention = block.attention
    assert count_parameters(attention) == self_attention(8)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    x[1, 4:] = 30.0  # padding garbage
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    for grad in (True, False):  # with no grad and in eval mode, MultiheadAttention takes its fast path
        attention.train(grad)
        with torch.set_grad_enabled(grad):
            # What the block computes (one fused kernel) is the module's masked attention ...
            got = masked_self_attention(attention, x, valid)
            module, _ = attention(x, x, x, key_padding_mask=~valid, need_weights=False)
            torch.testing.assert_close(got * valid[..., None], module * valid[..., None], rtol=0, atol=1e-10)
            # ... and each sequence's as if it were alone.
            for b, length in enumerate((6, 4)):
                lone = x[b, :length]  # unbatched (L, C): nothing to mask
                expected, _ = attention(lone, lone, lone, need_weights=False)
                torch.testing.assert_close(got[b, :length], expected, rtol=0, atol=1e-10)
    # Eq. 2-3 by hand: 4 heads of 8 / 4 = 2 dims, softmax(Q Kᵀ / sqrt(2)) V, concatenated, times W^O.
    lone = x[1, :4]
    q, k, v = (lone @ attention.in_proj_weight.T + attention.in_proj_bias).chunk(3, dim=-1)
    heads = []
    for h in range(4):
        qh, kh, vh = (t[:, 2 * h : 2 * h + 2] for t in (q, k, v))
        heads.append(torch.softmax(qh @ kh.T / math.sqrt(2), dim=-1) @ vh)
    expected = attention.out_proj(torch.cat(heads, dim=-1))
    with torch.no_grad():
        torch.testing.assert_close(got[1, :4], expected, rtol=0, atol=1e-10)


def _trained_tiny(variant: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("rlc", {**TINY, **variant}, 3, 4).double()
    # A few training steps first, so the running BN statistics are not the identity.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 40, 3, dtype=torch.float64), torch.tensor([40, 31, 17, 9]))
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_padding_does_not_change_eval_logits(variant):
    model = _trained_tiny(variant)
    gen = torch.Generator().manual_seed(1)
    alone = torch.randn(1, 23, 3, generator=gen, dtype=torch.float64)
    other = torch.randn(1, 40, 3, generator=gen, dtype=torch.float64)
    garbage = 9.0 + 4.0 * torch.randn(1, 17, 3, generator=gen, dtype=torch.float64)
    batch = torch.cat([torch.cat([alone, garbage], dim=1), other])
    with torch.no_grad():
        single = model(alone, torch.tensor([23]))
        batched = model(batch, torch.tensor([23, 40]))
    torch.testing.assert_close(batched[:1], single, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", [VARIANTS["s3"], VARIANTS["s1"]], ids=["s3", "s1"])
def test_padding_does_not_change_training_logits_or_batch_statistics(variant):
    # Widening the batch adds garbage steps to every row: batch-norm statistics must not see them.
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(3, 37, 3, generator=gen, dtype=torch.float64)
    wider = torch.cat([feats, 8.0 + torch.randn(3, 11, 3, generator=gen, dtype=torch.float64)], dim=1)
    lengths = torch.tensor([37, 20, 6])
    outputs, states = [], []
    for batch in (feats, wider):
        torch.manual_seed(0)
        model = build_model("rlc", {**TINY, **variant}, 3, 4).double().train()
        outputs.append(model(batch, lengths))
        states.append({k: v for k, v in model.state_dict().items() if "running" in k})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-10)
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=0, atol=1e-12, msg=key)


def test_tiny_rlc_learns_a_separable_task():
    torch.manual_seed(0)
    # 12 units, not TINY's 6: with 6 a seed now and then starts with the ReLUs of Eq. 12 all dead.
    model = build_model("rlc", {**TINY, "lstm_units": 12, "dense": [12]}, 3, 2)
    lengths = torch.randint(12, 33, (16,))
    labels = torch.arange(16) % 2
    # Class 1 has a positive offset on feature 0 over its valid frames.
    feats = torch.randn(16, 32, 3)
    feats[:, :, 0] += 2.0 * (2 * labels[:, None].float() - 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(feats, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(feats, lengths).argmax(dim=-1) == labels).float().mean()
    assert accuracy == 1.0


def test_lexical_branch_reads_the_last_valid_word_and_widens_the_classifier():
    base = {**TINY, "lexical_cells": 7}
    acoustic = build_model("rlc", base, 3, 4)
    lexical = build_model("rlc", {**base, "lexical_dim": 5}, 3, 4)
    # §3.4: an LSTM (5 -> 7) over the word vectors; its output joins F⁽ᴵ⁾ at the first dense layer.
    assert count_parameters(lexical) - count_parameters(acoustic) == lstm(5, 7) + 7 * 5
    assert lexical.classifier[0].in_features == 6 + 7
    lexical.eval()
    gen = torch.Generator().manual_seed(3)
    feats, words = torch.randn(2, 20, 3, generator=gen), torch.randn(2, 6, 5, generator=gen)
    lengths, word_lengths = torch.tensor([20, 20]), torch.tensor([6, 3])
    with torch.no_grad():
        logits = lexical(feats, lengths, words=words, word_lengths=word_lengths)
        # RT = hr_K: the LSTM's output at the last valid word, whatever follows it.
        noisy = words.clone()
        noisy[1, 3:] = 40.0
        torch.testing.assert_close(lexical(feats, lengths, words=noisy, word_lengths=word_lengths), logits)
        other = words.clone()
        other[1, 2] += 1.0  # the last valid word does change the logits
        assert not torch.allclose(
            lexical(feats, lengths, words=other, word_lengths=word_lengths)[1], logits[1]
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"recurrent": "gru"}, "recurrent"),
        ({"heads": 3}, "heads"),
        ({"residual_cnn": False}, "residual_cnn"),
        ({"groups": [[0, 64]]}, "groups"),
        ({"blocks": 0}, "blocks"),
        ({"dense": [0]}, "dense"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(SertkError, match=message):
        build_model("rlc", options, 17, 4)


def test_wrong_feature_width_is_an_error():
    model = build_model("rlc", TINY, 3, 4)
    with pytest.raises(SertkError, match=r"rlc: expected features \(B, T, 3\)"):
        model(torch.randn(1, 10, 5), torch.tensor([10]))
