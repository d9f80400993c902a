"""Masks for padded batches: the one home of "which frames are real" for features, inputs and models.

Every padded batch in sertk is a (B, T, ...) tensor plus ``lengths`` (B,): row b's frames t < lengths[b] are
real, the rest is padding. Everything that must ignore padding builds its mask here.
"""

from __future__ import annotations

import torch


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean (B, max_len) mask, True on the real frames t < lengths[b]."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def zero_padding(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) frames with every padded frame set to zero."""
    mask = frame_mask(lengths.to(frames.device), frames.shape[1])
    return frames * mask.view(*mask.shape, *([1] * (frames.dim() - 2))).to(frames.dtype)


def masked_mean(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean over each row's real frames (a row of length 0 gives 0)."""
    mask = frame_mask(lengths.to(frames.device), frames.shape[1]).to(frames.dtype)
    total = torch.einsum("bt,btd->bd", mask, frames)
    return total / lengths.to(frames.device).clamp(min=1).to(frames.dtype)[:, None]


def masked_softmax(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Softmax of (B, T) scores over each row's real frames; padded frames get exactly 0."""
    mask = frame_mask(lengths.to(scores.device), scores.shape[1])
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
