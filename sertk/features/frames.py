"""The signal primitives every feature type shares: framing, frame counts, windows, Mel banks, DCT.

Framing is Kaldi's ``snip_edges`` rule everywhere (fbank, spectrograms, LLDs, the ONNX export): frame t
covers samples [t·S, t·S + L), there are 1 + (N − L) // S frames, none when N < L. Kaldi's other rule
(``snip_edges: false``, frames centred on t·S + S/2 with the signal mirrored at its ends) is used by fbank
only and lives here too. A primitive has one implementation: the Mel bank is torchaudio's Kaldi
``get_mel_banks``, fast FFT sizes are scipy's ``next_fast_len``, the DCT matrix is scipy's orthonormal
DCT-II; the windows, the lifter and per-frame pre-emphasis are one-line formulas written here.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.compliance.kaldi

# Symmetric analysis windows (Kaldi's names): n = 0 … L − 1, cos term 2πn / (L − 1).
WINDOWS = ("povey", "hamming", "hann")


def frame_signal(waves: torch.Tensor, length: int, shift: int) -> torch.Tensor:
    """(B, N) -> (B, T, L) view of frames t = samples [t·S, t·S + L) (Kaldi snip_edges).

    T = num_frames(N, L, S) for the batch width N; a batch narrower than one frame is zero-padded to one
    frame, so the result is never empty and callers trim each row by its own frame count.
    """
    if waves.shape[-1] < length:
        waves = torch.nn.functional.pad(waves, (0, length - waves.shape[-1]))
    return waves.unfold(-1, length, shift)


def num_frames(num_samples, length: int, shift: int):
    """Frames of Kaldi snip_edges framing: 1 + (N − L) // S, or 0 when N < L.

    ``num_samples`` is an int (returns an int) or an integer tensor of lengths (returns a tensor of the same
    shape, computed with tensor arithmetic only, so it traces into exported models).
    """
    if isinstance(num_samples, torch.Tensor):
        count = torch.div(num_samples - length, shift, rounding_mode="floor") + 1
        return torch.where(num_samples >= length, count, torch.zeros_like(count))
    if num_samples < length:
        return 0
    return 1 + (num_samples - length) // shift


def num_centred_frames(num_samples: int, shift: int) -> int:
    """Frames of Kaldi's snip_edges=false framing: (N + S/2) // S (frame m centred on m·S + S/2)."""
    return (num_samples + shift // 2) // shift


def centred_frames(waves: torch.Tensor, lengths: torch.Tensor, length: int, shift: int) -> torch.Tensor:
    """(B, N) -> (B, T, L) frames of Kaldi's snip_edges=false rule, T = num_centred_frames(N, S).

    Frame m covers [m·S + S/2 − L/2, … + L); samples before 0 or past row b's length are mirrored
    (x[−1 − i] = x[i], x[n + i] = x[n − 1 − i]), as Kaldi's ExtractWindow does. The mirror point differs
    per row, so the frames are gathered with per-row reflected indices.
    """
    count = num_centred_frames(int(waves.shape[1]), shift)
    start = torch.arange(count, device=waves.device) * shift + shift // 2 - length // 2
    index = (start[:, None] + torch.arange(length, device=waves.device)).expand(waves.shape[0], -1, -1)
    n = lengths.to(waves.device).view(-1, 1, 1)
    index = torch.where(index < 0, -index - 1, index)
    index = torch.where(index >= n, 2 * n - index - 1, index).clamp(0, waves.shape[1] - 1)
    return torch.gather(waves[:, None, :].expand(-1, count, -1), 2, index)


def frame_sums(values: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) float32 sums of ``values`` (B, N) over [starts[t], starts[t] + length), from one cumulative sum.

    O(N) instead of O(T·L) for overlapping frames; exact for counts (bool values, int64 cumsum), float64
    accurate for sums of floats.
    """
    dtype = torch.int64 if values.dtype == torch.bool else torch.float64
    cumulative = torch.nn.functional.pad(values.to(dtype).cumsum(dim=1), (1, 0))
    return (cumulative[:, starts + length] - cumulative[:, starts]).float()


def analysis_window(kind: str, length: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Symmetric window of ``length`` samples computed in ``dtype``: hamming 0.54 − 0.46 cos(2πn/(L−1)),
    hann 0.5 − 0.5 cos(2πn/(L−1)), povey = hann^0.85 (Kaldi's default).

    Kaldi computes its windows in double and stores them as float: fbank and the LLDs build them in
    float64 and round once; the spectrograms and the ACF pitch window build them in float32 directly.
    """
    if kind == "hamming":
        return torch.hamming_window(length, periodic=False, dtype=dtype, device=device)
    if kind == "hann":
        return torch.hann_window(length, periodic=False, dtype=dtype, device=device)
    if kind == "povey":
        return torch.hann_window(length, periodic=False, dtype=dtype, device=device).pow(0.85)
    raise ValueError(f"window must be one of {list(WINDOWS)}, got {kind!r}")


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= n (Kaldi's round_to_power_of_two FFT size)."""
    return 1 << max(n - 1, 0).bit_length()


def fast_fft_size(minimum: int) -> int:
    """Smallest 2^a 3^b 5^c >= minimum (scipy.fft.next_fast_len for real input): about as fast per point
    as a power of two and often far smaller (1080 instead of 2048 for a 50 ms window plus 60 Hz lags)."""
    import scipy.fft  # here, not at the top: importing scipy.fft costs ~0.6 s, which fbank dumps need not pay

    return scipy.fft.next_fast_len(minimum, real=True)


def preemphasize(frames: torch.Tensor, coeff: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame pre-emphasis y[i] = x[i] − c·x[i−1] with x[−1] := x[0], so y[0] = (1 − c)·x[0].

    Kaldi's ``preemphasis_coefficient`` and openSMILE's cVectorPreemphasis define the frame's first sample
    alike. ``out`` (same shape, may be a view into a larger FFT buffer) receives the result.
    """
    if out is None:
        out = torch.empty_like(frames)
    torch.sub(frames[..., 1:], frames[..., :-1], alpha=coeff, out=out[..., 1:])
    torch.mul(frames[..., 0], 1.0 - coeff, out=out[..., 0])
    return out


def mel_filterbank(num_bins: int, fft_size: int, sample_rate: float, low_freq: float, high_freq: float):
    """(fft_size // 2 + 1, num_bins) float32 triangles, equally spaced and triangular on the Mel scale
    1127 ln(1 + f/700), from torchaudio's ``compliance.kaldi.get_mel_banks`` (Kaldi's MelBanks).

    ``high_freq`` <= 0 is an offset below Nyquist (Kaldi). The Nyquist row is 0, as in Kaldi. The same
    bank is HTK's (HTK Book §5.4) and openSMILE's cMelspec with htkcompatible=1: edges equally spaced in
    Mel from low_freq to high_freq, the DC bin outside every triangle (its weight is 0 whenever
    low_freq >= 0), so the LLD sets use it unchanged.
    """
    bank, _ = torchaudio.compliance.kaldi.get_mel_banks(
        num_bins, fft_size, float(sample_rate), float(low_freq), float(high_freq), 100.0, -500.0, 1.0
    )
    return torch.nn.functional.pad(bank.T.float(), (0, 0, 0, 1))


def lifter_weights(num_ceps: int, lifter: float) -> torch.Tensor:
    """HTK's sinusoidal lifter for c_1 … c_num_ceps (HTK Book Eq. 5.12): 1 + (L/2) sin(πi/L); 1 when L <= 0."""
    i = torch.arange(1, num_ceps + 1, dtype=torch.float64)
    if lifter <= 0:
        return torch.ones_like(i)
    return 1.0 + 0.5 * lifter * torch.sin(torch.pi * i / lifter)


def dct_matrix(num_bins: int, num_ceps: int, lifter: float = 0.0) -> torch.Tensor:
    """(num_bins, num_ceps) float64 matrix M with (log Mel) @ M = lifted c_1 … c_num_ceps.

    The columns 1 … num_ceps of scipy's orthonormal DCT-II, which for i >= 1 is exactly HTK's Eq. 5.14
    c_i = sqrt(2/M) Σ_j m_j cos(πi(j − 0.5)/M) (only c_0 would differ, by the orthonormal 1/sqrt(2), and it
    is not used), times ``lifter_weights``.
    """
    import scipy.fft  # see fast_fft_size

    basis = scipy.fft.dct(np.eye(num_bins), type=2, norm="ortho", axis=-1)[:, 1 : num_ceps + 1]
    return torch.from_numpy(basis) * lifter_weights(num_ceps, lifter)[None, :]
