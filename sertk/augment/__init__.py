"""Augmentation: offline copies of training utterances, and on-the-fly transforms of padded feature batches.

Offline (``sertk augment``, stage 4): ``sertk.augment.offline`` writes a data dir with speed-perturbed,
noisy and reverberated copies of the folds' training utterances (``sertk.augment.copies`` makes them with
the waveform operations of ``sertk.augment.perturb``; ``sertk.augment.sources`` finds MUSAN / RIRS_NOISES
files).

Online, on (feats (B, T, D), lengths (B,)) batches: VTLP (``sertk.augment.vtlp``; also the test-time copies
of ``sertk eval --tta vtlp``), SpecAugment masking (``sertk.augment.specaugment``) and mixup
(``sertk.augment.mixup``, which also mixes the targets); class oversampling is a sampler
(``sertk.train.sampler.epoch_order``).
"""

from sertk.augment.mixup import Mixup, MixupConfig, mixup
from sertk.augment.specaugment import SpecAugment, SpecAugmentConfig, spec_augment
from sertk.augment.vtlp import (
    TTA_ALPHAS,
    FixedVtlp,
    RandomVtlp,
    tta_copies,
    vtlp_tta_transforms,
    vtlp_warp,
    warp_spectrogram,
)

__all__ = [
    "TTA_ALPHAS",
    "FixedVtlp",
    "Mixup",
    "MixupConfig",
    "RandomVtlp",
    "SpecAugment",
    "SpecAugmentConfig",
    "mixup",
    "spec_augment",
    "tta_copies",
    "vtlp_tta_transforms",
    "vtlp_warp",
    "warp_spectrogram",
]
