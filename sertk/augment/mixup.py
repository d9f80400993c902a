"""mixup (Zhang et al. 2018, Eq. 1) of padded feature batches and their target distributions.

x̃ = λ·x_i + (1 − λ)·x_j and ỹ = λ·y_i + (1 − λ)·y_j, with λ ~ Beta(α, α) drawn once per batch and j = π(i)
for a random permutation π of the batch (the paper's single-minibatch implementation). Lengths: the mixed
row is max(len_i, len_j) long. Both rows are zero beyond their own length, so the mix is exactly the convex
combination of the two padded rows: over the frames only the longer row has, the shorter one contributes
zeros (silence after mean normalisation), nothing of either row is cut off, and frames beyond both lengths
stay zero. Length-sorted batches keep the two lengths close.

λ is drawn by numpy from a seed taken from the caller's torch generator (torch has no seeded Beta
sampler), so one generator seed gives the same λ and π on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sertk.errors import SertkError


@dataclass
class MixupConfig:
    """The YAML keys of mixup (Zhang et al. 2018): λ ~ Beta(alpha, alpha); alpha 0 turns it off."""

    alpha: float = 0.0  # Zhang et al. find 0.1-0.4 best on ImageNet
    prob: float = 1.0  # the share of training batches that are mixed

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"mixup.alpha must be >= 0, got {self.alpha}")
        if not 0 <= self.prob <= 1:
            raise ValueError(f"mixup.prob must be in [0, 1], got {self.prob}")

    @property
    def enabled(self) -> bool:
        return self.alpha > 0 and self.prob > 0


def mix(
    feats: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, lam: float, partner: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row i becomes λ·row i + (1 − λ)·row ``partner[i]`` in features and targets; lengths are the max."""
    if feats.dim() != 3 or targets.dim() != 2 or not feats.shape[0] == targets.shape[0] == lengths.shape[0]:
        raise SertkError(
            f"mixup: expected feats (B, T, D), lengths (B,) and targets (B, C), got shapes "
            f"{tuple(feats.shape)}, {tuple(lengths.shape)} and {tuple(targets.shape)}"
        )
    partner = partner.to(feats.device)
    mixed = lam * feats + (1 - lam) * feats[partner]
    mixed_targets = lam * targets + (1 - lam) * targets[partner.to(targets.device)]
    return mixed, torch.maximum(lengths, lengths[partner.to(lengths.device)]), mixed_targets


def draw_lambda(alpha: float, generator: torch.Generator) -> float:
    """λ ~ Beta(alpha, alpha), seeded from ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(
    feats: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixup of a batch (Zhang et al. 2018): one λ ~ Beta(α, α), partners from a random permutation.

    ``targets`` (B, C) float: one-hot labels or soft label distributions. Returns (feats, lengths, targets).
    """
    if alpha <= 0:
        return feats, lengths, targets
    lam = draw_lambda(alpha, generator)
    partner = torch.randperm(feats.shape[0], generator=generator)
    return mix(feats, lengths, targets, lam, partner)


class Mixup:
    """A batch transform ``(feats, lengths, targets) -> (feats, lengths, targets)`` with its own generator;
    a batch is mixed with probability ``cfg.prob``."""

    def __init__(self, cfg: MixupConfig, generator: torch.Generator):
        self.cfg, self.generator = cfg, generator

    def __call__(
        self, feats: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.cfg.enabled or float(torch.rand(1, generator=self.generator)) >= self.cfg.prob:
            return feats, lengths, targets
        return mixup(feats, lengths, targets, self.cfg.alpha, self.generator)
