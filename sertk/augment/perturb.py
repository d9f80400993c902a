"""Waveform perturbations on padded batches ``(waves (B, N), lengths (B,))``: speed, additive noise, reverberation.

Every function keeps the padding convention of ``sertk.masking``: samples n >= lengths[b] are zero on input
and stay zero on output, and each row is computed as if it were alone (the batch only saves torch calls).
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional

from sertk.errors import SertkError
from sertk.masking import frame_mask


def speed_perturb(
    waves: torch.Tensor, lengths: torch.Tensor, sample_rate: int, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ko et al. 2015 speed perturbation: y(t) = x(factor·t), so duration / factor and every frequency × factor.

    As sox's ``speed`` effect that Kaldi's recipes use, this is resampling: the samples are read as if
    recorded at ``factor · sample_rate`` and resampled to ``sample_rate`` (windowed-sinc,
    ``torchaudio.functional.resample``), which changes tempo and pitch together. Row b comes out with
    ceil(lengths[b] / factor) samples. The rates are rounded, not truncated: ``torchaudio.functional.speed``
    takes ``int(factor * rate)``, which turns 1.15 · 16000 = 18399.999... into 18399.
    """
    if factor <= 0:
        raise SertkError(f"speed factor must be > 0, got {factor}")
    source = round(factor * sample_rate)
    gcd = math.gcd(source, sample_rate)
    source, target = source // gcd, sample_rate // gcd
    out = torchaudio.functional.resample(waves, source, target)
    # ceil(n * target / source) in integers: exactly torchaudio's output length for an unpadded row.
    new_lengths = -(-lengths * target // source)
    out = out[:, : int(new_lengths.max())] if len(new_lengths) else out
    # The sinc filter's tail leaks past a short row's end into its padding: cut it off.
    return out * frame_mask(new_lengths.to(out.device), out.shape[1]), new_lengths


def add_noise_at_snr(
    waves: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor, snr_db: torch.Tensor
) -> torch.Tensor:
    """Add ``noise`` scaled to a signal-to-noise ratio of ``snr_db`` per row (MUSAN, Snyder et al. 2015).

    y = x + g·n with g chosen so that 10·log10(Σ x² / Σ (g·n)²) = snr over the row's real samples
    (``torchaudio.functional.add_noise``): the ratio of the whole utterance's energy, silences included, to
    the noise energy, as Kaldi's x-vector recipes add MUSAN. ``noise`` must have non-zero energy in every row.
    """
    valid = frame_mask(lengths.to(waves.device), waves.shape[1])
    noise = noise * valid
    if bool((noise.square().sum(dim=1) == 0).any()):
        raise SertkError("add_noise_at_snr: a noise row is silent, so no gain reaches the requested SNR")
    return torchaudio.functional.add_noise(waves, noise, snr_db.to(waves.dtype), lengths)


def normalize_rir(rir: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A room impulse response scaled to unit energy (Σ h² = 1), and its direct-path index argmax |h|.

    Ko et al. 2017 simulate reverberant speech as x * h; the largest peak of h is taken as the direct
    path, whose arrival time only delays the output (see ``reverberate``).
    """
    energy = rir.square().sum()
    if not bool(energy > 0):
        raise SertkError("normalize_rir: the impulse response is silent")
    return rir / energy.sqrt(), int(rir.abs().argmax())


def fast_fft_length(n: int) -> int:
    """The smallest 2^a·3^b·5^c >= n: FFTs of such lengths run several times faster than of a length with a
    large prime factor (pocketfft falls back to Bluestein's algorithm there)."""
    best = 1 << max(n - 1, 0).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            # The smallest power of two that lifts threes up to n.
            twos = threes << max(0, (-(-n // threes) - 1).bit_length())
            best = min(best, twos)
            threes *= 3
        fives *= 5
    return best


def reverberate(
    waves: torch.Tensor, lengths: torch.Tensor, rirs: torch.Tensor, delays: torch.Tensor
) -> torch.Tensor:
    """Reverberant copies (Ko et al. 2017): y = x * h, aligned on the direct path, at the input's energy.

    Row b: r = x_b * h_b (``torchaudio.functional.fftconvolve``), then y_b[n] = r[n + d_b] for
    n < lengths[b], with d_b = ``delays[b]`` the direct-path index of h_b: the output is as long as the
    input and its direct sound lines up with the input (Kaldi's ``wav-reverberate --shift-output``); the
    tail beyond the input's end is dropped. Finally y_b is scaled so that Σ y_b² = Σ x_b² (Kaldi's
    ``--normalize-output``): reverberation changes the sound, not the level, and 16-bit writing does not
    clip. ``rirs`` (B, L) are zero-padded after each response's end (padding does not change x * h).
    """
    valid = frame_mask(lengths.to(waves.device), waves.shape[1])
    # Trailing zeros change nothing in the part kept, and a 5-smooth FFT length is several times faster.
    extra = fast_fft_length(waves.shape[1] + rirs.shape[1] - 1) - (waves.shape[1] + rirs.shape[1] - 1)
    full = torchaudio.functional.fftconvolve(torch.nn.functional.pad(waves, (0, extra)), rirs.to(waves.dtype))
    index = delays.to(waves.device)[:, None] + torch.arange(waves.shape[1], device=waves.device)[None, :]
    out = full.gather(1, index) * valid
    before = waves.square().sum(dim=1, keepdim=True)
    after = out.square().sum(dim=1, keepdim=True)
    return out * torch.where(after > 0, (before / after.clamp(min=1e-30)).sqrt(), torch.zeros_like(after))
