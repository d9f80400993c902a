"""CNN with time- and frequency-specific first-layer filters and a selectable global pooling (Li et al. 2018).

Input (B, T, D) spectrogram segments become (B, 1, D=freq, T=time) images. Conv1 concatenates groups of
differently shaped filters (8 of 10×2 and 8 of 2×8, freq×time, §2.3); then 3×3 convs (32, 48, 64, 80),
each with BN + ReLU, with 2×2 max pooling after the first two; then one of the §2.4 poolings:
``gap`` (Eq. 3), ``bilinear`` (second-order, Lin et al. 2015) or ``attention`` (Eq. 9-10). With
``channels: []`` Conv1 is followed by the pooling directly: §3.2's filter-shape sweep (Fig. 2), one group
of 16 filters + GAP + FC (16:4).

Padding: time steps t >= lengths[b] are zeroed in the input and by every batch norm, so each convolution
sees exactly the zero padding the utterance alone would get; they are excluded from batch-norm statistics
and masked in every pooling. Max pooling uses ceil mode, so a pooled step is valid when it covers at least one valid step:
valid length ceil(len / 2); its padded partner is a zero after the ReLU and never wins the max.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sertk.errors import SertkError
from sertk.masking import frame_mask, masked_mean, masked_softmax, zero_padding
from sertk.models.heads import make_head
from sertk.models.layers import MaskedBatchNorm, conv_output_length, folded_conv, same_padding

POOLINGS = ("gap", "bilinear", "attention")


def global_average_pool(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """GAP over the valid positions: (B, C, H, W) maps, (B,) valid widths -> (B, C); the 1ᵀX of Eq. 3 / count.

    Every frequency row has the same valid width, so the mean over valid (h, w) is the mean over h of the
    masked mean over w.
    """
    batch, channels, height, width = x.shape
    return masked_mean(x.flatten(1, 2).transpose(1, 2), lengths).view(batch, channels, height).mean(dim=2)


def bilinear_pool(x: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Second-order pooling: mean of xxᵀ over valid positions, signed sqrt, l2-normalised (Lin et al. 2015).

    (B, C, H, W) maps, (B,) valid widths -> (B, C·C). Li et al. 2018 §3.3 (CNN_TF_Bilinear); Eq. 4's XᵀX
    averaged over positions. The sqrt's argument is floored at ``eps`` so its gradient stays finite at zero.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        valid = frame_mask(lengths, x.shape[-1])[:, None, None, :]
        flat = (x.to(torch.promote_types(x.dtype, torch.float32)) * valid).flatten(2)
        count = lengths.to(flat.dtype) * x.shape[2]
        second = torch.bmm(flat, flat.transpose(1, 2)).flatten(1) / count[:, None]
        signed_root = torch.sign(second) * torch.sqrt(second.abs().clamp_min(eps))
        return F.normalize(signed_root, dim=1)


def attention_pool(top_down: torch.Tensor, bottom_up: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """score(k) = 1ᵀ(X a_k ∘ softmax(X b)) over valid positions; Li et al. 2018 Eq. 9-10.

    top_down: (B, K, H, W) class-specific maps X a_k; bottom_up: (B, 1, H, W) class-agnostic map X b,
    softmaxed over the valid positions (the first lengths[b] of W), so the sum is an attention-weighted
    spatial average. -> (B, K).
    """
    dtype = torch.promote_types(top_down.dtype, torch.float32)
    with torch.autocast(device_type=top_down.device.type, enabled=False):
        height = bottom_up.shape[2]
        # Time-major positions (w, h): the valid ones are the first lengths[b] * H of each row.
        weights = masked_softmax(bottom_up.to(dtype)[:, 0].transpose(1, 2).flatten(1), lengths * height)
        return torch.einsum("bkp,bp->bk", top_down.to(dtype).transpose(2, 3).flatten(2), weights)


class AttnPool(nn.Module):
    """Li et al. 2018 CNN_TF_{GAP, Bilinear, Att.pooling}: time/frequency Conv1, four 3×3 convs, pooling."""

    # Most model rows per batch at CPU inference (sertk.models.predict.rows_per_batch): batches of 2 s
    # segments run 1.5-2x slower than one at a time, their maps spill from the cache (tools/bench_infer.py).
    cpu_batch_rows = 1

    @dataclass
    class Config:
        # Conv1 groups as [freq, time, filters]; their outputs are concatenated along channels (§2.3).
        first_layer: list[list[int]] = field(default_factory=lambda: [[10, 2, 8], [2, 8, 8]])
        channels: list[int] = field(default_factory=lambda: [32, 48, 64, 80])  # 3×3 convs; [] = Conv1 alone
        # Indices into ``channels`` of the 3×3 convs followed by 2×2 max pooling.
        pool_after: list[int] = field(default_factory=lambda: [0, 1])
        pooling: str = "attention"
        head: str = "linear"
        head_scale: float = 30.0

    def __init__(self, cfg: Config, input_dim: int, num_classes: int) -> None:
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        self.input_dim = input_dim
        self.first_layer = nn.ModuleList(
            nn.Sequential(_same_padding(freq, time), nn.Conv2d(1, filters, (freq, time), bias=False))
            for freq, time, filters in cfg.first_layer
        )
        width = sum(filters for _, _, filters in cfg.first_layer)
        self.first_norm = MaskedBatchNorm(width)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for channels in cfg.channels:
            self.convs.append(nn.Conv2d(width, channels, 3, padding=1, bias=False))
            self.norms.append(MaskedBatchNorm(channels))
            width = channels
        if cfg.pooling == "attention":
            self.top_down = nn.Conv2d(width, num_classes, 1)
            # A bias on the bottom-up map would cancel in the softmax.
            self.bottom_up = nn.Conv2d(width, 1, 1, bias=False)
        else:
            in_dim = width * width if cfg.pooling == "bilinear" else width
            self.head = make_head(cfg.head, in_dim, num_classes, cfg.head_scale)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features and (B,) valid frames -> (B, num_classes) logits."""
        if feats.dim() != 3 or feats.shape[-1] != self.input_dim:
            raise SertkError(
                f"attn-pool: expected features (B, T, {self.input_dim}), got {tuple(feats.shape)}"
            )
        lengths = lengths.to(feats.device).clamp(1, feats.shape[1])
        padded = bool((lengths < feats.shape[1]).any())
        # Without padding every position is valid; mask None keeps cuDNN batch norm on full batches.
        if padded:
            feats = zero_padding(feats, lengths)
        x = feats.transpose(1, 2).unsqueeze(1)
        if not padded and not self.training and not torch.is_grad_enabled():
            x, lengths = self._infer_maps(x, lengths)
            return self._pool(x, lengths)
        mask = frame_mask(lengths, x.shape[-1])[:, None, None, :] if padded else None
        x = torch.cat([conv(x) for conv in self.first_layer], dim=1)
        x = F.relu(self.first_norm(x, mask))
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.relu(norm(conv(x), mask))
            if index in self.cfg.pool_after:
                x = F.max_pool2d(x, 2, ceil_mode=True)
                lengths = conv_output_length(lengths, 2, 2, padding=0, ceil_mode=True)
                mask = frame_mask(lengths, x.shape[-1])[:, None, None, :] if padded else None
        return self._pool(x, lengths)

    def _infer_maps(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv stack of ``forward`` on full segments without autograd, in fewer passes over the maps.

        Batch norm folds into the convs; ReLU runs in place and after max pooling (both are monotone, so
        max then ReLU is ReLU then max, on a quarter of the values).
        """
        maps, start = [], 0
        for pad, conv in self.first_layer:
            weight, bias = folded_conv(conv, self.first_norm, slice(start, start + conv.out_channels))
            maps.append(F.conv2d(pad(x), weight, bias))
            start += conv.out_channels
        x = F.relu_(torch.cat(maps, dim=1))
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.conv2d(x, *folded_conv(conv, norm), padding=conv.padding)
            if index in self.cfg.pool_after:
                x = F.max_pool2d(x, 2, ceil_mode=True)
                lengths = conv_output_length(lengths, 2, 2, padding=0, ceil_mode=True)
            x = F.relu_(x)
        return x, lengths

    def _pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class logits from the last maps: attention pooling, or a pooled vector through the head."""
        if self.cfg.pooling == "attention":
            return attention_pool(self.top_down(x), self.bottom_up(x), lengths)
        pooled = (
            bilinear_pool(x, lengths) if self.cfg.pooling == "bilinear" else global_average_pool(x, lengths)
        )
        return self.head(pooled)


def _same_padding(freq: int, time: int) -> nn.ZeroPad2d:
    """Zero padding keeping the map size for a freq×time kernel; even kernels get the extra step after."""
    return nn.ZeroPad2d((*same_padding(time), *same_padding(freq)))


def _check_config(cfg: AttnPool.Config) -> None:
    """Reject option combinations the architecture cannot build, naming the key."""
    if cfg.pooling not in POOLINGS:
        raise SertkError(f"model.pooling: expected one of {list(POOLINGS)}, got {cfg.pooling!r}")
    if cfg.pooling == "attention" and cfg.head != "linear":
        raise SertkError(
            f"model.head: attention pooling's class maps are the logits (a linear head by construction), "
            f"got {cfg.head!r}"
        )
    if not cfg.first_layer or any(len(group) != 3 or min(group) < 1 for group in cfg.first_layer):
        raise SertkError(
            f"model.first_layer: expected [[freq, time, filters], ...] of positive ints, got {cfg.first_layer}"
        )
    if cfg.channels and min(cfg.channels) < 1:
        raise SertkError(f"model.channels: expected positive channel counts, got {cfg.channels}")
    if any(not 0 <= index < len(cfg.channels) for index in cfg.pool_after):
        raise SertkError(
            f"model.pool_after: indices must lie in 0..{len(cfg.channels) - 1} "
            f"(one per 3×3 conv of model.channels), got {cfg.pool_after}"
        )
