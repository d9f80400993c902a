"""Layers every arch shares: masked batch norm (per channel and layer-wise) and conv/pool length arithmetic.

A padded batch is (B, ..., T) maps plus a mask that is 1 on the valid positions (see ``sertk.masking``).
``MaskedBatchNorm`` is the one masked batch norm in sertk: its statistics come from the valid positions only
and its running statistics follow PyTorch's rule, so with every position valid it is ``nn.BatchNorm*d``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_output_length(
    length: torch.Tensor | int,
    kernel: int,
    stride: int = 1,
    padding: int | None = None,
    ceil_mode: bool = False,
) -> torch.Tensor | int:
    """Steps out of a conv or pool over ``length`` steps: floor((L + P − k) / s) + 1 (PyTorch's Conv1d docs).

    ``padding`` P is the total padding (both sides); None means "same" padding P = k − 1, which gives
    ceil(L / s). ``ceil_mode`` rounds up as PyTorch's pools do; it is only allowed without padding and with
    k >= s, where no window can start past the input and PyTorch's extra rule never applies.
    """
    padding = kernel - 1 if padding is None else padding
    span = length + padding - kernel
    if not ceil_mode:
        return span // stride + 1
    if padding or kernel < stride:
        raise ValueError(
            f"ceil_mode: needs padding 0 and kernel >= stride, got {padding}, {kernel}, {stride}"
        )
    # (span + s - 1) // s, not -(-span // s): ONNX integer Div truncates; span + s - 1 >= 0 for L >= k.
    return (span + stride - 1) // stride + 1


def same_padding(kernel: int) -> tuple[int, int]:
    """(left, right) zero padding that keeps L steps at stride 1: k − 1 in all, the odd one on the right."""
    return (kernel - 1) // 2, kernel // 2


def folded_conv(
    conv: nn.Conv2d, norm: nn.modules.batchnorm._BatchNorm, channels: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` followed by eval-mode affine ``norm`` (its ``channels``) as one conv.

    Batch norm with running statistics is y = (x - mean) * g / sqrt(var + eps) + b per channel, an affine
    map that folds into the conv before it (inference only: training normalises with batch statistics).
    The weight is channels-last, so the conv's output is too, and so is everything element-wise or pooled
    after it: on CPU, oneDNN convs run 1.5-4x and 2x2 pools 10x faster on channels-last maps than on NCHW
    ones (``tools/bench_infer.py``).
    """
    scale = (norm.weight * torch.rsqrt(norm.running_var + norm.eps))[channels]
    shift = norm.bias[channels] - norm.running_mean[channels] * scale
    bias = shift if conv.bias is None else conv.bias * scale + shift
    weight = conv.weight * scale[:, None, None, None]
    return weight.to(memory_format=torch.channels_last), bias


def masked_moments(
    x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...], group: object | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, biased variance and count of ``x`` over ``dims``, counting only the positions where mask is 1.

    ``mask`` (0/1, broadcastable to x) may vary only along reduced dims. Statistics are accumulated in at
    least float32 (under autocast a float16 sum over B x T steps overflows), with two passes (mean, then the
    mean of squared deviations) as ``nn.BatchNorm`` does on CPU. Mean and variance keep x's rank (keepdim).
    With a torch.distributed ``group`` the sums and counts are summed over its ranks (differentiably), so
    every rank gets the statistics of the whole global batch its shard belongs to.
    """
    mask = mask.to(torch.promote_types(x.dtype, torch.float32))
    # Sum first over the dims the mask does not vary along, then mask the much smaller partial sums.
    inner = tuple(d for d in dims if mask.shape[d] == 1)
    outer = tuple(d for d in dims if mask.shape[d] != 1)
    count = mask.sum() * math.prod(x.shape[d] for d in inner)

    def masked_sum(values: torch.Tensor) -> torch.Tensor:
        partial = values.sum(dim=inner, keepdim=True, dtype=mask.dtype) if inner else values.to(mask.dtype)
        return (partial * mask).sum(dim=outer, keepdim=True) if outer else partial * mask

    if group is None:
        mean = masked_sum(x) / count
        return mean, masked_sum((x.to(mask.dtype) - mean).square_()) / count, count
    from torch.distributed.nn.functional import all_reduce  # autograd-aware: gradients reach every rank

    summed = masked_sum(x)
    totals = all_reduce(torch.cat([summed.flatten(), count.reshape(1)]), group=group)
    count = totals[-1].detach()
    mean = totals[:-1].reshape(summed.shape) / count
    var = all_reduce(masked_sum((x.to(mask.dtype) - mean).square_()), group=group) / count
    return mean, var, count


class MaskedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the valid positions of a padded batch (Ioffe & Szegedy 2015, Eq. in Alg. 1).

    x is (B, C, ...) with channels at ``channel_dim`` (1, or -1 for (B, T, C) frames); ``mask`` is 0/1 or
    bool, broadcastable to x with size 1 along channels (e.g. (B, 1, 1, T) for (B, C, F, T) maps). Mean and
    biased variance per channel come from the valid positions; padded positions output exactly 0, so a
    following ReLU, pool or conv sees the zeros a lone utterance is padded with. Running statistics follow
    PyTorch's rule: running = (1 − m) running + m batch with the unbiased variance, and momentum None a
    cumulative average. ``mask=None`` (no padding) is ``nn.BatchNorm*d`` itself (cuDNN where available).
    """

    reduce_channels = False  # LayerBatchNorm: one mean and variance over channels too
    # A torch.distributed group (set by sertk.train.distributed under DDP): training statistics over the
    # global batch, summed over the group's ranks; None: this process's batch only.
    process_group: object | None = None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        channel_dim: int = 1,
    ):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.channel_dim = channel_dim

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"MaskedBatchNorm: expected (B, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, ...) and a mask of its valid positions (or None: all valid) -> normalised x, 0 where masked."""
        self._check_input_dim(x)
        channel_dim = self.channel_dim % x.dim()
        group = self.process_group if self.training else None
        if mask is None:
            if channel_dim == 1 and not self.reduce_channels and group is None:
                return super().forward(x)
            mask = x.new_ones([1] * x.dim())
        dims = tuple(d for d in range(x.dim()) if d != channel_dim or self.reduce_channels)
        if self.training or self.running_mean is None:
            mean, var, count = masked_moments(x, mask, dims, group)
            if self.training and self.track_running_stats:
                self._update_running_statistics(mean, var, count)
        else:
            shape = [1] * x.dim()
            if not self.reduce_channels:
                shape[channel_dim] = -1
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        scale = torch.rsqrt(var + self.eps)
        affine = [1] * x.dim()
        affine[channel_dim] = -1
        if self.affine:
            scale = scale * self.weight.view(affine)
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias.view(affine)
        # Folding the mask into the small scale and shift tensors normalises and masks in one pass over x.
        valid = mask.to(x.dtype)
        return torch.addcmul(shift.to(x.dtype) * valid, x, scale.to(x.dtype) * valid)

    @torch.no_grad()
    def _update_running_statistics(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """PyTorch's update: lerp towards the batch mean and unbiased variance by momentum (None: 1 / n)."""
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.lerp_(mean.reshape(self.running_mean.shape).to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.reshape(self.running_var.shape).to(self.running_var.dtype), factor)


class LayerBatchNorm(MaskedBatchNorm):
    """Layer-wise batch norm (cnn_blstm_vtlp.txt Eq. 13-14): one mean and variance over batch, time and features.

    The statistics of Eq. 14 run over every valid (sample, step, feature) entry, so the running mean and
    variance are scalars; a per-feature scale and shift follow, as in standard batch norm. Everything else
    (masking, running-statistics rule) is ``MaskedBatchNorm``'s.
    """

    reduce_channels = True

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, channel_dim: int = -1
    ):
        super().__init__(num_features, eps, momentum, channel_dim=channel_dim)
        self.register_buffer("running_mean", torch.zeros(()))
        self.register_buffer("running_var", torch.ones(()))
