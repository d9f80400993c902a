"""On-the-fly augmentations applied to padded feature batches as ``(feats, lengths) -> (feats, lengths)``.

VTLP (``sertk.augment.vtlp``) warps spectrograms during training and gives the test-time copies of
``sertk eval --tta vtlp``; class oversampling is a sampler (``sertk.train.sampler.epoch_order``).
"""

from sertk.augment.vtlp import (
    TTA_ALPHAS,
    FixedVtlp,
    RandomVtlp,
    vtlp_tta_transforms,
    vtlp_warp,
    warp_spectrogram,
)

__all__ = ["TTA_ALPHAS", "FixedVtlp", "RandomVtlp", "vtlp_tta_transforms", "vtlp_warp", "warp_spectrogram"]
