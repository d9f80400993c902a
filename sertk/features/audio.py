"""Reading utterance audio for feature extraction: soundfile, downmix to mono, resample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional

from sertk.errors import SertkError


@dataclass
class AudioInfo:
    """What the header says about a file, and its length once resampled to the target rate."""

    num_samples: int
    sample_rate: int
    channels: int
    target_samples: int


def _reason(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def audio_info(path: str | Path, sample_rate: int) -> AudioInfo:
    """Read only the header of ``path``; SertkError ("file: reason") if it is unreadable or empty."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise SertkError(f"{path}: cannot read audio ({_reason(err)})") from None
    if info.frames <= 0:
        raise SertkError(f"{path}: empty audio file")
    # torchaudio's resample returns ceil(N * new / old) samples.
    target = -(-info.frames * sample_rate // info.samplerate)
    return AudioInfo(info.frames, info.samplerate, info.channels, target)


def read_audio(path: str | Path, sample_rate: int) -> tuple[np.ndarray, bool, bool]:
    """Mono float32 samples of ``path`` at ``sample_rate``, plus (downmixed, resampled) flags.

    Multi-channel audio is averaged over channels; other rates are resampled with
    ``torchaudio.functional.resample`` (windowed sinc). SertkError ("file: reason") when unreadable or empty.
    """
    try:
        with soundfile.SoundFile(str(path)) as f:
            rate = f.samplerate
            if f.subtype == "PCM_16":
                # libsndfile's own int16 -> float conversion costs twice the read; x / 32768 is exact.
                wave = np.multiply(f.read(dtype="int16", always_2d=True), 1.0 / 32768, dtype=np.float32)
            else:
                wave = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise SertkError(f"{path}: cannot read audio ({_reason(err)})") from None
    if wave.shape[0] == 0:
        raise SertkError(f"{path}: empty audio file")
    downmixed = wave.shape[1] > 1
    mono = wave.mean(axis=1, dtype=np.float32) if downmixed else wave[:, 0]
    resampled = rate != sample_rate
    if resampled:
        mono = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, sample_rate)
        mono = mono.numpy()
    return np.ascontiguousarray(mono, dtype=np.float32), downmixed, resampled
