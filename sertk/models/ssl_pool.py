"""ssl-pool: SUPERB's emotion-recognition downstream over the hidden layers of a frozen SSL encoder.

Input frames are a ``--feat ssl`` dump, (B, T, L·D) with the L layers side by side (``layers``/``layer_dim``
in its feat.yaml; ``sertk.features.ssl.layer_layout``). Reading of SUPERB (Yang et al., Interspeech 2021,
§3: "weighted sum of hidden states of all layers" with learnable weights; ER: mean pooling and a linear
classifier) as s3prl implements its emotion task (downstream/emotion/config.yaml: ``projector_dim: 256``,
``UtteranceLevel`` with ``MeanPooling``; the featurizer's weights start at zero and go through a softmax,
no layer norm by default): softmax-weighted sum over the layers -> Linear(D, 256) -> masked mean over
time -> Linear(256, C). No nonlinearity anywhere, as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sertk.errors import SertkError
from sertk.masking import masked_mean
from sertk.models.heads import HEADS, make_head
from sertk.models.pooling import POOLINGS, make_pooling

POOLING_CHOICES = ("mean-std", *POOLINGS)


class StatisticsPooling(nn.Module):
    """Masked mean and standard deviation over time, [mu, sigma] (x-vector statistics pooling, Snyder et
    al. 2018 §2.2), the unweighted counterpart of ``AttentiveMeanStdPooling``; sigma = sqrt(var + 1e-8)."""

    eps = 1e-8

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = 2 * dim

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Moments in float32, as AttentiveMeanStdPooling: E[h^2] - mu^2 cancels badly in half precision.
        frames32 = frames.float()
        mean = masked_mean(frames32, lengths)
        variance = masked_mean(frames32.square(), lengths) - mean.square()
        std = torch.sqrt(variance.clamp(min=0.0) + self.eps)
        return torch.cat([mean, std], dim=-1).to(frames.dtype)


class SslPool(nn.Module):
    """Layer weights (softmax over L) -> projection -> temporal pooling -> head (SUPERB ER downstream).

    ``layer_weights()`` gives the softmax weights; the logits start at zero (uniform average, as s3prl).
    Padded frames (t >= lengths[b]) never mix with real ones: weighting and projection act per frame and the
    poolings mask, so a padded row gives exactly the logits of the utterance alone.
    """

    @dataclass
    class Config:
        """The ``model`` section for arch ssl-pool."""

        num_layers: int = 13  # L per input frame: len(layers) of the dump (13: a base model + CNN output)
        layer_norm: bool = False  # LayerNorm each layer (no affine) before weighting (s3prl option)
        projection_dim: int = 256  # SUPERB ER projector
        pooling: str = "mean"  # "mean" (SUPERB), "mean-std", "attention", "attention-mean-std"
        dropout: float = 0.0  # on the pooled vector
        head: str = "linear"  # "linear" or "cosine"
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)

    def __init__(self, cfg: Config, input_dim: int, num_classes: int):
        super().__init__()
        if cfg.num_layers < 1 or input_dim % cfg.num_layers:
            raise SertkError(
                f"model.num_layers: {cfg.num_layers} layers do not split {input_dim}-dim frames "
                "(set it to len(layers) of the ssl dump's feat.yaml)"
            )
        if cfg.pooling not in POOLING_CHOICES:
            raise SertkError(
                f"model.pooling: unknown pooling {cfg.pooling!r} (known: {', '.join(POOLING_CHOICES)})"
            )
        if cfg.head not in HEADS:
            raise SertkError(f"model.head: unknown head {cfg.head!r} (known: {', '.join(HEADS)})")
        if cfg.projection_dim < 1:
            raise SertkError(f"model.projection_dim: must be positive, got {cfg.projection_dim}")
        self.cfg = cfg
        self.num_layers = cfg.num_layers
        self.layer_dim = input_dim // cfg.num_layers
        self.layer_logits = nn.Parameter(torch.zeros(cfg.num_layers))
        self.projection = nn.Linear(self.layer_dim, cfg.projection_dim)
        if cfg.pooling == "mean-std":
            self.pooling = StatisticsPooling(cfg.projection_dim)
        else:
            self.pooling = make_pooling(cfg.pooling, cfg.projection_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = make_head(cfg.head, self.pooling.out_dim, num_classes, cfg.head_scale)

    def layer_weights(self) -> torch.Tensor:
        """The softmax weights over the L input layers, (L,)."""
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = feats.shape
        layers = feats.view(batch, frames, self.num_layers, self.layer_dim)
        if self.cfg.layer_norm:
            layers = F.layer_norm(layers, (self.layer_dim,))
        mixed = torch.einsum("btld,l->btd", layers, self.layer_weights().to(layers.dtype))
        pooled = self.pooling(self.projection(mixed), lengths)
        return self.head(self.dropout(pooled))
