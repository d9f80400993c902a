"""mixup (Zhang et al. 2018): the hand-computed convex combination, lengths, λ ~ Beta(α, α), seeding, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sertk.augment.mixup import Mixup, MixupConfig, draw_lambda, mix, mixup
from sertk.config import from_dict
from sertk.errors import SertkError

pytestmark = pytest.mark.usefixtures("one_thread")


def small_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three rows of one feature: [1, 2, pad], [10, 20, 30], [5, pad, pad]; classes 0, 1, 0 one-hot."""
    feats = torch.tensor([[1.0, 2.0, 0.0], [10.0, 20.0, 30.0], [5.0, 0.0, 0.0]])[:, :, None]
    return feats, torch.tensor([2, 3, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])


def test_mix_with_fixed_lambda_is_the_hand_computed_convex_combination():
    feats, lengths, targets = small_batch()
    out, out_lengths, out_targets = mix(feats, lengths, targets, 0.25, torch.tensor([1, 0, 2]))
    # Row 0: 0.25·[1, 2, 0] + 0.75·[10, 20, 30]; row 1 the other way round; row 2 is its own partner.
    expected = torch.tensor([[7.75, 15.5, 22.5], [3.25, 6.5, 7.5], [5.0, 0.0, 0.0]])[:, :, None]
    torch.testing.assert_close(out, expected)
    assert out_lengths.tolist() == [3, 3, 1]  # the longer of the two rows
    torch.testing.assert_close(out_targets, torch.tensor([[0.25, 0.75], [0.75, 0.25], [1.0, 0.0]]))


def test_padding_beyond_both_rows_stays_zero_and_targets_stay_distributions():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 3, 5, 2])
    feats = torch.randn(4, 7, 6, generator=gen) * (torch.arange(7)[None, :] < lengths[:, None])[:, :, None]
    targets = torch.softmax(torch.randn(4, 4, generator=gen), dim=1)
    out, out_lengths, out_targets = mix(feats, lengths, targets, 0.6, torch.tensor([2, 3, 0, 1]))
    assert out_lengths.tolist() == [7, 3, 7, 3]
    for row, n in enumerate(out_lengths.tolist()):
        assert torch.all(out[row, n:] == 0)
    torch.testing.assert_close(out_targets.sum(dim=1), torch.ones(4))


def test_lambda_follows_beta_alpha_alpha():
    gen = torch.Generator().manual_seed(1)
    draws = np.array([draw_lambda(0.2, gen) for _ in range(4000)])
    assert draws.min() >= 0 and draws.max() <= 1
    # Beta(α, α): mean 1/2, variance 1 / (4 (2α + 1)) = 0.1786 for α = 0.2; U-shaped, most mass near 0 and 1.
    assert draws.mean() == pytest.approx(0.5, abs=0.02)
    assert draws.var() == pytest.approx(1 / (4 * 1.4), abs=0.01)
    assert np.mean((draws < 0.1) | (draws > 0.9)) > 0.5
    wide = np.array([draw_lambda(50.0, gen) for _ in range(2000)])
    assert wide.var() == pytest.approx(1 / (4 * 101), rel=0.15)


def test_mixup_is_seeded_and_mixes_features_as_it_mixes_targets():
    gen = torch.Generator().manual_seed(4)
    feats, lengths, targets = torch.randn(5, 4, 3, generator=gen), torch.full((5,), 4), torch.eye(5)
    a = mixup(feats, lengths, targets, 0.4, torch.Generator().manual_seed(3))
    b = mixup(feats, lengths, targets, 0.4, torch.Generator().manual_seed(3))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    # With one class per row, row i's target λ·e_i + (1 - λ)·e_j names λ and the partner j: the features
    # must be the same mix, with one λ for the whole batch.
    lams = set()
    for i in range(5):
        lam = float(a[2][i, i])
        others = a[2][i].clone()
        others[i] = 0
        j = int(others.argmax()) if lam < 1 else i
        torch.testing.assert_close(a[0][i], lam * feats[i] + (1 - lam) * feats[j])
        if j != i:
            lams.add(round(lam, 5))
    assert len(lams) == 1
    assert mixup(feats, lengths, targets, 0.0, torch.Generator()) == (feats, lengths, targets)


def test_mixup_transform_probability_and_config():
    feats, lengths, targets = small_batch()
    never = Mixup(MixupConfig(alpha=0.4, prob=0.0), torch.Generator().manual_seed(0))
    assert never(feats, lengths, targets)[0] is feats
    always = Mixup(MixupConfig(alpha=0.4, prob=1.0), torch.Generator().manual_seed(0))
    mixed = [not torch.equal(always(feats, lengths, targets)[2], targets) for _ in range(20)]
    assert sum(mixed) >= 10  # a permutation may map every row to itself, rarely
    assert not MixupConfig().enabled and MixupConfig(alpha=0.2).enabled
    assert from_dict(MixupConfig, {"alpha": 0.2, "prob": 0.5}) == MixupConfig(0.2, 0.5)
    with pytest.raises(SertkError, match="mixup.alpha must be >= 0"):
        from_dict(MixupConfig, {"alpha": -1})
    with pytest.raises(SertkError, match="expected feats"):
        mix(feats[:, :, 0], lengths, targets, 0.5, torch.tensor([0, 1, 2]))


def batch_lambda(targets: torch.Tensor) -> float | None:
    """λ of a batch mixed from one-hot targets eye(B): a row with a partner other than itself holds λ on its
    own class; None when the permutation left every row alone."""
    moved = [i for i in range(len(targets)) if float(targets[i, i]) < 1.0]
    return float(targets[moved[0], moved[0]]) if moved else None


def test_mixup_transform_mixes_the_share_prob_of_batches():
    """prob 0.25: about a quarter of the batches are mixed (Binomial(400, 0.25): 100 ± 9), the rest unchanged."""
    feats, lengths, targets = torch.randn(8, 3, 2), torch.full((8,), 3), torch.eye(8)
    transform = Mixup(MixupConfig(alpha=0.4, prob=0.25), torch.Generator().manual_seed(7))
    results = [transform(feats, lengths, targets) for _ in range(400)]
    mixed = [not torch.equal(out_targets, targets) for _, _, out_targets in results]
    assert 70 < sum(mixed) < 130
    assert all(out[0] is feats for out, was_mixed in zip(results, mixed, strict=True) if not was_mixed)


def test_each_batch_draws_its_own_lambda_from_the_generator():
    """One λ per batch, a fresh one at every batch: over 300 batches of one generator the λs spread as
    Beta(0.4, 0.4) (mean 1/2, variance 1 / (4 · 1.8) = 0.139)."""
    gen = torch.Generator().manual_seed(8)
    feats, lengths, targets = torch.zeros(6, 2, 1), torch.full((6,), 2), torch.eye(6)
    lams = [batch_lambda(mixup(feats, lengths, targets, 0.4, gen)[2]) for _ in range(300)]
    lams = np.array([lam for lam in lams if lam is not None])
    assert len(lams) > 290 and len(np.unique(lams.round(6))) > 280
    assert lams.mean() == pytest.approx(0.5, abs=0.05)
    assert lams.var() == pytest.approx(1 / (4 * 1.8), abs=0.02)
