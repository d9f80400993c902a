"""lstm-attn: dense layers + BiLSTM + mean, Zhou, Yang or LSTM-attention pooling (lstm_attention.txt §3).

Every pooling is a weighted sum R = sum_t alpha_t h_t of the first BiLSTM's outputs h_t (Eq. 2); they differ
only in how alpha (B, T) is computed, which ``LstmAttn.attention`` exposes for plotting. Padded frames
(t >= lengths[b]) never reach a valid frame's BiLSTM output (``BiLstm``) and get exactly zero weight, so in
eval mode an utterance's logits do not depend on how much padding its batch adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sertk.errors import SertkError
from sertk.masking import frame_mask, masked_softmax
from sertk.models.heads import HEADS, make_head

POOLINGS = ("mean", "zhou", "yang", "lstm")


def reverse_valid(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first lengths[b] frames in time and leave its padded tail where it is."""
    steps = torch.arange(frames.shape[1], device=frames.device)[None, :]
    last = lengths.to(frames.device)[:, None] - 1
    index = torch.where(steps <= last, last - steps, steps)
    return frames.gather(1, index[..., None].expand_as(frames))


class BiLstm(nn.Module):
    """A bidirectional LSTM that never lets padded frames into the valid frames' outputs.

    The forward LSTM reads the padded batch as it is (padding comes after every valid frame); the backward
    LSTM reads each row reversed within its length, so it too starts on real frames. Two plain LSTM calls
    instead of one over a PackedSequence: same outputs, and on CPU about 6x faster for 16 x 500 frames.
    Outputs (B, T, 2 x cells) = [forward, backward], zero on padded frames.
    """

    def __init__(self, input_dim: int, cells: int):
        super().__init__()
        self.forward_lstm = nn.LSTM(input_dim, cells, batch_first=True)
        self.backward_lstm = nn.LSTM(input_dim, cells, batch_first=True)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ahead, _ = self.forward_lstm(frames)
        behind, _ = self.backward_lstm(reverse_valid(frames, lengths))
        mask = frame_mask(lengths.to(frames.device), frames.shape[1]).to(ahead.dtype)[..., None]
        return torch.cat([ahead, reverse_valid(behind, lengths)], dim=-1) * mask


class MeanWeights(nn.Module):
    """The baseline's mean temporal pooling as weights: alpha_t = 1 / length on valid frames (§3)."""

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = frame_mask(lengths, frames.shape[1]).to(frames.dtype)
        return mask / lengths.clamp(min=1).to(frames.dtype)[:, None]


class ZhouWeights(nn.Module):
    """Zhou et al. 2016's single attention vector: alpha = softmax(w^T tanh(H)) (lstm_attention.txt Eq. 1-4).

    The tanh on H is Zhou et al.'s (M = tanh(H)); the paper's Eq. 1 writes M = w^T H. A bias would cancel in
    the softmax, so there is none.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.vector = nn.Linear(dim, 1, bias=False)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.vector(torch.tanh(frames)).squeeze(-1), lengths)


class YangWeights(nn.Module):
    """Yang et al. 2016's attention: u_t = tanh(W h_t + b), alpha = softmax(u_t^T u_w) (§3, Eq. 1-4 on U)."""

    def __init__(self, dim: int, units: int):
        super().__init__()
        self.proj = nn.Linear(dim, units)
        self.context = nn.Linear(units, 1, bias=False)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.context(torch.tanh(self.proj(frames))).squeeze(-1), lengths)


class LstmWeights(nn.Module):
    """The proposed attention (§2, Fig. 2): a second BiLSTM gives H', alpha_t = sigmoid(w^T h'_t) (Eq. 1).

    The sigmoid replaces the softmax "normalization" (§2), so by default the weights are used as they are:
    R = sum_t alpha_t h_t, Eq. 2 with sigmoid alpha and no division. With ``normalize`` the weights are
    divided by their sum over the valid frames (a weighted mean, the same scale as mean pooling): a variant,
    not the paper's. Eq. 1 has no bias, so w has none.
    """

    def __init__(self, dim: int, cells: int, normalize: bool):
        super().__init__()
        self.lstm = BiLstm(dim, cells)
        self.vector = nn.Linear(2 * cells, 1, bias=False)
        self.normalize = normalize

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        context = self.lstm(frames, lengths)
        mask = frame_mask(lengths, frames.shape[1]).to(frames.dtype)
        alpha = torch.sigmoid(self.vector(context).squeeze(-1)) * mask
        if self.normalize:
            alpha = alpha / alpha.sum(dim=1, keepdim=True)
        return alpha


