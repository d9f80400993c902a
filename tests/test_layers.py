"""sertk.models.layers: conv/pool lengths against torch, masked batch norm against nn.BatchNorm, layer-wise BN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sertk.models.layers import (
    LayerBatchNorm,
    MaskedBatchNorm,
    conv_output_length,
    masked_moments,
    same_padding,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (5, 2), (3, 3), (1, 2), (10, 2), (4, 1), (2, 3)])
def test_same_conv_length_matches_torch(kernel, stride):
    conv = nn.Conv1d(1, 1, kernel, stride=stride)
    for length in range(1, 40):
        out = conv(F.pad(torch.zeros(1, 1, length), same_padding(kernel))).shape[-1]
        assert out == conv_output_length(length, kernel, stride) == -(-length // stride)  # ceil(L / s)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 0), (5, 1, 4), (7, 3, 2), (1, 2, 0)])
def test_padded_conv_length_matches_torch(kernel, stride, padding):
    conv = nn.Conv1d(1, 1, kernel, stride=stride, padding=padding // 2)
    lengths = torch.arange(max(kernel - padding, 1), 30)
    expected = [conv(torch.zeros(1, 1, n)).shape[-1] for n in lengths.tolist()]
    assert conv_output_length(lengths, kernel, stride, padding=padding).tolist() == expected


@pytest.mark.parametrize("pool", [2, 3])
def test_ceil_pool_length_matches_torch(pool):
    lengths = torch.arange(1, 30)
    expected = [F.avg_pool1d(torch.zeros(1, 1, n), pool, ceil_mode=True).shape[-1] for n in lengths.tolist()]
    assert conv_output_length(lengths, pool, pool, padding=0, ceil_mode=True).tolist() == expected
    assert [conv_output_length(n, pool, pool, padding=0, ceil_mode=True) for n in (1, 7)] == [
        1,
        -(-7 // pool),
    ]
    with pytest.raises(ValueError, match="ceil_mode"):
        conv_output_length(lengths, 3, 3, padding=2, ceil_mode=True)


def test_masked_moments_by_hand():
    # Two rows of one channel: valid values 1, 2, 3 and 5; the 9s are padding.
    x = torch.tensor([[[1.0, 2.0, 3.0]], [[5.0, 9.0, 9.0]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0]]])
    mean, var, count = masked_moments(x, mask, (0, 2))
    assert count.item() == 4 and mean.shape == (1, 1, 1)
    assert mean.item() == pytest.approx(11 / 4)
    assert var.item() == pytest.approx(sum((v - 11 / 4) ** 2 for v in (1, 2, 3, 5)) / 4)


def _padded(shape, lengths, seed=0):
    """A (B, C, ..., T) map with garbage after each row's length, and its (B, 1, ..., T) bool mask."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    steps = torch.arange(shape[-1])
    mask = (steps[None, :] < torch.tensor(lengths)[:, None]).view(shape[0], *[1] * (len(shape) - 2), -1)
    return torch.where(mask, x, 50.0 + x), mask


def _valid_steps(x, lengths):
    """The valid steps of every row laid end to end as one batch-1 map (B, C, ..., T) -> (1, C, ..., ΣT)."""
    return torch.cat([x[b, ..., :n] for b, n in enumerate(lengths)], dim=-1)[None]


