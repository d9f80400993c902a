"""Noise and room-impulse-response files the user supplies (nothing is downloaded): finding, checking, reading.

``--noise DIR`` accepts a MUSAN root (Snyder et al. 2015, openslr.org/17)::

    musan/noise/{free-sound,sound-bible}/*.wav     # 930 noises: the only part drawn from for a MUSAN root
    musan/music/{fma,fma-western-art,hd-classical,jamendo,rfm}/*.wav
    musan/speech/{librivox,us-gov}/*.wav

A MUSAN root (a dir holding ``noise/``, ``music/`` and ``speech/``) contributes its ``noise/`` part only:
music and speech babble carry their own emotion, so using them is an explicit choice
(``--noise musan/music``). Any other directory contributes every ``.wav``/``.flac`` below it.

``--rir DIR`` accepts a RIRS_NOISES root (Ko et al. 2017, openslr.org/28)::

    RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/*.wav   # 60,000 simulated RIRs
    RIRS_NOISES/real_rirs_isotropic_noises/*.wav                              # real RIRs and noises
    RIRS_NOISES/pointsource_noises/*.wav                                      # noises, never used as RIRs

From a RIRS_NOISES root (a dir holding ``simulated_rirs/`` or ``real_rirs_isotropic_noises/``) the
responses are ``simulated_rirs/**`` and the files of ``real_rirs_isotropic_noises/`` whose name does not
contain ``noise`` (the release names its isotropic noise recordings ``*_noise_*``); any other directory
contributes every audio file below it. Multi-channel files contribute their first channel (the release's own
lists pick channel 1 too). Every file is checked by its header before any work starts: an unreadable or
empty one is reported and skipped, and the count is part of the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional

from sertk.errors import SertkError
from sertk.features.audio import audio_info
from sertk.utils import console

AUDIO_SUFFIXES = (".wav", ".flac")
MUSAN_PARTS = ("noise", "music", "speech")
RIRS_PARTS = ("simulated_rirs", "real_rirs_isotropic_noises")
SAMPLE_RATE = 16000  # only for audio_info's resampled length, which is not used here


@dataclass(frozen=True)
class SourceFile:
    """One usable noise or RIR file: its path, the name shown in ``augment.tsv``, and its header."""

    path: Path
    name: str  # relative to the directory the user gave
    frames: int
    sample_rate: int

    def frames_at(self, sample_rate: int) -> int:
        """Its length once resampled to ``sample_rate`` (torchaudio's resample gives ceil(N·new/old))."""
        return -(-self.frames * sample_rate // self.sample_rate)


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def find_noise_files(root: Path) -> list[Path]:
    """The noise files of ``root``: ``noise/**`` of a MUSAN root, else every audio file below it."""
    root = Path(root)
    if not root.is_dir():
        raise SertkError(f"{root}: noise directory not found")
    if all((root / part).is_dir() for part in MUSAN_PARTS):
        return _audio_files(root / "noise")
    return _audio_files(root)


def find_rir_files(root: Path) -> list[Path]:
    """The impulse responses of ``root``: the RIR parts of a RIRS_NOISES root, else every audio file below it."""
    root = Path(root)
    if not root.is_dir():
        raise SertkError(f"{root}: RIR directory not found")
    if not any((root / part).is_dir() for part in RIRS_PARTS):
        return _audio_files(root)
    files = _audio_files(root / "simulated_rirs") if (root / "simulated_rirs").is_dir() else []
    real = root / "real_rirs_isotropic_noises"
    if real.is_dir():
        files += [p for p in _audio_files(real) if "noise" not in p.name.lower()]
    return sorted(files)


def scan_sources(root: Path, files: list[Path], what: str) -> tuple[list[SourceFile], list[str]]:
    """Read the header of every file; (usable files, one message per unreadable or empty file)."""
    usable, skipped = [], []
    for path in files:
        try:
            info = audio_info(path, SAMPLE_RATE)
        except SertkError as err:
            skipped.append(f"{err} ({what} file)")
            continue
        usable.append(SourceFile(path, str(path.relative_to(root)), info.num_samples, info.sample_rate))
    return usable, skipped


def load_sources(root: Path | None, what: str) -> tuple[list[SourceFile], list[str]]:
    """Find and check the ``what`` ("noise" or "rir") files of ``root``; SertkError when none is usable."""
    if root is None:
        return [], []
    root = Path(root).resolve()
    files = find_noise_files(root) if what == "noise" else find_rir_files(root)
    if not files:
        raise SertkError(f"{root}: no .wav or .flac {what} files found")
    usable, skipped = scan_sources(root, files, what)
    for message in skipped[:10]:
        console.print(f"skipped {message}", markup=False)
    if len(skipped) > 10:
        console.print(f"skipped {len(skipped) - 10} more {what} files", markup=False)
    if not usable:
        raise SertkError(f"{root}: none of the {len(files)} {what} files is readable ({skipped[0]})")
    return usable, skipped


def read_source(source: SourceFile, sample_rate: int, start: int = 0, frames: int = -1) -> np.ndarray:
    """First channel of ``source`` at ``sample_rate`` as float32, optionally only [start, start + frames).

    ``start``/``frames`` count samples at ``sample_rate``; a file at another rate is read whole and resampled
    first (see ``SourceFile.frames_at``), at every draw: MUSAN and RIRS_NOISES are 16 kHz like IEMOCAP, so
    this is the rare case. SertkError ("file: reason") when the data cannot be read.
    """
    try:
        if source.sample_rate == sample_rate:
            wave = soundfile.read(
                str(source.path), start=start, frames=frames, dtype="float32", always_2d=True
            )[0]
            return np.ascontiguousarray(wave[:, 0])
        wave = soundfile.read(str(source.path), dtype="float32", always_2d=True)[0][:, 0]
    except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SertkError(f"{source.path}: cannot read audio ({reason})") from None
    wave = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(wave)), source.sample_rate, sample_rate
    )
    wave = wave.numpy()
    return wave[start : start + frames] if frames >= 0 else wave[start:]
