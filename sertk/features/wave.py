"""``--feat wave``: the waveform itself as frames, one sample per frame, (N, 1) per utterance.

For models that run their own front end during training, above all an SSL encoder inside ``ssl-pool``
(SUPERB's upstream + downstream, Yang et al., Interspeech 2021, §3, with the upstream run on the fly
instead of dumped: ``model.encoder``). Frames are samples, so every count is exact: ``utt2num_frames``
holds each utterance's samples at ``sample_rate`` and an ``input`` section's ``max_frames`` or
``segment_frames`` count samples. Storage: ``int16`` (default) keeps 16-bit PCM exactly (the value is
sample / 32768, what a PCM_16 wav reads as; resampled audio is quantised to 16 bits), ``float16`` rounds
to 11 significant bits, ``float32`` keeps everything. Readers and batches always see float32 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from sertk.features.base import FeatureExtractor


@dataclass
class WaveConfig:
    """The YAML of ``--feat wave``."""

    sample_rate: int = 16000  # the SSL encoders read 16 kHz; other rates are resampled on reading
    dtype: Literal["int16", "float16", "float32"] = "int16"  # storage: 16-bit PCM is exact for PCM_16 audio

    def __post_init__(self) -> None:
        if self.sample_rate < 1:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")


class Waveform(FeatureExtractor):
    """Mono samples at ``sample_rate`` as (N, 1) frames; ``num_frames(n) = n``."""

    Config = WaveConfig
    version: ClassVar[int] = 1

    @property
    def dim(self) -> int:
        return 1

    @property
    def storage_dtype(self) -> str:
        return self.cfg.dtype

    def num_frames(self, num_samples: int) -> int:
        return num_samples

    def compute(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return waves.float()[..., None]
