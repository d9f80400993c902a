"""Vocal tract length perturbation (VTLP) of linear-frequency spectrograms, batched, one α per row.

cnn_blstm_vtlp.txt §2: the frequency axis is warped piecewise linearly (Eq. 4, Lee & Rose 1998) with
α ~ U(0.9, 1.1) and f₀ = 0.9·f_max, in the feature domain. Feature column j of a spectrogram with D kept
bins holds frequency (j + 1)·Δ (the DC bin is dropped, see ``sertk.features.spectrogram``), so the warp is
computed in bin units, f ∈ [0, D], and needs no sample rate. The warped spectrogram reads the original at
the warped positions, Y(f) = X(G(f)), by linear interpolation of the (log) power between the two
neighbouring bins; positions below bin 1 take bin 1's value. Padded frames are zero and stay zero.
"""

from __future__ import annotations

import torch

from sertk.errors import SertkError

# Test-time copies of cnn_blstm_vtlp.txt §2: α = 0.90, 0.92, ..., 1.10, combined by majority vote.
TTA_ALPHAS = tuple(round(0.9 + 0.02 * i, 2) for i in range(11))


def vtlp_warp(freqs: torch.Tensor, alpha: torch.Tensor, f_max: float, boundary: float = 0.9) -> torch.Tensor:
    """G(f) of cnn_blstm_vtlp.txt Eq. 4: αf up to f₀ = boundary·f_max, then linear so that G(f_max) = f_max.

    ``alpha`` broadcasts against ``freqs`` (e.g. alpha (B, 1) and freqs (D,) give (B, D)).
    """
    f0 = boundary * f_max
    upper = (f_max - alpha * f0) / (f_max - f0) * (freqs - f0) + alpha * f0
    return torch.where(freqs <= f0, alpha * freqs, upper)


def warp_spectrogram(feats: torch.Tensor, alpha: torch.Tensor, boundary: float = 0.9) -> torch.Tensor:
    """Warp (B, T, D) spectrograms along D with one α per row (B,): Y[..., j] = X at G(j + 1) (bin units)."""
    if feats.dim() != 3:
        raise SertkError(f"vtlp: expected features (B, T, D), got shape {tuple(feats.shape)}")
    if alpha.shape != (feats.shape[0],):
        raise SertkError(f"vtlp: need one alpha per row ({feats.shape[0]}), got shape {tuple(alpha.shape)}")
    num_bins = feats.shape[-1]
    freqs = torch.arange(1, num_bins + 1, device=feats.device, dtype=torch.float32)
    # Column c holds frequency c + 1: the warped frequency G(f) lies at fractional column G(f) - 1.
    column = vtlp_warp(freqs, alpha.to(feats.device, torch.float32)[:, None], float(num_bins), boundary) - 1
    column = column.clamp(0, num_bins - 1)
    low = column.floor().long()
    high = (low + 1).clamp(max=num_bins - 1)
    frac = (column - low).to(feats.dtype)[:, None, :]
    shape = (-1, feats.shape[1], -1)
    below = feats.gather(2, low[:, None, :].expand(shape))
    above = feats.gather(2, high[:, None, :].expand(shape))
    return below + frac * (above - below)


class RandomVtlp:
    """A batch transform drawing α ~ U(low, high) per row from its own generator (cnn_blstm_vtlp.txt §2).

    Called as ``(feats, lengths) -> (feats, lengths)``; α is drawn on the CPU so a seed gives the same α on
    every device.
    """

    def __init__(
        self, generator: torch.Generator, low: float = 0.9, high: float = 1.1, boundary: float = 0.9
    ):
        self.generator = generator
        self.low, self.high, self.boundary = low, high, boundary

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.low + (self.high - self.low) * torch.rand(feats.shape[0], generator=self.generator)
        return warp_spectrogram(feats, alpha, self.boundary), lengths


class FixedVtlp:
    """A batch transform warping every row with the same α (one test-time copy)."""

    def __init__(self, alpha: float, boundary: float = 0.9):
        self.alpha, self.boundary = alpha, boundary

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.full((feats.shape[0],), self.alpha)
        return warp_spectrogram(feats, alpha, self.boundary), lengths


def vtlp_tta_transforms(alphas: tuple[float, ...] = TTA_ALPHAS, boundary: float = 0.9) -> list[FixedVtlp]:
    """One transform per test-time copy (cnn_blstm_vtlp.txt §2: 11 copies, α = 0.90 ... 1.10, majority vote)."""
    return [FixedVtlp(alpha, boundary) for alpha in alphas]


def tta_copies(tta: str, boundary: float = 0.9) -> list[FixedVtlp] | None:
    """The test-time copies an input config's ``tta`` asks for: None for none, the 11 VTLP warps for vtlp."""
    return vtlp_tta_transforms(boundary=boundary) if tta == "vtlp" else None
