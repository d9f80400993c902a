"""GCA-LSTM (rlc_gca_lstm.md Eq. 4-12): the gated cell against plain Python, the gate, padding, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from sertk.models.gca_lstm import GcaLstm, minmax_over_valid

pytestmark = pytest.mark.usefixtures("one_thread")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _gca(input_dim: int = 3, hidden: int = 2, iterations: int = 3, seed: int = 0) -> GcaLstm:
    torch.manual_seed(seed)
    return GcaLstm(input_dim, hidden, iterations).double()


def _eq11_by_hand(module: GcaLstm, encoded: list[list[float]], gate: list[float]) -> list[float]:
    """Eq. 4-6, 11, 8 one step and one unit at a time with Python floats; returns the last h."""
    hidden = module.hidden
    w = module.cell_input.weight.tolist()  # (4H, H) rows: i, f, c, o blocks
    b = module.cell_input.bias.tolist()
    u = module.cell_recurrent.weight.tolist()
    h_prev, c_prev = [0.0] * hidden, [0.0] * hidden
    for h_n, r in zip(encoded, gate, strict=True):
        pre = [
            sum(w[row][k] * h_n[k] for k in range(hidden))
            + b[row]
            + sum(u[row][k] * h_prev[k] for k in range(hidden))
            for row in range(4 * hidden)
        ]
        i_n = [_sigmoid(pre[j]) for j in range(hidden)]
        f_n = [_sigmoid(pre[hidden + j]) for j in range(hidden)]
        candidate = [math.tanh(pre[2 * hidden + j]) for j in range(hidden)]
        o_n = [_sigmoid(pre[3 * hidden + j]) for j in range(hidden)]
        c_n = [f_n[j] * c_prev[j] * (1 - r) + i_n[j] * candidate[j] * r for j in range(hidden)]  # Eq. 11
        h_prev = [o_n[j] * math.tanh(c_n[j]) for j in range(hidden)]  # Eq. 8
        c_prev = c_n
    return h_prev


def test_gated_cell_matches_eq11_step_by_step():
    module = _gca()
    gen = torch.Generator().manual_seed(1)
    encoded = torch.randn(1, 4, 2, generator=gen, dtype=torch.float64)
    gate = [0.0, 1.0, 0.3, 0.7]
    expected = _eq11_by_hand(module, encoded[0].tolist(), gate)
    got = module.gated_lstm(
        module.step_terms(encoded)[1], torch.tensor([gate], dtype=torch.float64), torch.tensor([4]), 4
    )
    assert got[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_gate_zero_everywhere_imports_nothing():
    # r = 0: c_n = f c_{n-1} from c_0 = 0 stays 0, so h_n = o tanh(0) = 0 whatever the input.
    module = _gca()
    encoded = torch.randn(2, 5, 2, dtype=torch.float64)
    got = module.gated_lstm(
        module.step_terms(encoded)[1], torch.zeros(2, 5, dtype=torch.float64), torch.tensor([5, 3]), 3
    )
    assert torch.equal(got, torch.zeros(2, 2, dtype=torch.float64))


def test_minmax_over_valid_by_hand():
    scores = torch.tensor([[0.1, 0.3, 0.2, 9.0], [0.4, 5.0, 5.0, 5.0], [0.25, 0.25, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [True, True, False, False]])
    got = minmax_over_valid(scores, mask)
    # Row 1: (s - 0.1) / 0.2 on the 3 valid steps; rows 2-3 have no spread: every valid step gets 1.
    expected = torch.tensor([[0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert torch.allclose(got, expected, atol=1e-6)


def test_informativeness_is_eq9_softmax_then_minmax():
    module = _gca(hidden=2)
    gen = torch.Generator().manual_seed(2)
    encoded = torch.randn(1, 5, 2, generator=gen, dtype=torch.float64)
    context = torch.randn(1, 2, generator=gen, dtype=torch.float64)
    length = 4
    w2, b2 = module.score_hidden.weight.tolist(), module.score_hidden.bias.tolist()
    w1 = module.score_out.weight[0].tolist()
    scores = []
    for h_n in encoded[0, :length].tolist():
        pair = h_n + context[0].tolist()  # [h_n; F]
        inner = [math.tanh(sum(w2[j][k] * pair[k] for k in range(4)) + b2[j]) for j in range(2)]
        scores.append(sum(w1[j] * inner[j] for j in range(2)))  # Eq. 9
    total = sum(math.exp(e) for e in scores)
    probs = [math.exp(e) / total for e in scores]  # Eq. 10
    low, high = min(probs), max(probs)
    expected = [(p - low) / (high - low) for p in probs] + [0.0]
    got = module.informativeness(module.step_terms(encoded)[0], context, torch.tensor([length]))
    assert got[0].tolist() == pytest.approx(expected, abs=1e-9)


def test_padding_does_not_change_output():
    module = _gca(input_dim=3, hidden=4).eval()
    gen = torch.Generator().manual_seed(3)
    alone = torch.randn(1, 6, 3, generator=gen, dtype=torch.float64)
    longer = torch.randn(1, 9, 3, generator=gen, dtype=torch.float64)
    garbage = 50.0 + torch.randn(1, 3, 3, generator=gen, dtype=torch.float64)
    batch = torch.cat([torch.cat([alone, garbage], dim=1), longer])
    with torch.no_grad():
        single = module(alone, torch.tensor([6]))
        batched = module(batch, torch.tensor([6, 9]))
    assert torch.allclose(batched[:1], single, atol=1e-12)
    assert not torch.allclose(batched[1:], single)


def test_context_initialised_from_last_valid_step_and_refined_by_eq12():
    module = _gca(input_dim=3, hidden=2, iterations=1)
    with torch.no_grad():
        module.refine.bias.fill_(2.0)  # W_F's ReLU active, so F(1) shows what went in (not clipped to 0)
    gen = torch.Generator().manual_seed(4)
    steps = torch.randn(1, 5, 3, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([3])
    encoded, context = module.encode(steps, lengths)
    # F(0) = h_N of the first LSTM run on the 3 valid steps alone (Eq. 4-8).
    alone, _ = module.encoder(steps[:, :3])
    assert torch.allclose(context, alone[:, -1], atol=1e-12)
    assert torch.equal(encoded[:, 3:], torch.zeros_like(encoded[:, 3:]))
    # One iteration: F(1) = ReLU(W_F [h_N(1); F(0)]) with h_N(1) from the r-gated second LSTM.
    gate = module.informativeness(module.step_terms(encoded)[0], context, lengths)
    attended = torch.tensor([_eq11_by_hand(module, encoded[0, :3].tolist(), gate[0, :3].tolist())])
    w_f, b_f = module.refine.weight, module.refine.bias
    expected = torch.relu(torch.cat([attended.double(), context], dim=-1) @ w_f.T + b_f)
    assert (expected > 0).all()
    assert torch.allclose(module(steps, lengths), expected, atol=1e-12)


def test_every_parameter_gets_a_gradient():
    module = _gca(input_dim=3, hidden=3, iterations=2)
    steps = torch.randn(2, 5, 3, dtype=torch.float64)
    module(steps, torch.tensor([5, 2])).square().sum().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
