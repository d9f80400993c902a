"""Classification losses selectable by config for any arch: ce, soft-label ce, additive margin softmax, focal.

Every loss is called as ``loss(logits (B, C), targets, sample_weight (B,) | None)`` and returns the plain mean
over the batch of ``sample_weight[i] * class_weight[y_i] * loss_i`` (not divided by the sum of the weights,
so a weight of 2 counts an utterance twice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sertk.config import from_dict
from sertk.errors import SertkError


@dataclass
class LossConfig:
    """The ``loss`` section of an experiment config."""

    name: str = "ce"  # one of LOSSES: "ce" (= "soft-ce": indices or distributions), "ams", "focal"
    margin: float = 0.2  # ams: additive cosine margin m (Eq. 2)
    gamma: float = 2.0  # focal: focusing exponent gamma (Eq. 3)
    alpha: float = 1.0  # focal: balancing factor alpha (Eq. 3), one scalar for all classes as in Table 2
    label_smoothing: float = 0.0  # ce, soft-ce, ams: mix eps/C of the uniform distribution into the target

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"name: unknown loss {self.name!r} (known: {', '.join(LOSSES)})")
        if self.margin < 0:
            raise ValueError(f"margin: must be >= 0, got {self.margin}")
        if self.gamma < 0:
            raise ValueError(f"gamma: must be >= 0, got {self.gamma}")
        if self.alpha <= 0:
            raise ValueError(f"alpha: must be > 0, got {self.alpha}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.name == "focal" and self.label_smoothing > 0:
            raise ValueError("label_smoothing: not defined for the focal loss")


class _ClassificationLoss(nn.Module):
    """Shared reduction: each subclass's ``per_sample`` losses times sample weights, averaged over the batch."""

    soft_targets = False

    def __init__(self, cfg: LossConfig, num_classes: int, class_weights: torch.Tensor | None):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        if class_weights is None:
            class_weights = torch.ones(num_classes)
        if class_weights.shape != (num_classes,):
            raise SertkError(
                f"loss: class_weights has shape {tuple(class_weights.shape)}, expected ({num_classes},)"
            )
        self.register_buffer("class_weights", class_weights.detach().float().clone(), persistent=False)

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample -sum_c w_c p_c log softmax(z)_c, p the (smoothed) one-hot or soft target distribution.

        ``F.cross_entropy`` with class weights, label smoothing and class-index or probability targets
        computes exactly this (tested against the formula).
        """
        if targets.dim() == 1 and targets.dtype.is_floating_point:
            raise SertkError(f"loss {self.cfg.name}: class-index targets must be integers")
        return F.cross_entropy(
            logits.float(),
            targets if targets.dim() == 1 else targets.float(),
            weight=self.class_weights,
            label_smoothing=self.cfg.label_smoothing,
            reduction="none",
        )

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        losses = self.per_sample(logits, targets)
        if sample_weight is not None:
            losses = losses * sample_weight.to(losses.dtype)
        return losses.mean()


class CrossEntropy(_ClassificationLoss):
    """Softmax cross-entropy (crnn_discriminative.txt Eq. 1) against class indices (B,) or distributions (B, C).

    Distributions are soft labels from raters' votes (cnn_blstm_vtlp.txt §3.3) or mixup's mixed targets.
    """

    soft_targets = True

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(logits, targets)


class AdditiveMarginSoftmax(_ClassificationLoss):
    """Additive margin softmax (crnn_discriminative.txt Eq. 2; Wang et al. 2018).

    The cosine head already returns s*cos(theta_j), so the margin is s*m subtracted from the target logit
    before softmax cross-entropy; with m = 0 this is CE on s*cos(theta).
    """

    def __init__(self, cfg: LossConfig, num_classes: int, class_weights: torch.Tensor | None, scale: float):
        super().__init__(cfg, num_classes, class_weights)
        self.scale = float(scale)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(self._indices(targets), self.num_classes).to(logits.dtype)
        margin_logits = logits - (self.scale * self.cfg.margin) * one_hot
        return self.cross_entropy(margin_logits, targets)

    def _indices(self, targets: torch.Tensor) -> torch.Tensor:
        if targets.dim() != 1 or targets.dtype.is_floating_point:
            raise SertkError(
                "loss ams: needs class-index targets (B,); use loss.name ce for soft labels or mixup"
            )
        return targets


class FocalLoss(_ClassificationLoss):
    """Focal loss -alpha (1 - p_t)^gamma log p_t (crnn_discriminative.txt Eq. 3; Lin et al. 2017).

    log p_t comes from log_softmax and 1 - p_t from -expm1(log p_t), so the loss and its gradient stay finite
    and accurate as p_t -> 1; gamma = 0, alpha = 1 is exactly CE.
    """

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.dim() != 1 or targets.dtype.is_floating_point:
            raise SertkError(
                "loss focal: needs class-index targets (B,); use loss.name ce for soft labels or mixup"
            )
        log_pt = F.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
        # The floor keeps d(1 - p_t)^gamma finite for gamma < 1 when p_t rounds to exactly 1.
        one_minus_pt = (-torch.expm1(log_pt)).clamp(min=torch.finfo(log_pt.dtype).tiny)
        return -self.cfg.alpha * self.class_weights[targets] * one_minus_pt**self.cfg.gamma * log_pt


def balanced_class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """N_total / (N_classes * N_c) per class over the loss's samples (lstm_attention.txt §4.1: "we weight each
    sample of the class c in the loss function"); an absent class gets weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


LOSSES: dict[str, type[_ClassificationLoss]] = {
    "ce": CrossEntropy,
    "ams": AdditiveMarginSoftmax,
    "focal": FocalLoss,
    "soft-ce": CrossEntropy,  # the name older configs use for ce on soft labels
}


def build_loss(
    cfg: LossConfig | dict | None,
    num_classes: int,
    head: str = "linear",
    class_weights: torch.Tensor | None = None,
    head_scale: float | None = None,
) -> nn.Module:
    """Build the configured loss; "ams" needs the cosine head and its scale s (the model's ``head_scale``)."""
    if not isinstance(cfg, LossConfig):
        cfg = from_dict(LossConfig, cfg or {}, where="loss")
    if cfg.name == "ams":
        if head != "cosine":
            raise SertkError("loss ams needs model.head: cosine")
        if head_scale is None:
            raise SertkError(
                "loss ams needs the cosine head's scale: pass head_scale=model config head_scale"
            )
        return AdditiveMarginSoftmax(cfg, num_classes, class_weights, head_scale)
    return LOSSES[cfg.name](cfg, num_classes, class_weights)
