"""lstm-attn: each pooling's weights on a hand example, masking, padding invariance, sizes, config errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sertk.errors import SertkError
from sertk.models import MODELS, SYSTEMS, build_model, count_parameters, model_config
from sertk.models.lstm_attn import (
    POOLINGS,
    BiLstm,
    LstmWeights,
    MeanWeights,
    YangWeights,
    ZhouWeights,
    reverse_valid,
)

# Three real frames, then one padded frame of garbage that must get no weight.
FRAMES = torch.tensor([[[0.5, -1.0], [2.0, 0.3], [-0.7, 0.9], [50.0, -80.0]]], dtype=torch.float64)
LENGTHS = torch.tensor([3])


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rows(frames: torch.Tensor) -> list[list[float]]:
    return frames[0, :3].tolist()


def test_registered():
    assert MODELS["lstm-attn"].__name__ == "LstmAttn" and SYSTEMS["lstm-attn"] == "lstm_attention"


def test_mean_weights_are_one_over_length():
    alpha = MeanWeights()(FRAMES, LENGTHS)
    assert alpha[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])


def test_zhou_weights_by_hand():
    zhou = ZhouWeights(2).double()
    with torch.no_grad():
        zhou.vector.weight.copy_(torch.tensor([[1.5, -2.0]]))
    # Eq. 1-4 with Zhou et al.'s M = tanh(H): m_t = w^T tanh(h_t), alpha = softmax(m).
    expected = softmax([1.5 * math.tanh(a) - 2.0 * math.tanh(b) for a, b in rows(FRAMES)])
    alpha = zhou(FRAMES, LENGTHS)[0]
    assert alpha[:3].tolist() == pytest.approx(expected, abs=1e-12)
    assert alpha[3].item() == 0.0


def test_yang_weights_by_hand():
    yang = YangWeights(2, 3).double()
    weight = [[0.2, -0.4], [1.0, 0.5], [-0.3, 0.8]]
    bias = [0.1, -0.2, 0.3]
    context = [0.7, -1.1, 0.9]
    with torch.no_grad():
        yang.proj.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        yang.proj.bias.copy_(torch.tensor(bias, dtype=torch.float64))
        yang.context.weight.copy_(torch.tensor([context], dtype=torch.float64))
    scores = []
    for frame in rows(FRAMES):
        # u_t = tanh(W h_t + b); score = u_t^T u_w.
        u = [
            math.tanh(sum(w * x for w, x in zip(row, frame, strict=True)) + b)
            for row, b in zip(weight, bias, strict=True)
        ]
        scores.append(sum(c * v for c, v in zip(context, u, strict=True)))
    alpha = yang(FRAMES, LENGTHS)[0]
    assert alpha[:3].tolist() == pytest.approx(softmax(scores), abs=1e-12)
    assert alpha[3].item() == 0.0


def frame_local_lstm(module: LstmWeights) -> None:
    """Gates i = o = 1, f = 0 and g = tanh(x_t) in both directions, so h'_t = tanh(tanh(x_t)) per frame."""
    for lstm in (module.lstm.forward_lstm, module.lstm.backward_lstm):
        cells = lstm.hidden_size
        with torch.no_grad():
            for param in lstm.parameters():
                param.zero_()
            lstm.weight_ih_l0[2 * cells : 3 * cells] = torch.eye(cells)  # PyTorch gate order: i, f, g, o
            lstm.bias_ih_l0[:cells] = 60.0
            lstm.bias_ih_l0[cells : 2 * cells] = -60.0
            lstm.bias_ih_l0[3 * cells :] = 60.0


@pytest.mark.parametrize("normalize", [False, True])
def test_lstm_weights_are_sigmoids_by_hand(normalize):
    proposed = LstmWeights(2, 2, normalize=normalize).double()
    frame_local_lstm(proposed)
    w = [1.0, 2.0, -1.0, 0.5]
    with torch.no_grad():
        proposed.vector.weight.copy_(torch.tensor([w]))
    expected = []
    for frame in rows(FRAMES):
        context = [math.tanh(math.tanh(x)) for x in frame] * 2  # forward and backward halves agree
        expected.append(sigmoid(sum(a * b for a, b in zip(w, context, strict=True))))
    if normalize:
        expected = [a / sum(expected) for a in expected]
    alpha = proposed(FRAMES, LENGTHS)[0]
    assert alpha[:3].tolist() == pytest.approx(expected, abs=1e-12)
    assert alpha[3].item() == 0.0
    # The paper's sigmoid weights are not a distribution: their sum is left as it is.
    assert alpha.sum().item() == pytest.approx(1.0 if normalize else sum(expected), abs=1e-12)
    if not normalize:
        assert abs(alpha.sum().item() - 1.0) > 0.1


