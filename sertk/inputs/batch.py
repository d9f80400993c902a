"""Normalisation statistics and the one path from FeatureSet rows to the tensors a model is called with.

``model_batch`` applies, in order: the rows' gather (crop, segment, segment scaling) -> a raw-feature
transform (VTLP) -> normalisation -> training augmentations (white noise, SpecAugment) -> fixed padding
(``input.pad: fixed``). The
training loop, validation, ``sertk eval`` and ``sertk infer`` all call it, so they see the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sertk.errors import SertkError
from sertk.inputs.featureset import FeatureSet
from sertk.masking import frame_mask

# A raw-feature transform maps a padded batch to another: (feats, lengths) -> (feats, lengths).
Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def norm_stats(
    fset: FeatureSet, select: list[bool] | None = None, scalar: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every frame of the selected utterances' kept windows (float64 sums).

    Exactly the frames the model sees after cropping, each once (segments overlap; the windows do not).
    ``select`` picks e.g. the neutral utterances of the train part (lstm_attention.txt §4.1). ``scalar``
    gives one mean and std over every value, broadcast to all dimensions (cnn_blstm_vtlp.txt Eq. 5). A
    dimension with zero variance gets std 1, so normalising leaves it centred instead of dividing by zero.
    """
    chosen = [i for i in range(len(fset.utts)) if select is None or select[i]]
    if not chosen:
        raise SertkError("no utterances to compute normalisation statistics from")
    kept = fset.kept.cpu()
    total = np.zeros(fset.dim)
    squares = np.zeros(fset.dim)
    count = 0
    for index in chosen:
        start = int(fset.crop_start[index])
        frames = fset.store.utterance(index)[start : start + int(kept[index])].double().cpu().numpy()
        total += frames.sum(axis=0)
        squares += np.square(frames).sum(axis=0)
        count += len(frames)
    if scalar:
        total, squares, count = (
            np.full(fset.dim, total.sum()),
            np.full(fset.dim, squares.sum()),
            count * fset.dim,
        )
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std[std < 1e-8] = 1.0
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


@dataclass
class Normalizer:
    """(x - mean) / std on real frames; padded frames stay zero so they look the same to every model."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = frame_mask(lengths.to(feats.device), feats.shape[1])[..., None]
        mean, std = self.mean.to(feats.device), self.std.to(feats.device)
        return ((feats - mean) / std) * mask

    @classmethod
    def of(cls, mean: torch.Tensor | None, std: torch.Tensor | None) -> Normalizer | None:
        return None if mean is None or std is None else cls(mean, std)


@dataclass
class WhiteNoise:
    """Gaussian noise of ``std`` on the real frames of normalised training features (lstm_attention.txt §4.1)."""

    std: float
    generator: torch.Generator

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = frame_mask(lengths.to(feats.device), feats.shape[1])[..., None]
        noise = torch.randn(feats.shape, generator=self.generator, device=feats.device)
        return feats + self.std * noise * mask, lengths


def model_batch(
    fset: FeatureSet,
    index: torch.Tensor,
    device: torch.device,
    normalizer: Normalizer | None = None,
    transform: Transform | None = None,
    augment: Sequence[Transform] = (),
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(feats, lengths, extra model kwargs) of rows ``index``, on ``device``, as the model must see them.

    ``transform`` acts on raw features (VTLP), ``augment`` on normalised ones (white noise, SpecAugment),
    both before fixed padding, so they see each row's real length. ``width``: as in ``FeatureSet.batch``.
    """
    feats, lengths = fset.batch(index, width)
    feats, lengths = feats.to(device, non_blocking=True), lengths.to(device, non_blocking=True)
    extra = {k: v.to(device, non_blocking=True) for k, v in fset.word_batch(index).items()}
    if transform is not None:
        feats, lengths = transform(feats, lengths)
    if normalizer is not None:
        feats = normalizer(feats, lengths)
    for step in augment:
        feats, lengths = step(feats, lengths)
    if fset.fixed_pad:
        lengths = torch.full_like(lengths, feats.shape[1])
    return feats, lengths, extra
