"""Losses against hand computations and torch's cross_entropy: ce, soft-ce, ams, focal."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sertk.errors import SertkError
from sertk.losses import LOSSES, LossConfig, build_loss
from sertk.models.heads import make_head


def _batch(num_classes: int = 3, batch: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_classes, generator=gen) * 3
    targets = torch.randint(0, num_classes, (batch,), generator=gen)
    return logits, targets


def test_ce_matches_torch_with_label_smoothing():
    logits, targets = _batch()
    assert torch.allclose(build_loss({"name": "ce"}, 3)(logits, targets), F.cross_entropy(logits, targets))
    smoothed = build_loss({"name": "ce", "label_smoothing": 0.1}, 3)(logits, targets)
    assert torch.allclose(smoothed, F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_sample_and_class_weights_scale_each_term_then_plain_mean():
    logits, targets = _batch()
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    sample_weight = torch.tensor([1.0, 0.0, 2.0, 0.5, 1.0])
    class_weights = torch.tensor([1.0, 3.0, 0.5])
    loss = build_loss({"name": "ce"}, 3, class_weights=class_weights)(logits, targets, sample_weight)
    expected = (per_sample * sample_weight * class_weights[targets]).sum() / 5
    assert torch.allclose(loss, expected)


def test_soft_ce_with_one_hot_equals_ce_and_soft_targets_by_hand():
    logits, targets = _batch()
    soft_ce = build_loss({"name": "soft-ce"}, 3)
    one_hot = F.one_hot(targets, 3).float()
    assert torch.allclose(soft_ce(logits, one_hot), F.cross_entropy(logits, targets))
    assert torch.allclose(soft_ce(logits, targets), F.cross_entropy(logits, targets))
    # logits (0, ln 3) -> p = (1/4, 3/4); target (1/2, 1/2): loss = -(ln 1/4 + ln 3/4) / 2.
    two = torch.tensor([[0.0, math.log(3.0)]])
    loss = build_loss({"name": "soft-ce"}, 2)(two, torch.tensor([[0.5, 0.5]]))
    assert loss.item() == pytest.approx(-(math.log(0.25) + math.log(0.75)) / 2, rel=1e-6)


def test_ce_takes_distributions_and_margin_losses_refuse_them():
    logits, _ = _batch()
    uniform = torch.full((5, 3), 1 / 3)
    expected = -(F.log_softmax(logits, -1) / 3).sum(-1).mean()
    assert torch.allclose(build_loss({"name": "ce"}, 3)(logits, uniform), expected)
    with pytest.raises(SertkError, match="loss focal: needs class-index targets"):
        build_loss({"name": "focal"}, 3)(logits, uniform)


def test_weighted_smoothed_ce_equals_the_formula():
    """-sum_c w_c p_c log q_c with p = (1 - eps) onehot + eps / C, then sample weights, plain mean."""
    torch.manual_seed(1)
    logits, targets = torch.randn(6, 4), torch.tensor([0, 3, 1, 2, 1, 0])
    w, eps = torch.tensor([0.5, 1.0, 2.0, 1.5]), 0.2
    sample = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.0, 1.0])
    p = (1 - eps) * F.one_hot(targets, 4).float() + eps / 4
    by_hand = (-(p * w * F.log_softmax(logits, -1)).sum(-1) * sample).mean()
    loss = build_loss({"name": "ce", "label_smoothing": eps}, 4, class_weights=w)
    assert torch.allclose(loss(logits, targets, sample_weight=sample), by_hand, atol=1e-6)


def test_ams_with_zero_margin_is_ce_on_scaled_cosine():
    torch.manual_seed(0)
    head = make_head("cosine", 8, 4, scale=10.0)
    logits = head(torch.randn(6, 8))
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    ams = build_loss({"name": "ams", "margin": 0.0}, 4, head="cosine", head_scale=10.0)
    assert torch.allclose(ams(logits, targets), F.cross_entropy(logits, targets))


def test_ams_margin_by_hand():
    # cos = (0.3, 0.1), s = 10, m = 0.2; target 0: margin logits (1, 1) -> -log(e^1 / (e^1 + e^1)) = ln 2.
    logits = torch.tensor([[3.0, 1.0]])
    ams = build_loss({"name": "ams", "margin": 0.2}, 2, head="cosine", head_scale=10.0)
    assert ams(logits, torch.tensor([0])).item() == pytest.approx(math.log(2.0), rel=1e-6)
    # Target 1: margin logits (3, -1) -> -log(e^-1 / (e^3 + e^-1)) = ln(1 + e^4).
    assert ams(logits, torch.tensor([1])).item() == pytest.approx(math.log1p(math.exp(4.0)), rel=1e-6)


def test_ams_needs_cosine_head_and_its_scale():
    with pytest.raises(SertkError, match="loss ams needs model.head: cosine"):
        build_loss({"name": "ams"}, 4, head="linear")
    with pytest.raises(SertkError, match="head_scale"):
        build_loss({"name": "ams"}, 4, head="cosine")


def test_focal_gamma0_alpha1_is_ce_and_by_hand():
    logits, targets = _batch()
    focal = build_loss({"name": "focal", "gamma": 0.0, "alpha": 1.0}, 3)
    assert torch.allclose(focal(logits, targets), F.cross_entropy(logits, targets))
    # logits (0, ln 3) -> p_t = 3/4 for target 1: -2 (1/4)^2 ln(3/4).
    two = torch.tensor([[0.0, math.log(3.0)]])
    focal = build_loss({"name": "focal", "gamma": 2.0, "alpha": 2.0}, 2)
    assert focal(two, torch.tensor([1])).item() == pytest.approx(-2 * 0.25**2 * math.log(0.75), rel=1e-5)


def test_focal_scales_each_term_by_its_class_weight():
    # logits (0, ln 3): p = (1/4, 3/4). Target 0 with weight 4: -4 (3/4)^2 ln(1/4); target 1 with weight
    # 0.5: -0.5 (1/4)^2 ln(3/4); plain mean over the two.
    two = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    focal = build_loss({"name": "focal", "gamma": 2.0}, 2, class_weights=torch.tensor([4.0, 0.5]))
    expected = (-4 * 0.75**2 * math.log(0.25) - 0.5 * 0.25**2 * math.log(0.75)) / 2
    assert focal(two, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_gradients_finite_as_p_goes_to_one(gamma):
    logits = torch.tensor([[60.0, -60.0, 0.0], [5.0, 0.0, 0.0]], requires_grad=True)
    loss = build_loss({"name": "focal", "gamma": gamma, "alpha": 1.0}, 3)(logits, torch.tensor([0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # The confident row contributes (almost) nothing; the other still pushes its target logit up.
    assert logits.grad[0].abs().max() < 1e-6 and logits.grad[1, 0] < 0


def test_config_errors_are_one_line_sertk_errors():
    with pytest.raises(SertkError, match="unknown loss 'hinge'.*ce, ams, focal, soft-ce"):
        build_loss({"name": "hinge"}, 4)
    with pytest.raises(SertkError, match="unknown key"):
        build_loss({"name": "ce", "temperature": 2.0}, 4)
    with pytest.raises(SertkError, match="label_smoothing"):
        build_loss({"name": "focal", "label_smoothing": 0.1}, 4)
    with pytest.raises(SertkError, match="class_weights"):
        build_loss({"name": "ce"}, 4, class_weights=torch.ones(3))
    assert set(LOSSES) == {"ce", "ams", "focal", "soft-ce"}
    assert isinstance(build_loss(LossConfig(name="focal"), 4), LOSSES["focal"])