def tiny(pooling: str, **extra) -> torch.nn.Module:
    cfg = {"dense_units": 8, "lstm_cells": 5, "yang_units": 6, "attention_cells": 4, "pooling": pooling}
    torch.manual_seed(0)
    return build_model("lstm-attn", cfg | extra, 3, 4).double().eval()


def padded_batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(len(lengths), max(lengths), 3, generator=gen, dtype=torch.float64)
    for b, length in enumerate(lengths):
        feats[b, length:] = 9.0  # garbage, not zeros, so masking has to happen
    return feats, torch.tensor(lengths)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padded_frames_get_exactly_zero_weight(pooling):
    model = tiny(pooling)
    feats, lengths = padded_batch([7, 3, 5])
    with torch.no_grad():
        alpha = model.attention(feats, lengths)
    mask = torch.arange(7)[None, :] < lengths[:, None]
    assert alpha.shape == (3, 7)
    assert torch.all(alpha[~mask] == 0.0) and torch.all(alpha[mask] > 0.0)
    if pooling != "lstm":
        assert torch.allclose(alpha.sum(dim=1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_model_is_padding_invariant(pooling):
    model = tiny(pooling)
    feats, lengths = padded_batch([9, 4, 6])
    with torch.no_grad():
        batch_logits = model(feats, lengths)
        batch_alpha = model.attention(feats, lengths)
        for b, length in enumerate(lengths.tolist()):
            alone = feats[b : b + 1, :length]
            logits = model(alone, torch.tensor([length]))
            assert torch.allclose(batch_logits[b], logits[0], atol=1e-10)
            assert torch.allclose(batch_alpha[b, :length], model.attention(alone, torch.tensor([length]))[0])


def test_forward_pools_with_the_attention_weights_unnormalised():
    model = tiny("lstm")
    feats, lengths = padded_batch([6, 4])
    with torch.no_grad():
        frames, alpha = model._encode(feats, lengths)
        pooled = torch.stack([sum(alpha[b, t] * frames[b, t] for t in range(6)) for b in range(2)])
        assert torch.allclose(model(feats, lengths), model.head(pooled))


def test_parameter_counts_match_hand_formulas():
    counts = {p: count_parameters(build_model("lstm-attn", {"pooling": p}, 32, 4)) for p in POOLINGS}
    # 3 x FC 256 (32 -> 256 -> 256 -> 256), two one-way LSTMs 256 -> 128, logits 256 -> 4.
    dense = (32 * 256 + 256) + 2 * (256 * 256 + 256)
    bilstm = 2 * (4 * 128 * (256 + 128) + 8 * 128)
    assert counts["mean"] == dense + bilstm + 256 * 4 + 4 == 536_324  # the docstring's count
    # Zhou: one 256-vector; Yang: 256x256 + 256 + a 256 context vector; LSTM: BiLSTM(256 -> 2x128) + 256.
    assert counts["zhou"] - counts["mean"] == 256
    assert counts["yang"] - counts["mean"] == 256 * 256 + 256 + 256
    assert counts["lstm"] - counts["mean"] == 2 * 4 * 128 * (256 + 128 + 2) + 256


@pytest.mark.parametrize(
    ("override", "message"),
    [({"pooling": "max"}, "pooling"), ({"dropout": 1.0}, "dropout"), ({"lstm_cells": 0}, "lstm_cells")],
)
def test_bad_config_is_a_one_line_error(override, message):
    with pytest.raises(SertkError, match=message):
        model_config("lstm-attn", override)


def test_wrong_feature_width_is_an_error():
    with pytest.raises(SertkError, match=r"expected features \(B, T, 3\)"):
        tiny("mean")(torch.zeros(1, 4, 5, dtype=torch.float64), torch.tensor([4]))


def test_reverse_valid_by_hand():
    frames = torch.arange(8.0).reshape(2, 4, 1)
    out = reverse_valid(frames, torch.tensor([4, 2]))[..., 0]
    assert out.tolist() == [[3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 6.0, 7.0]]


def test_bilstm_matches_torch_packed_bidirectional_lstm():
    torch.manual_seed(2)
    ours = BiLstm(3, 4).double()
    reference = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for name, param in ours.forward_lstm.named_parameters():
            getattr(reference, name).copy_(param)
        for name, param in ours.backward_lstm.named_parameters():
            getattr(reference, f"{name}_reverse").copy_(param)
    feats, lengths = padded_batch([6, 2, 5])
    packed = pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=6)
    with torch.no_grad():
        assert torch.allclose(ours(feats, lengths), expected, atol=1e-12)


def test_lengths_past_the_width_or_zero_are_clamped_to_one_and_t():
    """A length beyond the batch width counts as the width and a length 0 as one frame: no index error, no NaN."""
    model = tiny("zhou")
    feats, _ = padded_batch([5, 5])
    with torch.no_grad():
        out = model(feats, torch.tensor([8, 0]))
        assert torch.isfinite(out).all()
        assert torch.equal(out, model(feats, torch.tensor([5, 1])))
