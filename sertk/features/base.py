"""The interface every feature type implements; see ``sertk.features.FEATURES`` for the registry."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch


class FeatureExtractor(abc.ABC):
    """Turns a batch of waveforms into frame-level features, on whatever device the input is on.

    Subclasses set ``Config`` (a dataclass whose fields are the YAML keys of the feature config, including
    ``sample_rate``) and ``version``, and implement ``dim``, ``num_frames`` and ``compute``.
    ``storage_dtype`` is how a dump stores the float32 ``compute`` output (``sertk.features.io.encode_frames``):
    float32 unless the feature type says otherwise (SSL layers in float16, waveforms as 16-bit PCM).

    ``version`` (an int, starting at 1) names the numbers the extractor produces for a given config. Bump it
    in the same commit as any change to the code that alters them (a fixed definition, a new default path,
    different rounding beyond float noise), never for refactors that keep them. The provenance system folds
    the feature name, its config and this version into a feature dump's record, so a changed extractor
    invalidates old dumps instead of silently mixing old and new features.
    """

    Config: ClassVar[type]
    version: ClassVar[int]

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def storage_dtype(self) -> str:
        """float32, float16 or int16 (``sertk.features.io.STORAGE_DTYPES``)."""
        return "float32"

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Feature dimension D."""

    @abc.abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Number of valid frames for a waveform of ``num_samples`` samples."""

    @abc.abstractmethod
    def compute(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Features of a zero-padded batch.

        waves: (B, N) float32 in [-1, 1] at ``sample_rate``; lengths: (B,) valid samples per row.
        Returns (B, T, D) float32 where row b's first ``num_frames(lengths[b])`` frames are exactly what
        the utterance alone would give; frames after that are unspecified (callers trim them).
        """
