"""ssl-pool: SUPERB's emotion-recognition downstream over the hidden layers of an SSL encoder.

Two ways in, one model:

- dumped layers (``--feat ssl``): frames (B, T, L·D) with the L layers side by side (``layers`` /
  ``layer_dim`` in the dump's feat.yaml; ``sertk.features.ssl.layer_layout``);
- on the fly (``model.encoder``: the keys of an ssl feature config, ``--feat wave``): frames are samples,
  (B, N, 1) with ``lengths`` in samples; the model holds the ``SslEncoder`` and runs it in ``forward``,
  frozen (no gradient, eval mode) unless ``train.finetune`` unfreezes it (``set_finetune``).

Reading of SUPERB (Yang et al., Interspeech 2021, §3: "weighted sum of hidden states of all layers" with
learnable weights; ER: mean pooling and a linear classifier) as s3prl implements its emotion task
(downstream/emotion/config.yaml: ``projector_dim: 256``, ``UtteranceLevel`` with ``MeanPooling``; the
featurizer's weights start at zero and go through a softmax, no layer norm by default): softmax-weighted
sum over the layers -> Linear(D, 256) -> masked mean over time -> Linear(256, C). No nonlinearity
anywhere, as there. ``activation: relu`` and ``use_layers: [-1]`` give EmoBox's example downstream (Ma et
al., Interspeech 2024; its SpeechBrain recipe: the last layer, Linear(D, 256) + ReLU, mean, Linear).

A frozen encoder's weights are the checkpoint's: ``state_dict`` leaves them out (a checkpoint.pt per epoch
would otherwise carry hundreds of MB of unchanged weights) and ``load_state_dict`` takes them from the
checkpoint again, whose sha256 the resolved ``model.encoder`` pins; every other key loads strictly. A
fine-tuned encoder's weights are saved and loaded with the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sertk.config import from_dict, to_dict
from sertk.errors import SertkError
from sertk.features.ssl import SslConfig, checkpoint_digest, layer_layout, load_encoder
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
    poolings mask, so a padded row gives exactly the logits of the utterance alone (on the fly, the encoder
    gives each row what it alone gives: ``SslEncoder``).
    """

    @dataclass
    class Config:
        """The ``model`` section for arch ssl-pool."""

        # L per input frame: 0 = from the ssl dump's feat.yaml (sertk train fills it in) or the encoder;
        # given, it must agree with them.
        num_layers: int = 0
        use_layers: list[int] | None = None  # positions on the layer axis to weight (-1: the last); None: all
        layer_norm: bool = False  # LayerNorm each layer (no affine) before weighting (s3prl option)
        projection_dim: int = 256  # SUPERB ER projector
        activation: Literal["none", "relu"] = "none"  # after the projection: none (SUPERB), relu (EmoBox)
        pooling: str = "mean"  # "mean" (SUPERB), "mean-std", "attention", "attention-mean-std"
        dropout: float = 0.0  # on the pooled vector
        head: str = "linear"  # "linear" or "cosine"
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)
        # The keys of an ssl feature config (checkpoint, torchaudio_builder, layers, chunking): the encoder
        # runs inside the model on --feat wave input. Empty: the input is a --feat ssl dump.
        encoder: dict[str, Any] = field(default_factory=dict)

    def __init__(self, cfg: Config, input_dim: int, num_classes: int):
        super().__init__()
        self.encoder = None
        self.finetune = False
        self.encoder_in_state = False  # whether state_dict carries the encoder (fine-tuned weights)
        if cfg.encoder:
            cfg = self._load_encoder(cfg, input_dim)
            layer_dim = self.encoder.layer_dim
        else:
            if cfg.num_layers < 1 or input_dim % cfg.num_layers:
                raise SertkError(
                    f"model.num_layers: {cfg.num_layers} layers do not split {input_dim}-dim frames "
                    "(set it to len(layers) of the ssl dump's feat.yaml; sertk train does when it is 0)"
                )
            layer_dim = input_dim // cfg.num_layers
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
        self.layer_dim = layer_dim
        self.use_layers = self._positions(cfg.use_layers, cfg.num_layers)
        weighted = cfg.num_layers if self.use_layers is None else len(self.use_layers)
        self.layer_logits = nn.Parameter(torch.zeros(weighted))
        self.projection = nn.Linear(self.layer_dim, cfg.projection_dim)
        if cfg.pooling == "mean-std":
            self.pooling = StatisticsPooling(cfg.projection_dim)
        else:
            self.pooling = make_pooling(cfg.pooling, cfg.projection_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = make_head(cfg.head, self.pooling.out_dim, num_classes, cfg.head_scale)
        self.register_state_dict_post_hook(_drop_frozen_encoder)
        self.register_load_state_dict_pre_hook(_restore_frozen_encoder)

    def _load_encoder(self, cfg: Config, input_dim: int) -> Config:
        """Build the frozen encoder of ``cfg.encoder``; the config comes back with its layers, layer_dim
        and the checkpoint's sha256 resolved (so a changed checkpoint is refused when the model is rebuilt)."""
        if input_dim != 1:
            raise SertkError(
                f"model.encoder: the encoder runs on waveforms (--feat wave, one sample per frame), "
                f"got {input_dim}-dim frames"
            )
        # Loading draws nothing from the caller's generator: the downstream's initial weights are those of
        # the same seed on dumped layers, so both paths train alike.
        with torch.random.fork_rng(devices=[]):
            self.encoder, resolved = load_encoder(from_dict(SslConfig, cfg.encoder, where="model.encoder"))
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        layers = 1 if resolved.average_layers else len(resolved.layers)
        if cfg.num_layers and cfg.num_layers != layers:
            raise SertkError(
                f"model.num_layers: {cfg.num_layers}, but the encoder gives {layers} layer(s) "
                f"(model.encoder layers {resolved.layers})"
            )
        return dataclasses.replace(cfg, num_layers=layers, encoder=to_dict(resolved))

    @staticmethod
    def _positions(use_layers: list[int] | None, num_layers: int) -> list[int] | None:
        if use_layers is None:
            return None
        positions = [i + num_layers if i < 0 else i for i in use_layers]
        if (
            not positions
            or any(not 0 <= i < num_layers for i in positions)
            or len(set(positions)) < len(positions)
        ):
            raise SertkError(
                f"model.use_layers: distinct positions in 0..{num_layers - 1} (or negative from the end), "
                f"got {use_layers}"
            )
        return positions

    @classmethod
    def fit_to_features(cls, cfg: Config, feat: str, feat_config: dict) -> Config:
        """The config for a feature dump: ``num_layers`` from an ssl dump's layout (0 = take it, else it must
        agree); with an encoder, the input must be ``wave`` at the encoder's 16 kHz and the checkpoint path
        absolute (eval and infer may run elsewhere)."""
        if cfg.encoder:
            if feat != "wave":
                raise SertkError(
                    f"model.encoder runs the SSL encoder inside the model on waveforms: use feat wave, not {feat} "
                    "(or drop model.encoder to train on the dumped layers)"
                )
            encoder = from_dict(SslConfig, cfg.encoder, where="model.encoder")
            rate = feat_config.get("sample_rate")
            if rate != encoder.sample_rate:
                raise SertkError(
                    f"model.encoder reads {encoder.sample_rate} Hz audio, the wave dump holds {rate} Hz"
                )
            checkpoint = str(Path(encoder.checkpoint).expanduser().resolve())
            return dataclasses.replace(cfg, encoder={**cfg.encoder, "checkpoint": checkpoint})
        if feat == "wave":
            raise SertkError(
                "feat wave: ssl-pool needs model.encoder to run on waveforms (sertk train --ssl-encoder FILE, "
                "or the recipe's --ssl-checkpoint)"
            )
        if feat != "ssl":
            return cfg
        layers, _ = layer_layout(feat_config)
        if cfg.num_layers and cfg.num_layers != layers:
            raise SertkError(
                f"model.num_layers: {cfg.num_layers}, but the ssl dump holds {layers} layer(s) per frame"
            )
        return dataclasses.replace(cfg, num_layers=layers)

    @staticmethod
    def input_digests(cfg: Config) -> dict[str, str]:
        """Content digests of the files the model reads when it is built: the encoder's checkpoint."""
        if not cfg.encoder:
            return {}
        return {
            "encoder": "sha256:" + checkpoint_digest(from_dict(SslConfig, cfg.encoder, where="model.encoder"))
        }

    def set_finetune(self, enabled: bool) -> None:
        """Train the encoder too (its dropout active, its weights saved in the state dict) or freeze it."""
        if self.encoder is None:
            raise SertkError(
                "train.finetune: this ssl-pool reads dumped layers; fine-tuning needs the encoder inside the "
                "model (model.encoder with feat wave)"
            )
        self.finetune = enabled
        self.encoder_in_state = self.encoder_in_state or enabled
        self.encoder.requires_grad_(enabled)
        self.train(self.training)

    def train(self, mode: bool = True) -> SslPool:
        super().train(mode)
        if self.encoder is not None and not self.finetune:
            self.encoder.eval()  # frozen: no dropout, as when its layers are dumped
        return self

    def layer_weights(self) -> torch.Tensor:
        """The softmax weights over the weighted input layers, (L,) (or len(use_layers))."""
        return torch.softmax(self.layer_logits, dim=0)

    def encode(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) samples -> hidden (B, T, L, D) and frame lengths (B,); without gradients when frozen."""
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            hidden, frame_lengths = self.encoder(waves, lengths)
        if self.cfg.encoder.get("average_layers"):
            hidden = hidden.mean(dim=2, keepdim=True)
        return hidden, frame_lengths

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            layers, lengths = self.encode(feats[..., 0], lengths)
        else:
            batch, frames, _ = feats.shape
            layers = feats.view(batch, frames, self.num_layers, self.layer_dim)
        if self.use_layers is not None:
            layers = layers[:, :, self.use_layers]
        if self.cfg.layer_norm:
            layers = F.layer_norm(layers, (self.layer_dim,))
        mixed = torch.einsum("btld,l->btd", layers, self.layer_weights().to(layers.dtype))
        projected = self.projection(mixed)
        if self.cfg.activation == "relu":
            projected = torch.relu(projected)
        pooled = self.pooling(projected, lengths)
        return self.head(self.dropout(pooled))


def _drop_frozen_encoder(module: SslPool, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: a frozen encoder's weights stay in its checkpoint file, not in ours."""
    if module.encoder is not None and not module.encoder_in_state:
        for key in [k for k in state_dict if k.startswith(prefix + "encoder.")]:
            del state_dict[key]


def _restore_frozen_encoder(
    module: SslPool, state_dict: dict, prefix: str, local_metadata, strict, missing, unexpected, errors
) -> None:
    """load_state_dict pre-hook: a state without encoder weights gets the checkpoint's (already loaded and
    sha256-checked), so every other key still loads strictly; one with them was fine-tuned and keeps them."""
    if module.encoder is None:
        return
    mine = prefix + "encoder."
    if any(k.startswith(mine) for k in state_dict):
        module.encoder_in_state = True
        return
    for key, value in module.encoder.state_dict().items():
        state_dict[mine + key] = value
