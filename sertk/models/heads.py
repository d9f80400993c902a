"""Classification heads shared by every arch: the pooled feature -> logits (B, C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sertk.errors import SertkError

HEADS = ("linear", "cosine")


class CosineHead(nn.Module):
    """Scaled cosine logits s * cos(theta_j), without bias: the AMS classifier (crnn_discriminative.txt Eq. 2).

    Features and class weights are both l2-normalised, so every logit lies in [-s, s]. With a margin
    subtracted from the target logit by the loss (`sertk.losses`, "ams") this is additive margin softmax.
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(features, dim=-1) @ F.normalize(self.weight, dim=-1).t()
        return self.scale * cosine

    def extra_repr(self) -> str:
        return f"in_dim={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, scale={self.scale}"


def make_head(kind: str, in_dim: int, num_classes: int, scale: float) -> nn.Module:
    """Build the logits layer: "linear" (affine, Eq. 1) or "cosine" (s * cos theta, no bias, Eq. 2)."""
    if kind == "linear":
        return nn.Linear(in_dim, num_classes)
    if kind == "cosine":
        if scale <= 0:
            raise SertkError(f"model.head_scale: must be positive for the cosine head, got {scale}")
        return CosineHead(in_dim, num_classes, scale)
    raise SertkError(f"model.head: unknown head {kind!r} (known: {', '.join(HEADS)})")