@pytest.mark.parametrize("shape", [(3, 4, 7), (3, 4, 5, 7)], ids=["1d", "2d"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_masked_batch_norm_equals_batch_norm_on_the_valid_steps(shape, momentum):
    lengths = [7, 4, 1]
    ours = MaskedBatchNorm(4, momentum=momentum).double()
    reference = (nn.BatchNorm1d if len(shape) == 3 else nn.BatchNorm2d)(4, momentum=momentum).double()
    with torch.no_grad():
        for module in (ours, reference):
            module.weight.copy_(torch.tensor([1.0, 2.0, -0.5, 0.3]))
            module.bias.copy_(torch.tensor([0.0, 1.0, 0.2, -3.0]))
    for seed in range(3):  # three updates: the cumulative average differs from one lerp after the first
        x, mask = _padded(shape, lengths, seed)
        x.requires_grad_(True)
        out = ours(x, mask)
        valid = _valid_steps(x.detach(), lengths).requires_grad_(True)
        expected = reference(valid)
        torch.testing.assert_close(_valid_steps(out, lengths), expected)
        assert torch.all(out.masked_select(~mask.expand_as(out)) == 0)
        weights = torch.randn_like(expected)
        (_valid_steps(out, lengths) * weights).sum().backward()
        (expected * weights).sum().backward()
        torch.testing.assert_close(_valid_steps(x.grad, lengths), valid.grad)
        assert torch.all(x.grad.masked_select(~mask.expand_as(x)) == 0)
    torch.testing.assert_close(ours.running_mean, reference.running_mean)
    torch.testing.assert_close(ours.running_var, reference.running_var)
    assert ours.num_batches_tracked.item() == reference.num_batches_tracked.item() == 3
    ours.eval(), reference.eval()
    x, mask = _padded(shape, lengths, 7)
    torch.testing.assert_close(_valid_steps(ours(x, mask), lengths), reference(_valid_steps(x, lengths)))


def test_masked_batch_norm_without_mask_is_batch_norm_and_channels_last_works():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6)
    ours, reference = MaskedBatchNorm(4), nn.BatchNorm1d(4)
    torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours.running_var, reference.running_var)
    last = MaskedBatchNorm(4, channel_dim=-1)
    mask = torch.tensor([6, 2, 4])[:, None] > torch.arange(6)[None, :]
    out = last(x.transpose(1, 2), mask[..., None])
    first = MaskedBatchNorm(4)(x, mask[:, None, :])
    torch.testing.assert_close(out, first.transpose(1, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_batch_norm_statistics_do_not_overflow_in_half_precision(dtype):
    # 400 frequency rows near 200: their float16 sum (80,000) would overflow float16's 65,504.
    x = torch.full((2, 1, 400, 3), 200.0, dtype=dtype) + torch.randn(2, 1, 400, 3).to(dtype)
    out = MaskedBatchNorm(1).to(dtype)(x, torch.ones(2, 1, 1, 3, dtype=torch.bool))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert out.float().std().item() == pytest.approx(1.0, abs=0.05)


def test_layer_batch_norm_uses_one_mean_and_variance_over_valid_steps():
    norm = LayerBatchNorm(3).train()
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[7.0, 8.0, 9.0], [100.0, 100.0, 100.0]]])
    mask = torch.tensor([[True, True], [True, False]])[..., None]
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 1.0]))
        norm.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    out = norm(x, mask)
    valid = torch.arange(1.0, 10.0)  # the 9 valid values: mean 5, population variance 60 / 9 (Eq. 14)
    expected = ((valid - 5.0) / torch.sqrt(torch.tensor(60.0 / 9 + 1e-5))).view(3, 3)
    expected = expected * torch.tensor([1.0, 2.0, 1.0]) + torch.tensor([0.0, 0.0, 0.5])
    torch.testing.assert_close(out[0], expected[:2])
    torch.testing.assert_close(out[1, 0], expected[2])
    assert torch.all(out[1, 1] == 0)
    # PyTorch's rule: 0.9 * 0 + 0.1 * 5, and 0.9 * 1 + 0.1 * (unbiased 60 / 8).
    assert norm.running_mean.shape == () and norm.running_mean.item() == pytest.approx(0.5)
    assert norm.running_var.item() == pytest.approx(0.9 + 0.1 * 60 / 8)
    norm.eval()
    scale = torch.rsqrt(norm.running_var + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x, mask)[0], (x[0] - norm.running_mean) * scale + norm.bias)


def test_layer_batch_norm_loads_a_state_without_num_batches_tracked():
    # Checkpoints written before LayerBatchNorm shared MaskedBatchNorm have no num_batches_tracked.
    norm = LayerBatchNorm(3)
    old = {"weight": torch.ones(3), "bias": torch.zeros(3), "running_mean": torch.tensor(2.0)}
    norm.load_state_dict({**old, "running_var": torch.tensor(4.0)})
    assert norm.running_mean.item() == 2.0 and norm.num_batches_tracked.item() == 0
