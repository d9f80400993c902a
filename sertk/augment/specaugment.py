"""SpecAugment's frequency and time masking (Park et al. 2019, §2) of padded feature batches.

Per row b of length τ_b frames and ν feature columns, independently:

- ``freq_masks`` times: f ~ U{0, ..., F} with F = min(``freq_width``, ν), f₀ ~ U{0, ..., ν − f}, and
  columns [f₀, f₀ + f) are masked on the row's real frames;
- ``time_masks`` times: t ~ U{0, ..., T_b} with T_b = min(``time_width``, ⌊``time_ratio`` · τ_b⌋) (the
  paper's upper bound p: a mask never covers more than p of the utterance), t₀ ~ U{0, ..., τ_b − t}, and
  frames [t₀, t₀ + t) are masked.

Masks of one row may overlap, as in the paper. Masked values become 0 (``fill: zero``, the paper's choice,
which is the mean once features are mean-normalised) or the row's per-column mean over its real frames
(``fill: mean``, the same thing for features that are not normalised per utterance). Padded frames stay
zero. Time warping (the paper's W) is left out: the paper reports it as the least helpful of the three and
the most expensive. Widths and positions are drawn on the CPU from the caller's generator, so a seed gives
the same masks on every device.

Park et al.'s policies, for reference (80 log-Mel bins, 10 ms frames): LB ``freq_masks 1, freq_width 27,
time_masks 1, time_width 100, time_ratio 1.0``; LD the same with 2 and 2 masks; SM ``2, 15, 2, 70, 0.2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from sertk.errors import SertkError
from sertk.masking import frame_mask, masked_mean


@dataclass
class SpecAugmentConfig:
    """The YAML keys of SpecAugment (Park et al. 2019); the defaults mask nothing (masks = 0)."""

    freq_masks: int = 0  # m_F
    freq_width: int = 27  # F: the widest frequency mask, in feature columns
    time_masks: int = 0  # m_T
    time_width: int = 100  # T: the widest time mask, in frames
    time_ratio: float = 1.0  # p: a time mask covers at most p · (the row's length)
    fill: Literal["zero", "mean"] = "zero"

    def __post_init__(self) -> None:
        if min(self.freq_masks, self.freq_width, self.time_masks, self.time_width) < 0:
            raise ValueError("specaugment: freq_masks, freq_width, time_masks and time_width must be >= 0")
        if not 0 < self.time_ratio <= 1:
            raise ValueError(f"specaugment.time_ratio must be in (0, 1], got {self.time_ratio}")

    @property
    def enabled(self) -> bool:
        return (self.freq_masks > 0 and self.freq_width > 0) or (self.time_masks > 0 and self.time_width > 0)


def _draw_spans(
    num: int, widest: torch.Tensor, extent: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` spans per row: width ~ U{0..widest[b]}, start ~ U{0..extent[b] - width}; (starts, widths) (B, num)."""
    rows = widest.shape[0]
    width = (torch.rand(rows, num, generator=generator) * (widest[:, None] + 1)).floor().long()
    width = torch.minimum(width, widest[:, None])  # rand < 1, but guard the float product's rounding
    start = (torch.rand(rows, num, generator=generator) * (extent[:, None] - width + 1)).floor().long()
    return torch.minimum(start, extent[:, None] - width), width


def _span_mask(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) boolean: True inside any of each row's spans [start, start + width)."""
    positions = torch.arange(size)[None, None, :]
    inside = (positions >= starts[:, :, None]) & (positions < (starts + widths)[:, :, None])
    return inside.any(dim=1)


def spec_augment(
    feats: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequency and time masks on (B, T, D) features (Park et al. 2019, §2); returns (feats, lengths).

    See the module docstring for the distributions. ``lengths`` is returned unchanged.
    """
    if feats.dim() != 3:
        raise SertkError(f"specaugment: expected features (B, T, D), got shape {tuple(feats.shape)}")
    rows, frames, dim = feats.shape
    real = lengths.cpu().long()
    masked = torch.zeros(rows, frames, dim, dtype=torch.bool)
    if cfg.freq_masks and cfg.freq_width:
        widest = torch.full((rows,), min(cfg.freq_width, dim))
        starts, widths = _draw_spans(cfg.freq_masks, widest, torch.full((rows,), dim), generator)
        masked |= _span_mask(starts, widths, dim)[:, None, :] & frame_mask(real, frames)[:, :, None]
    if cfg.time_masks and cfg.time_width:
        widest = torch.minimum(torch.full((rows,), cfg.time_width), (cfg.time_ratio * real).floor().long())
        starts, widths = _draw_spans(cfg.time_masks, widest, real, generator)
        masked |= _span_mask(starts, widths, frames)[:, :, None]
    masked = masked.to(feats.device)
    if cfg.fill == "mean":
        fill = masked_mean(feats, lengths)[:, None, :].expand_as(feats)
        return torch.where(masked, fill, feats), lengths
    return feats.masked_fill(masked, 0.0), lengths


class SpecAugment:
    """A batch transform ``(feats, lengths) -> (feats, lengths)`` masking with its own generator."""

    def __init__(self, cfg: SpecAugmentConfig, generator: torch.Generator):
        self.cfg, self.generator = cfg, generator

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return spec_augment(feats, lengths, self.cfg, self.generator)
