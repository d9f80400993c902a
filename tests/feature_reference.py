"""Hand-written numpy references for the feature tests: loops and textbook formulas, no sertk code.

Each function restates a definition (HTK Book, openSMILE's component documentation, Kaldi) as plainly as
possible, so a test comparing sertk against it fails when sertk ignores or mis-wires an option.
"""

from __future__ import annotations

import math

import numpy as np


def mel(freq_hz):
    """HTK / Kaldi Mel scale 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)


def mel_bank(num_bins: int, fft_size: int, rate: float, low: float, high: float) -> np.ndarray:
    """(fft_size/2 + 1, num_bins) HTK Book §5.4 triangles: edges equally spaced in Mel from low to high."""
    edges = np.linspace(mel(low), mel(high), num_bins + 2)
    bins = mel(np.arange(fft_size // 2 + 1) * rate / fft_size)
    bank = np.zeros((fft_size // 2 + 1, num_bins))
    for b in range(num_bins):
        left, centre, right = edges[b : b + 3]
        for k in range(fft_size // 2):  # the Nyquist bin stays 0
            if left < bins[k] <= centre:
                bank[k, b] = (bins[k] - left) / (centre - left)
            elif centre < bins[k] < right:
                bank[k, b] = (right - bins[k]) / (right - centre)
    return bank


def lifted_dct(num_bins: int, num_ceps: int, lifter: float) -> np.ndarray:
    """(num_bins, num_ceps): HTK Eq. 5.14 c_i = sqrt(2/M) sum_j m_j cos(pi i (j - 0.5) / M), i = 1..num_ceps,
    times the Eq. 5.12 lifter 1 + (L/2) sin(pi i / L) (none when L <= 0)."""
    matrix = np.zeros((num_bins, num_ceps))
    for i in range(1, num_ceps + 1):
        lift = 1 + lifter / 2 * math.sin(math.pi * i / lifter) if lifter > 0 else 1.0
        for j in range(1, num_bins + 1):
            matrix[j - 1, i - 1] = (
                lift * math.sqrt(2 / num_bins) * math.cos(math.pi * i * (j - 0.5) / num_bins)
            )
    return matrix


def window(kind: str, length: int) -> np.ndarray:
    n = np.arange(length)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * n / (length - 1))
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))


def frames_of(wave: np.ndarray, length: int, shift: int) -> np.ndarray:
    """(T, L) frames t = wave[t S : t S + L], T = 1 + (N - L) // S."""
    count = 1 + (len(wave) - length) // shift
    return np.stack([wave[t * shift : t * shift + length] for t in range(count)]).astype(np.float64)


def zcr(frame: np.ndarray) -> float:
    """openSMILE cMZcr: sample i = 1..L-2 counts if x[i-1] x[i] < 0, or x[i] = 0 and x[i-1] x[i+1] <= 0."""
    count = 0
    for i in range(1, len(frame) - 1):
        if frame[i - 1] * frame[i] < 0 or (frame[i] == 0 and frame[i - 1] * frame[i + 1] <= 0):
            count += 1
    return count / len(frame)


def lld_front_end(wave: np.ndarray, rate: int, length_ms: float, shift_ms: float, preemphasis: float,
                  num_mel_bins: int, low: float, high: float, num_ceps: int, lifter: float) -> dict:  # fmt: skip
    """Unsmoothed per-frame ZCR, RMS energy, energy (sum of squares) and MFCC of the LLD front end."""
    length, shift = round(rate * length_ms / 1000), round(rate * shift_ms / 1000)
    fft_size = 1 << (length - 1).bit_length()
    frames = frames_of(wave, length, shift)
    emphasised = np.concatenate(
        [frames[:, :1] * (1 - preemphasis), frames[:, 1:] - preemphasis * frames[:, :-1]], 1
    )
    windowed = emphasised * window("hamming", length)
    magnitude = np.abs(np.fft.rfft(windowed, n=fft_size))
    log_mel = np.log(np.maximum(magnitude @ mel_bank(num_mel_bins, fft_size, rate, low, high), 1e-8))
    return {
        "zcr": np.array([zcr(f) for f in frames]),
        "rms": np.sqrt(np.mean(windowed**2, axis=1)),
        "energy": np.sum(windowed**2, axis=1),
        "mfcc": log_mel @ lifted_dct(num_mel_bins, num_ceps, lifter),
    }


def spectrum(wave: np.ndarray, rate: int, length_ms: float, shift_ms: float, n_fft: int, max_freq_hz: float,
             kind: str, remove_dc: bool) -> np.ndarray:  # fmt: skip
    """(T, K) complex DFT bins 1..K (K = max_freq_hz / bin width) of Kaldi-framed, windowed frames."""
    length, shift = round(rate * length_ms / 1000), round(rate * shift_ms / 1000)
    frames = frames_of(wave, length, shift)
    if remove_dc:
        frames = frames - frames.mean(axis=1, keepdims=True)
    num_bins = round(max_freq_hz * n_fft / rate)
    return np.fft.rfft(frames * window(kind, length), n=n_fft)[:, 1 : num_bins + 1]
