"""Speech-like test signals with known truth, for the feature tests and benchmarks (no real speech here).

- ``synthetic_voice``: a harmonic source with an exact per-sample F0 contour through fixed formants, with
  optional frication: clean material for checking a pitch tracker against the truth.
- ``speech_like_utterance``: what a 16-bit recording of acted speech looks like to a frame-level
  extractor: syllables whose F0 and formants move, fricatives and stop bursts, pauses and leading and
  trailing silence holding low-level noise (sometimes exact digital silence), a DC offset, a level that
  changes from syllable to syllable and phrase to phrase, quantised to int16 steps.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal
import torch


def synthetic_voice(
    f0: torch.Tensor,
    sample_rate: int = 16000,
    noise: torch.Tensor | None = None,
    formants: tuple[tuple[float, float], ...] = ((600.0, 80.0), (1400.0, 120.0), (2600.0, 160.0)),
    seed: int = 0,
) -> torch.Tensor:
    """A speech-like test signal with a known F0 contour: harmonics through formant resonators.

    f0: (N,) per-sample F0 in Hz, 0 where unvoiced; noise: (N,) bool, frication noise where True. The
    source is a sum of harmonics with amplitude 1/h (a -6 dB/octave glottal tilt) up to 0.45 sample_rate,
    each following the contour by phase accumulation, so the true F0 of every sample is exactly f0[n];
    the formants are two-pole resonators (centre, bandwidth in Hz); frication is high-passed white noise
    added after them. Peak-normalised to 0.5.
    """
    f0 = f0.double()
    harmonics = torch.arange(1, int(0.45 * sample_rate / max(float(f0[f0 > 0].min()), 1.0)) + 2)
    harmonics = harmonics.double()[:, None]
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    audible = (harmonics * f0[None, :] < 0.45 * sample_rate) & (f0[None, :] > 0)
    source = (torch.sin(harmonics * phase[None, :]) / harmonics * audible).sum(0)
    signal = source.numpy()
    for centre, bandwidth in formants:
        radius = math.exp(-math.pi * bandwidth / sample_rate)
        theta = 2 * math.pi * centre / sample_rate
        a = [1.0, -2 * radius * math.cos(theta), radius * radius]
        signal = scipy.signal.lfilter([sum(a)], a, signal)
    out = torch.from_numpy(signal)
    if noise is not None:
        # Frication: white noise high-passed above ~2.5 kHz, as in /s/-like sounds, not formant-shaped.
        generator = torch.Generator().manual_seed(seed)
        white = torch.randn(f0.shape, generator=generator, dtype=torch.float64).numpy()
        b, a = scipy.signal.butter(4, 2500.0 / (sample_rate / 2), btype="highpass")
        hiss = torch.from_numpy(scipy.signal.lfilter(b, a, white))
        out = out + 0.2 * out.abs().max() * hiss * noise
    return (0.5 * out / out.abs().max().clamp_min(1e-12)).float()


# Peterson & Barney (1952) average F1-F3 of American English vowels, adult male speakers (Hz).
VOWEL_FORMANTS = (
    (270, 2290, 3010), (390, 1990, 2550), (530, 1840, 2480), (660, 1720, 2410), (730, 1090, 2440),
    (570, 840, 2410), (440, 1020, 2240), (300, 870, 2240), (640, 1190, 2390), (490, 1350, 1690),
)  # fmt: skip
FORMANT_BANDWIDTHS = (80.0, 110.0, 160.0)
# Pass bands (Hz) of frication noise: /s/, /sh/, /f/, /h/.
FRICATIVE_BANDS = ((3500.0, 7500.0), (2000.0, 5000.0), (1000.0, 7000.0), (500.0, 3500.0))
CONTROL_HOP = 80  # formant and F0 control points every 5 ms at 16 kHz


def _resonance_gain(freqs: np.ndarray, formants: np.ndarray, sample_rate: int) -> np.ndarray:
    """|H(f)| of cascaded two-pole resonators with unit DC gain (Klatt 1980); freqs (G, H), formants (G, 3)."""
    z = np.exp(-1j * 2 * np.pi * freqs / sample_rate)
    gain = np.ones(freqs.shape)
    for k, bandwidth in enumerate(FORMANT_BANDWIDTHS):
        r = math.exp(-math.pi * bandwidth / sample_rate)
        c = 2 * r * np.cos(2 * np.pi * formants[:, k : k + 1] / sample_rate)
        gain *= np.abs((1 - c + r * r) / (1 - c * z + r * r * z * z))
    return gain


def _plan_segments(seconds: float, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """(kind, start s, end s) of vowels, fricatives and bursts: phrases of 2-6 syllables between pauses."""
    segments, t = [], rng.uniform(0.1, 0.3)
    end = seconds - rng.uniform(0.15, 0.35)
    while t < end - 0.1:
        for _ in range(rng.integers(2, 7)):
            onset = rng.choice(["fricative", "burst", "none"], p=[0.35, 0.25, 0.4])
            if onset == "fricative":
                length = rng.uniform(0.05, 0.14)
                segments.append(("fricative", t, t + length))
                t += length
            elif onset == "burst":
                segments.append(("burst", t + 0.03, t + 0.05))  # a 30 ms closure, then the release
                t += 0.06
            length = rng.uniform(0.09, 0.28)
            if t + length > end:
                break
            segments.append(("vowel", t, t + length))
            t += length
        t += rng.uniform(0.15, 0.5)
    return segments


def speech_like_utterance(
    seconds: float = 3.0,
    f0_range: tuple[float, float] = (100.0, 160.0),
    seed: int = 0,
    sample_rate: int = 16000,
    formant_scale: float | None = None,
    digital_silence: float | None = None,
) -> np.ndarray:
    """(N,) float32 in [-1, 1), on int16 steps: a 16-bit recording of speech-like sound, see the module doc.

    Vowels are harmonic sums (amplitude 1/h) shaped by three resonators gliding between Peterson-Barney
    targets (scaled by ``formant_scale``, default 1.0 for low and 1.17 for high voices), with F0 moving
    smoothly inside ``f0_range`` plus jitter; fricatives are band-passed noise, bursts a decaying noise
    click. Syllables vary by up to 14 dB; the background is low-pass noise of 0.3-4 int16 steps (RMS),
    with a DC offset of up to ±40 steps. ``digital_silence`` seconds of exact zeros open the utterance
    (default: 30-100 ms in half the utterances, none in the others).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    lo, hi = f0_range
    scale = formant_scale if formant_scale is not None else (1.0 if lo < 150 else 1.17)
    voiced_env, noise_env = np.zeros(n), np.zeros(n)
    noise_bands, vowel_centres, vowel_targets = [], [], []
    for kind, start, end in _plan_segments(seconds, rng):
        a, b = int(start * sample_rate), min(int(end * sample_rate), n)
        level = 10 ** (rng.uniform(-14, 0) / 20)
        if kind == "vowel":
            voiced_env[a:b] = np.maximum(voiced_env[a:b], level * scipy.signal.windows.tukey(b - a, 0.4))
            vowel_centres.append(0.5 * (start + end))
            vowel_targets.append(np.array(VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))]) * scale)
        else:
            shape = (
                scipy.signal.windows.tukey(b - a, 0.5)
                if kind == "fricative"
                else np.exp(-np.arange(b - a) / 80)
            )
            noise_env[a:b] += level * rng.uniform(0.1, 0.4) * shape
            noise_bands.append(
                (a, b, FRICATIVE_BANDS[rng.integers(len(FRICATIVE_BANDS))] if kind == "fricative" else None)
            )

    # F0: random targets every ~0.25 s inside the range, smoothly interpolated, plus 0.5% jitter per 5 ms.
    knots = np.linspace(0, seconds, max(2, int(seconds / 0.25)) + 1)
    f0 = np.interp(t, knots, rng.uniform(lo, hi, knots.size))
    grid = np.arange(0, n + CONTROL_HOP, CONTROL_HOP)
    jitter = 1 + 0.005 * rng.standard_normal(grid.size)
    f0 = f0 * np.interp(np.arange(n), grid, jitter)
    if not vowel_centres:
        vowel_centres, vowel_targets = [0.0], [np.array(VOWEL_FORMANTS[0]) * scale]
    centres = np.array(vowel_centres)
    formants = np.stack(
        [np.interp(grid / sample_rate, centres, np.array(vowel_targets)[:, k]) for k in range(3)], 1
    )

    # Harmonic h has amplitude 1/h times the resonators' gain at h·F0, evaluated every 5 ms and
    # interpolated; its phase is h times the integral of F0, so the F0 of every sample is f0[i].
    harmonics = np.arange(1, int(0.45 * sample_rate / lo) + 1)[:, None]
    f0_grid = np.interp(grid, np.arange(n), f0)
    gain = _resonance_gain((harmonics * f0_grid[None, :]).T, formants, sample_rate).T / harmonics
    gain *= harmonics * f0_grid[None, :] < 0.45 * sample_rate
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    source = np.zeros(n)
    for h in range(harmonics.shape[0]):
        source += np.interp(np.arange(n), grid, gain[h]) * np.sin((h + 1) * phase + rng.uniform(0, 2 * np.pi))
    speech = voiced_env * (source + 0.02 * rng.standard_normal(n) * source.std())

    frication = np.zeros(n)
    for a, b, band in noise_bands:
        noise = rng.standard_normal(b - a)
        if band is not None:
            noise = scipy.signal.sosfilt(
                scipy.signal.butter(4, band, "bandpass", fs=sample_rate, output="sos"), noise
            )
        frication[a:b] += noise / max(noise.std(), 1e-12)
    speech = speech / max(np.abs(speech).max(), 1e-12) + noise_env * frication * 0.3
    speech *= 10 ** (rng.uniform(-20, -4) / 20) / max(np.abs(speech).max(), 1e-12)

    step = 1 / 32768
    background = scipy.signal.lfilter([1.0], [1.0, -0.6], rng.standard_normal(n))
    speech += rng.uniform(0.3, 4.0) * step * background / background.std() + rng.uniform(-40, 40) * step
    chance, length = rng.uniform(), rng.uniform(0.03, 0.1)
    if digital_silence is None:
        digital_silence = length if chance < 0.5 else 0.0
    speech[: int(digital_silence * sample_rate)] = 0.0  # before the recording really starts
    return (np.clip(np.round(speech / step), -32768, 32767) * step).astype(np.float32)
