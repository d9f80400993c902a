"""CNN with time- and frequency-specific first-layer filters and a selectable global pooling (Li et al. 2018).

Input (B, T, D) spectrogram segments become (B, 1, D=freq, T=time) images. Conv1 concatenates groups of
differently shaped filters (8 of 10×2 and 8 of 2×8, freq×time, §2.3); then 3×3 convs (32, 48, 64, 80),
each with BN + ReLU, with 2×2 max pooling after the first two; then one of the §2.4 poolings:
``gap`` (Eq. 3), ``bilinear`` (second-order, Lin et al. 2015) or ``attention`` (Eq. 9-10).

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
from sertk.models.heads import make_head

POOLINGS = ("gap", "bilinear", "attention")


def time_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) valid lengths -> (B, 1, 1, width) float mask, 1 where t < lengths[b]."""
    steps = torch.arange(width, device=lengths.device)
    return (steps[None, :] < lengths[:, None]).to(torch.float32)[:, None, None, :]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Global average over valid positions: (B, C, H, W) -> (B, C); the 1ᵀX of Eq. 3 divided by the count."""
    count = mask.sum(dim=(1, 2, 3)) * x.shape[2]
    return (x * mask).sum(dim=(2, 3)) / count[:, None]


def bilinear_pool(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Second-order pooling: mean of xxᵀ over valid positions, signed sqrt, l2-normalised (Lin et al. 2015).

    (B, C, H, W) -> (B, C·C). Li et al. 2018 §3.3 (CNN_TF_Bilinear); Eq. 4's XᵀX averaged over positions.
    The sqrt's argument is floored at ``eps`` so its gradient stays finite at zero.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        flat = (x.float() * mask).flatten(2)
        count = mask.sum(dim=(1, 2, 3)) * x.shape[2]
        second = torch.bmm(flat, flat.transpose(1, 2)).flatten(1) / count[:, None]
        signed_root = torch.sign(second) * torch.sqrt(second.abs().clamp_min(eps))
        return F.normalize(signed_root, dim=1)


def attention_pool(top_down: torch.Tensor, bottom_up: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """score(k) = 1ᵀ(X a_k ∘ softmax(X b)) over valid positions; Li et al. 2018 Eq. 9-10.

    top_down: (B, K, H, W) class-specific maps X a_k; bottom_up: (B, 1, H, W) class-agnostic map X b,
    softmaxed over the valid positions, so the sum is an attention-weighted spatial average. -> (B, K).
    """
    with torch.autocast(device_type=top_down.device.type, enabled=False):
        valid = (mask > 0).expand_as(bottom_up).flatten(1)
        weights = bottom_up.float().flatten(1).masked_fill(~valid, float("-inf")).softmax(dim=1)
        return (top_down.float().flatten(2) * weights[:, None, :]).sum(dim=2)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d for padded maps: statistics from valid time steps only, padded steps (mask (B, 1, 1, W)) set
    to zero in the output, so the following ReLU, max pooling and convolution see the zero padding the
    utterance alone would get, at no extra pass over the map."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        if self.training or not self.track_running_stats:
            mean, var = self._valid_statistics(x, mask)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0.0)
        # Folding the mask into the per-(b, c, t) scale and shift normalises and masks in one fused pass.
        steps = mask.to(x.dtype)
        return torch.addcmul(
            shift.to(x.dtype)[:, None, None] * steps, x, scale.to(x.dtype)[:, None, None] * steps
        )

    def _valid_statistics(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and biased variance over valid steps; updates the running statistics."""
        # Sums over H first (float32 accumulation, so AMP cannot overflow), then the small (B, C, W)
        # results are masked: far cheaper than masking the full map.
        steps = mask[:, :, 0, :].float()
        count = steps.sum() * x.shape[2]
        total = (x.sum(dim=2, dtype=torch.float32) * steps).sum(dim=(0, 2))
        squares = (torch.linalg.vector_norm(x, dim=2, dtype=torch.float32).square() * steps).sum(dim=(0, 2))
        mean = total / count
        var = (squares / count - mean.square()).clamp_min(0.0)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return mean, var


class AttnPool(nn.Module):
    """Li et al. 2018 CNN_TF_{GAP, Bilinear, Att.pooling}: time/frequency Conv1, four 3×3 convs, pooling."""

    @dataclass
    class Config:
        # Conv1 groups as [freq, time, filters]; their outputs are concatenated along channels (§2.3).
        first_layer: list[list[int]] = field(default_factory=lambda: [[10, 2, 8], [2, 8, 8]])
        channels: list[int] = field(default_factory=lambda: [32, 48, 64, 80])
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
        self.first_norm = MaskedBatchNorm2d(width)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for channels in cfg.channels:
            self.convs.append(nn.Conv2d(width, channels, 3, padding=1, bias=False))
            self.norms.append(MaskedBatchNorm2d(channels))
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
        x = feats.transpose(1, 2).unsqueeze(1)
        lengths = lengths.to(x.device).clamp(1, x.shape[-1])
        padded = bool((lengths < x.shape[-1]).any())
        # Without padding the masks are all ones; skipping them keeps cuDNN batch norm on full batches.
        mask = time_mask(lengths, x.shape[-1]) if padded else None
        x = _apply_mask(x, mask)
        x = torch.cat([conv(x) for conv in self.first_layer], dim=1)
        x = F.relu(self.first_norm(x, mask))
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.relu(norm(conv(x), mask))
            if index in self.cfg.pool_after:
                x = F.max_pool2d(x, 2, ceil_mode=True)
                lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
                mask = time_mask(lengths, x.shape[-1]) if padded else None
        full = mask if mask is not None else x.new_ones(x.shape[0], 1, 1, x.shape[-1])
        if self.cfg.pooling == "attention":
            return attention_pool(self.top_down(x), self.bottom_up(x), full)
        pooled = bilinear_pool(x, full) if self.cfg.pooling == "bilinear" else masked_mean(x, full)
        return self.head(pooled)


def _same_padding(freq: int, time: int) -> nn.ZeroPad2d:
    """Zero padding keeping the map size for a freq×time kernel; even kernels get the extra step after."""
    return nn.ZeroPad2d(((time - 1) // 2, time // 2, (freq - 1) // 2, freq // 2))


def _apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.to(x.dtype)


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
    if not cfg.channels or min(cfg.channels) < 1:
        raise SertkError(f"model.channels: expected positive channel counts, got {cfg.channels}")
    if any(not 0 <= index < len(cfg.channels) for index in cfg.pool_after):
        raise SertkError(
            f"model.pool_after: indices must lie in 0..{len(cfg.channels) - 1}, got {cfg.pool_after}"
        )
