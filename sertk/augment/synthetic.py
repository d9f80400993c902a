"""Tiny SYNTHETIC stand-ins for MUSAN and RIRS_NOISES, in their layouts, for tests and demos without them.

``write_musan_like(root)`` writes ``noise/{free-sound,sound-bible}``, ``music/fma`` and ``speech/librivox``
wavs (coloured noise, chords, a formant-less buzz): enough to exercise ``sertk.augment.sources``' MUSAN rules.
``write_rirs_like(root)`` writes ``simulated_rirs/{smallroom,mediumroom,largeroom}/Room001/*.wav``,
``real_rirs_isotropic_noises/`` (RIRs and ``*_noise_*`` recordings) and ``pointsource_noises/``. The
responses follow the exponential-decay model of simulated RIRs: silence for the propagation delay, a
direct-path impulse, then Gaussian reflections whose envelope falls 60 dB over the room's RT60
(Ko et al. 2017 simulate theirs with the image method; this is only its statistical shape). Deterministic
per seed; 16 kHz mono PCM16. Nothing here is real noise or a real room.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000


def _write(path: Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = np.abs(wave).max()
    wave = wave * (0.5 / peak) if peak > 0.5 else wave
    soundfile.write(str(path), np.round(wave * 32767).astype(np.int16), sample_rate, subtype="PCM_16")
    return path


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1 / f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    wave = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return wave / np.sqrt(np.mean(wave**2))


def impulse_response(
    rt60: float, delay: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """h[delay] = 1 (direct path), then reflections N(0, 0.3²)·10^(-3·t / rt60) (−60 dB at t = rt60).

    Reflections are clipped to ±0.9 (3σ), so the direct path stays the largest |h|: ``normalize_rir``
    aligns a copy on it (unclipped, a reflection beat it in 1-8% of responses, shifting the copy).
    """
    n = delay + int(rt60 * sample_rate)
    h = np.zeros(n)
    t = np.arange(n - delay - 1) / sample_rate
    h[delay] = 1.0
    h[delay + 1 :] = np.clip(rng.normal(0, 0.3, len(t)), -0.9, 0.9) * 10 ** (-3 * t / rt60)
    return h


def write_musan_like(root: Path, seconds: float = 2.0, seed: int = 0) -> list[Path]:
    """A MUSAN-shaped tree under ``root``; returns the files of its ``noise/`` part."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    noises = [
        _write(
            root / "noise" / "free-sound" / f"noise-free-sound-{i:04d}.wav", 0.1 * coloured_noise(n, e, rng)
        )
        for i, e in enumerate((0.0, 1.0))
    ]
    # A shorter noise than most utterances, so copies repeat it.
    noises.append(
        _write(
            root / "noise" / "sound-bible" / "noise-sound-bible-0000.wav",
            0.1 * coloured_noise(n // 4, 2.0, rng),
        )
    )
    t = np.arange(n) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    _write(root / "music" / "fma" / "music-fma-0000.wav", 0.2 * chord)
    buzz = np.sign(np.sin(2 * np.pi * 120.0 * t)) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    _write(root / "speech" / "librivox" / "speech-librivox-0000.wav", 0.1 * buzz)
    return sorted(noises)


def write_rirs_like(root: Path, seed: int = 0) -> list[Path]:
    """A RIRS_NOISES-shaped tree under ``root``; returns its impulse-response files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rirs = []
    for room, rt60 in (("smallroom", 0.2), ("mediumroom", 0.4), ("largeroom", 0.7)):
        for k in (1, 2):
            path = root / "simulated_rirs" / room / "Room001" / f"Room001-{k:05d}.wav"
            rirs.append(_write(path, impulse_response(rt60, int(rng.integers(20, 200)), rng)))
    real = root / "real_rirs_isotropic_noises"
    rirs.append(_write(real / "RVB2014_type1_rir_largeroom1_near_angla.wav", impulse_response(0.6, 64, rng)))
    _write(real / "RVB2014_type1_noise_largeroom1_1.wav", 0.1 * coloured_noise(SAMPLE_RATE, 1.0, rng))
    _write(
        root / "pointsource_noises" / "noise-free-sound-0001.wav", 0.1 * coloured_noise(SAMPLE_RATE, 0.0, rng)
    )
    return sorted(rirs)
