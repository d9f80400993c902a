"""Linear-frequency spectrograms: μ-law companded magnitude (``spec-li2018``) and log power (``spec-logpow``).

Both frame the signal the Kaldi way (``snip_edges``, ``sertk.features.frames``): frame i covers samples
[i·S, i·S + L), there are 1 + (N − L) // S frames, and each windowed frame is zero-padded at its END to
``n_fft`` before the DFT.
``torch.stft(center=False)`` with a window shorter than ``n_fft`` differs: it centres the window inside
an ``n_fft``-long frame, so it yields 1 + (N − n_fft) // S frames, each shifted by (n_fft − L) / 2 samples.
Bin 0 (DC) is dropped, so a ``max_freq_hz`` cut-off keeps bins 1 … max_freq_hz / bin_width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sertk.errors import SertkError
from sertk.features.base import FeatureExtractor
from sertk.features.frames import WINDOWS, analysis_window, frame_signal, num_frames
from sertk.masking import frame_mask

# What spec-li2018 stores (see MuLawSpectrogram).
SCALINGS = ("none", "peak", "minmax")


def framed_spectrum(
    waves: torch.Tensor,
    frame_length: int,
    frame_shift: int,
    n_fft: int,
    window: str,
    remove_dc_offset: bool,
    num_bins: int,
) -> torch.Tensor:
    """Complex DFT bins 1 … num_bins of Kaldi-framed, windowed frames: (B, N) -> (B, T, num_bins)."""
    frames = frame_signal(waves, frame_length, frame_shift)
    if remove_dc_offset:
        # Kaldi's default: a recording's DC offset would otherwise leak into the lowest bins via the window.
        frames = frames - frames.mean(dim=-1, keepdim=True)
    taper = analysis_window(window, frame_length, dtype=waves.dtype, device=waves.device)
    # rfft(n=n_fft) zero-pads each frame at its end, which keeps Kaldi's frame alignment.
    return torch.fft.rfft(frames * taper, n=n_fft)[..., 1 : num_bins + 1]


def mu_law_compress(x: torch.Tensor, mu: float) -> torch.Tensor:
    """F(x) = sgn(x) ln(1 + μ|x|) / ln(1 + μ) for x in [-1, 1]; Li et al. 2018, Eq. 1."""
    return torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)


def minmax_scale(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Map each row of (B, T, D) linearly onto [-1, 1]: its min -> -1, its max -> 1; Li et al. 2018 §2.1.

    The paper maps each 2 s segment's 400 x 200 spectrogram "linearly to [-1, 1]" before μ-law
    (``mu_law_compress``, Eq. 1): call this on a batch of segments with ``lengths`` their real frames. Only
    the real frames t < lengths[b] define row b's min and max, so padding never changes the scale, and
    padded frames come out as -1: where silence (magnitude 0 <= min) would map, so a segment padded at its
    end looks like the same segment followed by silence to a convolution that reaches past the end (μ-law
    keeps -1 at -1). A row whose real frames are constant maps to -1 everywhere.
    """
    valid = frame_mask(lengths.to(x.device), x.shape[1]).view(x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
    dims = tuple(range(1, x.dim()))
    high = x.masked_fill(~valid, -math.inf).amax(dim=dims, keepdim=True)
    low = x.masked_fill(~valid, math.inf).amin(dim=dims, keepdim=True)
    scaled = 2.0 * (x - low) / (high - low).clamp_min(torch.finfo(x.dtype).tiny) - 1.0
    return torch.where(valid, scaled.clamp(-1.0, 1.0), torch.full_like(scaled, -1.0))


def _check_common(cfg, frame_length: int, name: str) -> int:
    """Validate framing options shared by both spectrograms; returns the number of kept bins."""
    if cfg.window not in WINDOWS:
        raise SertkError(f"feature {name}: window must be one of {list(WINDOWS)}, got {cfg.window!r}")
    if cfg.frame_shift_ms <= 0 or frame_length <= 0:
        raise SertkError(f"feature {name}: frame_length_ms and frame_shift_ms must be positive")
    if cfg.n_fft < frame_length:
        raise SertkError(
            f"feature {name}: n_fft {cfg.n_fft} is shorter than the {frame_length}-sample window"
        )
    bin_hz = cfg.sample_rate / cfg.n_fft
    num_bins = round(cfg.max_freq_hz / bin_hz)
    if abs(num_bins * bin_hz - cfg.max_freq_hz) > 1e-6 * cfg.max_freq_hz:
        raise SertkError(
            f"feature {name}: max_freq_hz {cfg.max_freq_hz} is not a multiple of the {bin_hz} Hz bin"
        )
    if not 0 < num_bins <= cfg.n_fft // 2:
        raise SertkError(f"feature {name}: max_freq_hz must lie in (0, {cfg.sample_rate / 2}]")
    return num_bins


class _KaldiFramed(FeatureExtractor):
    """Shared framing arithmetic for the two spectrograms."""

    def __init__(self, cfg, name: str) -> None:
        super().__init__(cfg)
        self.frame_length = round(cfg.sample_rate * cfg.frame_length_ms / 1000)
        self.frame_shift = round(cfg.sample_rate * cfg.frame_shift_ms / 1000)
        self.num_bins = _check_common(cfg, self.frame_length, name)

    @property
    def dim(self) -> int:
        return self.num_bins

    def num_frames(self, num_samples: int) -> int:
        return num_frames(int(num_samples), self.frame_length, self.frame_shift)

    def _spectrum(self, waves: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return framed_spectrum(
            waves.float(),
            self.frame_length,
            self.frame_shift,
            cfg.n_fft,
            cfg.window,
            cfg.remove_dc_offset,
            self.num_bins,
        )


class MuLawSpectrogram(_KaldiFramed):
    """Li et al. 2018 §2.1: 40 ms Hamming / 10 ms, 1600-point DFT (10 Hz bins), 10-4000 Hz -> 400 bins.

    ``scaling`` says what is stored:

    - ``none``: the plain linear magnitude |X|, no μ-law: the paper's own scaling is per 2 s segment, so
      it is applied after segmentation: ``mu_law_compress(minmax_scale(segments, lengths), mu)``.
    - ``peak``: |X| divided by the utterance's largest magnitude ([0, 1] ⊂ [-1, 1]), then μ-law: the noise
      floor sits at 0 where μ-law has its largest gain (255 / ln 256 ≈ 46), so the result behaves like a
      log spectrum with a 48 dB range.
    - ``minmax``: ``minmax_scale`` over the whole utterance, then μ-law: the floor sits at −1, where
      μ-law compresses instead.
    ``mu`` only applies to ``peak`` and ``minmax``.
    """

    version = 1

    @dataclass
    class Config:
        sample_rate: int = 16000
        frame_length_ms: float = 40.0
        frame_shift_ms: float = 10.0
        n_fft: int = 1600
        max_freq_hz: float = 4000.0
        window: str = "hamming"
        remove_dc_offset: bool = True
        scaling: str = "peak"
        mu: float = 255.0

    def __init__(self, cfg) -> None:
        super().__init__(cfg, "spec-li2018")
        if cfg.scaling not in SCALINGS:
            raise SertkError(
                f"feature spec-li2018: scaling must be one of {list(SCALINGS)}, got {cfg.scaling!r}"
            )
        if cfg.mu <= 0:
            raise SertkError(f"feature spec-li2018: mu must be positive, got {cfg.mu}")

    def compute(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N) waveforms -> (B, T, 400) magnitude spectrogram, scaled and μ-law companded per ``scaling``;
        Li et al. 2018 §2.1 and Eq. 1."""
        magnitude = self._spectrum(waves).abs()
        if self.cfg.scaling == "none":
            return magnitude
        # Scale statistics come from each utterance's own frames so batching never changes a row.
        frames = num_frames(lengths.to(magnitude.device), self.frame_length, self.frame_shift)
        if self.cfg.scaling == "minmax":
            return mu_law_compress(minmax_scale(magnitude, frames), self.cfg.mu)
        valid = frame_mask(frames, magnitude.shape[1])[..., None]
        peak = magnitude.masked_fill(~valid, 0.0).amax(dim=(1, 2), keepdim=True)
        scaled = magnitude / peak.clamp_min(torch.finfo(magnitude.dtype).tiny)
        return mu_law_compress(scaled.clamp(-1.0, 1.0), self.cfg.mu)


class LogPowerSpectrogram(_KaldiFramed):
    """cnn_blstm_vtlp.txt §1.2: log |STFT|² (Eq. 3) with a 64 ms Hann window (Eq. 2), 32 ms shift.

    n_fft = the 1024-sample window at 16 kHz (15.625 Hz bins); ``max_freq_hz`` 4000 keeps 256 bins, 8000 keeps
    512. Powers below ``log_floor`` are floored before the log (digital silence would give −inf).
    Normalisation (per-fold mean/std) belongs to the trainer.
    """

    version = 1

    @dataclass
    class Config:
        sample_rate: int = 16000
        frame_length_ms: float = 64.0
        frame_shift_ms: float = 32.0
        n_fft: int = 1024
        max_freq_hz: float = 4000.0
        window: str = "hann"
        remove_dc_offset: bool = True
        log_floor: float = 1e-10

    def __init__(self, cfg) -> None:
        super().__init__(cfg, "spec-logpow")
        if cfg.log_floor <= 0:
            raise SertkError(f"feature spec-logpow: log_floor must be positive, got {cfg.log_floor}")

    def compute(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N) waveforms -> (B, T, D) log power spectrogram; cnn_blstm_vtlp.txt Eq. 3, log-scaled."""
        spectrum = self._spectrum(waves)
        power = spectrum.real.square() + spectrum.imag.square()
        return power.clamp_min(self.cfg.log_floor).log()
