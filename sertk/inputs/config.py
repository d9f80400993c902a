"""The ``input`` section of an experiment config: how an utterance's features become model input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sertk.augment.mixup import MixupConfig
from sertk.augment.specaugment import SpecAugmentConfig


@dataclass
class InputConfig:
    """Cropping, fixed-length padding, segments and their scaling, normalisation, noise and VTLP.

    The order in which they act on a batch: crop / segment (rows) -> segment scaling -> VTLP -> normalisation
    -> white noise -> SpecAugment -> fixed padding -> mixup (training rows only for noise, SpecAugment, mixup). Every key changes what the model sees, so every key is in the
    experiment's provenance.
    """

    max_frames: int = 0  # 0 = no limit
    # Which max_frames window a longer utterance keeps. "random" draws a fresh window for every training
    # utterance each epoch (seeded by seed and epoch); validation and test rows use the centre window then.
    crop: Literal["head", "random", "center"] = "head"
    # "batch": rows are padded to the longest row of their batch and the model masks the padding;
    # "fixed": every row is zero-padded to max_frames (or segment_frames) and the model sees the zeros as
    # frames, as the papers' fixed-size inputs do (lstm_attention.txt: 500 frames; crnn_discriminative.txt:
    # 7.5 s). The zeros are added after normalisation, so they are zeros of the normalised features.
    pad: Literal["batch", "fixed"] = "batch"
    normalize: Literal["none", "global", "global-scalar", "neutral"] = "none"
    segment_frames: int = 0  # 0 = whole utterances (attention_pooling_cnn.txt: 200 = 2 s)
    segment_shift_train: int = 100
    segment_shift_test: int = 40
    # attention_pooling_cnn.txt §2.1 / Eq. 1: each segment's matrix mapped linearly onto [-1, 1] (min and
    # max over its real frames), then mu-law companded with segment_mu. "none" leaves rows as dumped.
    segment_scaling: Literal["none", "minmax-mulaw"] = "none"
    segment_mu: float = 255.0
    white_noise_std: float = 0.0  # on normalised training features (lstm_attention.txt: sigma^2 = 0.4)
    # VTLP of a linear-frequency spectrogram (cnn_blstm_vtlp.txt §2): "utterance" = one alpha per spectrogram
    # on train and validation (the paper's best), "epoch" = one alpha per epoch for all training rows only.
    vtlp: Literal["none", "utterance", "epoch"] = "none"
    vtlp_range: list[float] = field(default_factory=lambda: [0.9, 1.1])  # alpha ~ U(low, high)
    vtlp_boundary: float = 0.9  # f0 / f_max of Eq. 4
    tta: Literal["none", "vtlp"] = "none"  # sertk eval's default: vtlp = 11 copies, majority vote
    # Training only, on normalised features (after noise): SpecAugment masks (Park et al. 2019) and mixup
    # of two rows' features and targets (Zhang et al. 2018); the defaults do nothing.
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)

    def __post_init__(self) -> None:
        if len(self.vtlp_range) != 2 or not 0 < self.vtlp_range[0] <= self.vtlp_range[1]:
            raise ValueError(
                f"input.vtlp_range must be [low, high] with 0 < low <= high, got {self.vtlp_range}"
            )
        if not 0 < self.vtlp_boundary < 1 or self.vtlp_boundary * max(self.vtlp_range[1], 1.1) >= 1:
            # alpha * f0 must stay below f_max (for training and the TTA copies up to 1.1) or Eq. 4 folds over.
            raise ValueError(
                f"input.vtlp_boundary must be in (0, 1) with boundary * max(alpha) < 1, got {self.vtlp_boundary}"
            )
        if self.max_frames < 0 or self.segment_frames < 0 or self.white_noise_std < 0:
            raise ValueError("input.max_frames, input.segment_frames and input.white_noise_std must be >= 0")
        if self.segment_frames and (self.segment_shift_train < 1 or self.segment_shift_test < 1):
            raise ValueError("input.segment_shift_train and input.segment_shift_test must be >= 1")
        if self.pad == "fixed" and not (self.max_frames or self.segment_frames):
            raise ValueError("input.pad fixed needs input.max_frames (or input.segment_frames) > 0")
        if self.segment_scaling != "none" and not self.segment_frames:
            raise ValueError("input.segment_scaling needs input.segment_frames > 0")
        if self.segment_mu <= 0:
            raise ValueError(f"input.segment_mu must be > 0, got {self.segment_mu}")

    @property
    def width(self) -> int:
        """The fixed row width in frames (segments, or pad fixed), 0 when rows keep their own lengths."""
        if self.segment_frames:
            return self.segment_frames
        return self.max_frames if self.pad == "fixed" else 0
