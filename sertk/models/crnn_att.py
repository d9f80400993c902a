"""crnn-att: CNN(6) + BLSTM + attentive pooling baseline of crnn_discriminative.txt (§3.1, §3.3, §4.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sertk.errors import SertkError
from sertk.masking import frame_mask, zero_padding
from sertk.models.heads import HEADS, make_head
from sertk.models.layers import conv_output_length, folded_conv
from sertk.models.pooling import POOLINGS, make_pooling


class ConvBlock(nn.Module):
    """One conv sub-module (§3.1): 3x3 conv, batch norm, ReLU, masked 2x2 average pooling, dropout.

    The paper lists conv, BN, pooling and dropout; the ReLU is our reading (a conv stack needs a
    nonlinearity). Padded frames are zeroed before pooling and each pooling window averages only its valid
    frames, so a padded utterance gives exactly the same values as the utterance alone (in eval mode).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, pool: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, F, T) with zeros on padded frames -> (B, C', F', T'), lengths (B,) -> T' lengths."""
        if not self.training and not torch.is_grad_enabled():
            return self._infer(x, lengths)
        mask = frame_mask(lengths, x.shape[-1]).to(x.dtype)[:, None, None, :]
        x = F.relu(self.norm(self.conv(x))) * mask
        if self.pool > 1:
            # Ceil-mode windows average only in-bounds cells; dividing by the pooled time mask (the share of
            # valid frames in each window) turns that into an average over valid frames only.
            summed = F.avg_pool2d(x, self.pool, ceil_mode=True)
            valid = F.avg_pool1d(mask[:, :, 0, :], self.pool, ceil_mode=True)[:, :, None, :]
            x = summed / valid.clamp(min=1e-3)
            lengths = conv_output_length(lengths, self.pool, self.pool, padding=0, ceil_mode=True)
        return self.dropout(x), lengths

    def _infer(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` without autograd, in place: batch norm folded into the conv, no mask when nothing is padded.

        The block is memory-bound on its (B, C, F, T) maps, so each pass saved over them counts; a full batch
        (fixed padding, or equal lengths) has an all-ones mask, whose product and quotient are the identity.
        """
        weight, bias = folded_conv(self.conv, self.norm)
        x = F.relu_(F.conv2d(x, weight, bias, padding=self.conv.padding))
        full = bool((lengths == x.shape[-1]).all())
        mask = None if full else frame_mask(lengths, x.shape[-1]).to(x.dtype)[:, None, None, :]
        if mask is not None:
            x.mul_(mask)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool, ceil_mode=True)
            if mask is not None:
                x.div_(
                    F.avg_pool1d(mask[:, :, 0, :], self.pool, ceil_mode=True)[:, :, None, :].clamp(min=1e-3)
                )
            lengths = conv_output_length(lengths, self.pool, self.pool, padding=0, ceil_mode=True)
        return x, lengths