def make_weights(cfg: LstmAttn.Config, dim: int) -> nn.Module:
    """The module computing alpha (B, T) from BiLSTM outputs (B, T, dim) for ``cfg.pooling``."""
    if cfg.pooling == "zhou":
        return ZhouWeights(dim)
    if cfg.pooling == "yang":
        return YangWeights(dim, cfg.yang_units)
    if cfg.pooling == "lstm":
        return LstmWeights(dim, cfg.attention_cells, cfg.normalize_sigmoid)
    return MeanWeights()


class LstmAttn(nn.Module):
    """3 x (dense 256, ReLU, dropout) per frame, BiLSTM 128 per direction, attention pooling, dropout, logits.

    lstm_attention.txt §3, Fig. 1-2. Dropout (p = 1 - keep 0.9) follows each dense layer and the pooled
    vector, never inside the attention (§3: "dropout is applied on all layers apart from the attention
    model"). Parameters for 32 inputs and 4 classes: mean 536,324; zhou +256; yang +66,048 (256 units);
    lstm +395,520 (128 cells per direction).
    """

    @dataclass
    class Config:
        """The ``model`` section for arch lstm-attn."""

        dense_layers: int = 3  # ReLU fully-connected layers applied to every frame
        dense_units: int = 256
        lstm_cells: int = 128  # per direction: the pooled vector has 2 x lstm_cells values
        pooling: str = "lstm"  # "mean" (baseline), "zhou", "yang" or "lstm" (the proposed one)
        yang_units: int = 256  # output size of Yang's dense layer
        attention_cells: int = 128  # cells per direction of the attention BiLSTM (pooling lstm)
        normalize_sigmoid: bool = False  # divide the sigmoid weights by their sum (not in the paper)
        dropout: float = 0.1  # drop probability (the paper's keep probability 0.9)
        head: str = "linear"  # "linear" (the softmax classifier) or "cosine"
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)

        def __post_init__(self) -> None:
            if self.dense_layers < 0:
                raise ValueError(f"dense_layers: must be >= 0, got {self.dense_layers}")
            sizes = (self.dense_units, self.lstm_cells, self.yang_units, self.attention_cells)
            if min(sizes) < 1:
                raise ValueError(
                    "dense_units, lstm_cells, yang_units and attention_cells must be >= 1, "
                    f"got {', '.join(map(str, sizes))}"
                )
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
            if self.pooling not in POOLINGS:
                raise ValueError(f"pooling: unknown {self.pooling!r} (known: {', '.join(POOLINGS)})")
            if self.head not in HEADS:
                raise ValueError(f"head: unknown {self.head!r} (known: {', '.join(HEADS)})")

    def __init__(self, cfg: LstmAttn.Config, input_dim: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.input_dim = input_dim
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(cfg.dense_layers):
            layers += [nn.Linear(width, cfg.dense_units), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = cfg.dense_units
        self.dense = nn.Sequential(*layers)
        self.lstm = BiLstm(width, cfg.lstm_cells)
        dim = 2 * cfg.lstm_cells
        self.attend = make_weights(cfg, dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = make_head(cfg.head, dim, num_classes, cfg.head_scale)

    def _encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BiLSTM outputs H (B, T, 2 x lstm_cells) and attention weights alpha (B, T)."""
        if feats.dim() != 3 or feats.shape[-1] != self.input_dim:
            raise SertkError(
                f"lstm-attn: expected features (B, T, {self.input_dim}), got {tuple(feats.shape)}"
            )
        lengths = lengths.clamp(1, feats.shape[1])
        frames = self.lstm(self.dense(feats), lengths)
        return frames, self.attend(frames, lengths)

    def attention(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Attention weights alpha (B, T) of each frame (1 / length for mean pooling), 0 on padded frames."""
        return self._encode(feats, lengths)[1]

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, D), lengths (B,) -> logits (B, C): R = sum_t alpha_t h_t (Eq. 2), dropout, logits."""
        frames, alpha = self._encode(feats, lengths)
        pooled = torch.einsum("bt,btd->bd", alpha, frames)
        return self.head(self.dropout(pooled))
