"""Temporal poolings shared by archs: (B, T, D) frames + lengths (B,) -> one (B, out_dim) vector per utterance.

Every pooling ignores padded frames (t >= lengths[b]): they get zero weight, so padding an utterance in a
batch never changes its pooled vector.
"""

from __future__ import annotations

import torch
from torch import nn

from sertk.errors import SertkError
from sertk.masking import masked_mean, masked_softmax


class MeanPooling(nn.Module):
    """Masked average over time (the non-attentive baseline)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(
        self, frames: torch.Tensor, lengths: torch.Tensor, query: torch.Tensor | None = None
    ) -> torch.Tensor:
        return masked_mean(frames, lengths)


class AttentivePooling(nn.Module):
    """Attentive sum pooling mu = sum_t alpha_t h_t (crnn_discriminative.txt Eq. 4).

    The score is Luong et al. 2015's multiplicative "general" score e_t = h_t^T W q (their Eq. 8, with
    h_t the source states and q the query). The query q is the caller's summary of the utterance: crnn-att
    passes the BLSTM's final states [forward h_T, backward h_1]; without one, the masked mean of the frames
    is used. alpha = softmax over the valid frames only.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim
        self.score = nn.Linear(dim, dim, bias=False)

    def weights(
        self, frames: torch.Tensor, lengths: torch.Tensor, query: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention weights alpha (B, T), zero on padded frames and summing to 1 over valid ones."""
        if query is None:
            query = masked_mean(frames, lengths)
        return masked_softmax(torch.einsum("btd,bd->bt", frames, self.score(query)), lengths)

    def forward(
        self, frames: torch.Tensor, lengths: torch.Tensor, query: torch.Tensor | None = None
    ) -> torch.Tensor:
        alpha = self.weights(frames, lengths, query)
        return torch.einsum("bt,btd->bd", alpha, frames)


class AttentiveMeanStdPooling(AttentivePooling):
    """Combined attentive pooling [mu, sigma] (crnn_discriminative.txt Eq. 4-5; Okabe et al. 2018).

    sigma = sqrt(max(sum_t alpha_t h_t*h_t - mu*mu, 0) + eps). The tiny eps = 1e-8 only keeps the gradient
    of sqrt finite where the variance is zero (it shifts sigma by at most 1e-4 there and is lost in float32
    rounding for variances above ~1e-1). Same parameters as AttentivePooling; the output is twice as wide.
    """

    eps = 1e-8

    def __init__(self, dim: int):
        super().__init__(dim)
        self.out_dim = 2 * dim

    def forward(
        self, frames: torch.Tensor, lengths: torch.Tensor, query: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Moments in float32 even under autocast: in float16, sum alpha h^2 - mu^2 cancels badly and eps
        # underflows to 0 (elementwise ops and sums are not cast down by autocast, einsum would be).
        dtype = torch.promote_types(frames.dtype, torch.float32)
        alpha = self.weights(frames, lengths, query).to(dtype)[..., None]
        weighted = alpha * frames.to(dtype)
        mean = weighted.sum(dim=1)
        second_moment = (weighted * frames.to(dtype)).sum(dim=1)
        std = torch.sqrt((second_moment - mean * mean).clamp(min=0.0) + self.eps)
        return torch.cat([mean, std], dim=-1).to(frames.dtype)


POOLINGS: dict[str, type[nn.Module]] = {
    "mean": MeanPooling,
    "attention": AttentivePooling,
    "attention-mean-std": AttentiveMeanStdPooling,
}


def make_pooling(kind: str, dim: int) -> nn.Module:
    """Build a pooling by name; its ``out_dim`` gives the width of the pooled vector."""
    if kind not in POOLINGS:
        raise SertkError(f"model.pooling: unknown pooling {kind!r} (known: {', '.join(POOLINGS)})")
    return POOLINGS[kind](dim)