class CrnnAtt(nn.Module):
    """CNN + BLSTM + attentive pooling + logits (crnn_discriminative.txt §3.1, Fig. 1; Eq. 4-5 for pooling).

    Input (B, T, 40) log-Mel frames. Five ceil-mode 2x2 pools take 40 Mel bins to 2 (40-20-10-5-3-2) and
    T frames to ceil(T/32); the last 64 channels x 2 bins (128 values) per frame feed the BLSTM through
    pack_padded_sequence, and its outputs are pooled with the padded frames masked. Outputs in eval mode are
    exactly padding-invariant; in training, batch-norm statistics also see the zeroed padded positions, as
    the paper's zero-padded 7.5 s inputs do.

    Reading of "BLSTM, with 64 memory cells": 32 cells per direction, 64 in total, which makes the pooled
    feature "a compact deep feature with fixed-length of 64" (§3.1) and makes [mu, sigma] add 64 x 4 = 256
    logit weights (0.067%, the paper's "around 0.07%"). Parameter counts for 4 classes (this class, PyTorch
    with two LSTM bias vectors): lstm_cells=32: 380,292 (paper: 383K), +256 with attention-mean-std;
    lstm_cells=64 (64 per direction): 450,692, +512 (0.11%). With pool_last=true (6 pools, 1 Mel bin,
    64 BLSTM inputs, T/64 frames) the counts are 363,908 (32 cells) and 417,924 (64 cells).
    """

    # Most model rows per batch at CPU inference (sertk.models.predict.rows_per_batch): one 7.5 s conv map of
    # 128 channels x 40 bins is 15 MB, and batching spills it from the cache (tools/bench_infer.py).
    cpu_batch_rows = 1

    @dataclass
    class Config:
        """The ``model`` section for arch crnn-att."""

        conv_channels: list[int] = field(default_factory=lambda: [128, 128, 64, 64, 64, 64])  # filters/block
        kernel: int = 3  # square conv kernel size (odd, "same" padding)
        pool: int = 2  # square average pooling size and stride (ceil mode over freq and time)
        pool_last: bool = False  # pool after the last conv block too (the paper skips it)
        dropout: float = 0.25  # dropout after each conv block
        lstm_cells: int = 32  # LSTM cells per direction (pooled feature = 2 x lstm_cells)
        pooling: str = "attention"  # "attention" (Eq. 4), "attention-mean-std" (Eq. 4-5), or "mean"
        head: str = "linear"  # "linear" (affine logits) or "cosine" (s*cos theta, for the ams loss)
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)

        def __post_init__(self) -> None:
            if not self.conv_channels or min(self.conv_channels) < 1:
                raise ValueError(f"conv_channels: need at least one positive size, got {self.conv_channels}")
            if self.kernel < 1 or self.kernel % 2 == 0:
                raise ValueError(f"kernel: must be odd and positive, got {self.kernel}")
            if self.pool < 1:
                raise ValueError(f"pool: must be >= 1, got {self.pool}")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
            if self.lstm_cells < 1:
                raise ValueError(f"lstm_cells: must be >= 1, got {self.lstm_cells}")
            if self.pooling not in POOLINGS:
                raise ValueError(f"pooling: unknown {self.pooling!r} (known: {', '.join(POOLINGS)})")
            if self.head not in HEADS:
                raise ValueError(f"head: unknown {self.head!r} (known: {', '.join(HEADS)})")

    def __init__(self, cfg: CrnnAtt.Config, input_dim: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.input_dim = input_dim
        blocks = []
        in_channels, freq = 1, input_dim
        for i, channels in enumerate(cfg.conv_channels):
            pool = cfg.pool if (cfg.pool_last or i < len(cfg.conv_channels) - 1) else 1
            blocks.append(ConvBlock(in_channels, channels, cfg.kernel, pool, cfg.dropout))
            in_channels, freq = channels, conv_output_length(freq, pool, pool, padding=0, ceil_mode=True)
        self.blocks = nn.ModuleList(blocks)
        self.lstm = nn.LSTM(in_channels * freq, cfg.lstm_cells, batch_first=True, bidirectional=True)
        self.pooling = make_pooling(cfg.pooling, 2 * cfg.lstm_cells)
        self.head = make_head(cfg.head, self.pooling.out_dim, num_classes, cfg.head_scale)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, D) float, lengths (B,) long -> logits (B, C); frames t >= lengths[b] are ignored."""
        if feats.dim() != 3 or feats.shape[-1] != self.input_dim:
            raise SertkError(
                f"crnn-att: expected features (B, T, {self.input_dim}), got {tuple(feats.shape)}"
            )
        # Zero the padded frames so the first conv sees the same zeros past the end as for a lone utterance;
        # (B, T, D) -> (B, 1, D, T): channels first, frequency as image height, time as width.
        x = zero_padding(feats, lengths).transpose(1, 2)[:, None]
        for block in self.blocks:
            x, lengths = block(x, lengths)
        batch, channels, freq, frames = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (final, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=frames)
        # Luong query: the final state of each direction (forward at the last valid frame, backward at 0).
        query = torch.cat([final[0], final[1]], dim=-1)
        return self.head(self.pooling(out, lengths, query))
