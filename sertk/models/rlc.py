"""rlc: residual CNN + multi-head self-attention + GCA-LSTM + dense classifier (rlc_gca_lstm.md, Fig. 1-4).

One arch covers the four systems of Table 2 through its config: Baseline (``residual_cnn: false``, stacked
LSTM on the LLDs), S1 (RCN + stacked LSTM, ``heads: 0``), S2 (RCN with 4-head self-attention + stacked
LSTM) and S3 (the full RLC: ``recurrent: gca-lstm``).

Padding is masked everywhere: padded steps are zeroed before every convolution and excluded from the
batch-norm statistics, self-attention never attends to them, the LSTMs run on packed sequences and the
GCA-LSTM freezes its state on them. In eval mode a padded utterance gives exactly its lone output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sertk.errors import SertkError
from sertk.models.gca_lstm import GcaLstm
from sertk.models.heads import HEADS, make_head
from sertk.models.pooling import frame_mask

RECURRENT = ("gca-lstm", "lstm")


def conv_length(lengths: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Valid output length of a conv with padding kernel // 2: floor((L + 2 (k // 2) - k) / s) + 1."""
    return (lengths + 2 * (kernel // 2) - kernel) // stride + 1


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (B, C, T) whose statistics come from the valid steps only; padded steps output 0."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), mask (B, 1, T) float (1 on valid steps) -> normalised x, zero on padded steps."""
        # At least float32: under autocast a float16 sum over B x T steps can overflow.
        values = x.to(torch.promote_types(x.dtype, torch.float32))
        mask = mask.to(values.dtype)
        if self.training:
            count = mask.sum()
            mean = (values * mask).sum(dim=(0, 2)) / count
            var = ((values - mean[:, None]).square() * mask).sum(dim=(0, 2)) / count
            with torch.no_grad():
                self.num_batches_tracked += 1
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps) * self.weight
        shift = self.bias - mean * scale
        return ((values * scale[:, None] + shift[:, None]) * mask).to(x.dtype)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over the valid steps (rlc_gca_lstm.md Eq. 2-3; Vaswani et al. 2017).

    head_j = softmax(Q_j K_jᵀ / sqrt(d_k / r)) V_j with Q_j, K_j, V_j = H W_j^{Q,K,V}; output
    Concat(head_1..head_r) W^O. d_k = d_v = the channel count C, so each of the r heads has C / r dims.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.project_in = nn.Linear(dim, 3 * dim)  # W^Q, W^K, W^V of all heads at once
        self.project_out = nn.Linear(dim, dim)  # W^O

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), mask (B, T) bool (True on valid steps) -> (B, T, C); padded keys get no weight."""
        batch, steps, dim = x.shape
        q, k, v = (
            self.project_in(x).view(batch, steps, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        )
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.project_out(heads.transpose(1, 2).reshape(batch, steps, dim))


class ConvBnRelu(nn.Module):
    """Conv1d (padding k // 2, no bias: BN follows) -> masked BN -> ReLU -> dropout; the strided group opener."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, dropout: float):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)
        self.norm = MaskedBatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T), zero on padded steps -> (B, C', T'), zero on padded steps; lengths -> T' lengths."""
        lengths = conv_length(lengths, self.kernel, self.stride)
        y = self.conv(x)
        mask = frame_mask(lengths, y.shape[-1]).to(y.dtype)[:, None, :]
        return self.dropout(F.relu(self.norm(y, mask))), lengths


class ResidualBlock(nn.Module):
    """Residual block of RCN (§3.1, Fig. 2): conv-BN-ReLU, [4-head self-attention, §3.2], conv-BN, + x, ReLU.

    Self-attention sits between the two convs (Fig. 2(b)) with its own identity path, h + MHSA(h), so a
    block starts out close to S1's block; the outer identity path is He et al. 2016's basic block.
    """

    def __init__(self, channels: int, kernel: int, heads: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.norm1 = MaskedBatchNorm1d(channels)
        self.attention = MultiHeadSelfAttention(channels, heads) if heads else None
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, bias=False)
        self.norm2 = MaskedBatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T), zero on padded steps -> same shape, zero on padded steps; lengths unchanged."""
        valid = frame_mask(lengths, x.shape[-1])
        mask = valid.to(x.dtype)[:, None, :]
        h = F.relu(self.norm1(self.conv1(x), mask))
        if self.attention is not None:
            h = h + self.attention(h.transpose(1, 2), valid).transpose(1, 2) * mask
        h = self.norm2(self.conv2(h), mask)
        return self.dropout(F.relu(x + h)), lengths


class Rlc(nn.Module):
    """RCN [+ self-attention] + GCA-LSTM or stacked LSTM + dense classifier (rlc_gca_lstm.md §3, Table 2).

    RCN (Fig. 2): group 1 is one conv (10, 32); groups 2-5 each open with a strided conv (k, C) and then
    ``blocks`` residual blocks of two (k, C) convs: (5, 64), (5, 128), (3, 256), (3, 512). Every group's
    first conv has stride 2, so 5 ms frames become 2⁵ x 5 = 160 ms steps (§3.1). The authors' code strides
    only three times; we follow the text. Our group openers are conv-BN-ReLU (the authors' are not activated),
    with one dropout per opener and per block rather than per conv. The recurrent part reads the 512-channel steps: GCA-LSTM with
    256 units and I = 3 (§3.3, §4.1) or a stacked LSTM whose last valid output is the representation.
    Classifier (§4.1, "three stacked dense layers"): 256 -> ReLU -> dropout -> 256 -> ReLU -> dropout ->
    logits, read as in the authors' code (FC256, FC256, FC4) but without their ReLU on the logits.

    Parameter counts, 17 LLDs in, 4 classes (PyTorch; LSTMs carry two bias vectors): S3 (default)
    9,401,860 (paper 9.11M, +3.2%); S2, 2 x LSTM 256: 9,139,972 (9.07M, +0.8%); S1, 2 x LSTM 502:
    9,155,348 (9.15M); Baseline, 2 x LSTM 862 on the LLDs: 9,276,684 (9.27M). Like the paper (Table 2
    note) the ablation configs balance the LSTM units to keep the counts level.
    """

    @dataclass
    class Config:
        """The ``model`` section for arch rlc."""

        residual_cnn: bool = True  # False: the Baseline, recurrent layers straight on the LLD frames
        first_conv: list[int] = field(default_factory=lambda: [10, 32])  # group 1: [kernel, filters]
        groups: list[list[int]] = field(
            default_factory=lambda: [[5, 64], [5, 128], [3, 256], [3, 512]]
        )  # groups 2-5: [kernel, filters]
        blocks: int = 2  # residual blocks per group 2-5
        stride: int = 2  # of the first conv of every group
        heads: int = 4  # self-attention heads in every residual block; 0 = no self-attention (S1)
        dropout: float = 0.5  # after every conv group opener, residual block and hidden dense layer
        recurrent: str = "gca-lstm"  # "gca-lstm" (S3) or "lstm" (stacked LSTM: Baseline, S1, S2)
        lstm_units: int = 256
        lstm_layers: int = 2  # stacked LSTM only
        iterations: int = 3  # GCA-LSTM refinements I
        dense: list[int] = field(default_factory=lambda: [256, 256])  # hidden dense layers before the logits
        head: str = "linear"  # "linear" (affine logits) or "cosine"
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)
        lexical_dim: int = 0  # word-vector size D of the lexical branch (§3.4); 0 = acoustic only
        lexical_cells: int = 256  # units of the lexical branch's LSTM

        def __post_init__(self) -> None:
            if len(self.first_conv) != 2 or min(self.first_conv) < 1:
                raise ValueError(f"first_conv: expected [kernel, filters] >= 1, got {self.first_conv}")
            for kernel_filters in self.groups:
                if len(kernel_filters) != 2 or min(kernel_filters) < 1 or kernel_filters[0] % 2 == 0:
                    raise ValueError(f"groups: expected [odd kernel, filters], got {kernel_filters}")
                if self.heads and kernel_filters[1] % self.heads:
                    raise ValueError(f"heads: {self.heads} does not divide {kernel_filters[1]} filters")
            if self.blocks < 0 or self.stride < 1 or self.heads < 0:
                raise ValueError("blocks and heads must be >= 0 and stride >= 1")
            if self.heads and not self.residual_cnn:
                raise ValueError("heads: self-attention needs residual_cnn: true (set heads: 0)")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
            if self.recurrent not in RECURRENT:
                raise ValueError(f"recurrent: unknown {self.recurrent!r} (known: {', '.join(RECURRENT)})")
            if self.lstm_units < 1 or self.lstm_layers < 1 or self.iterations < 1:
                raise ValueError("lstm_units, lstm_layers and iterations must be >= 1")
            if any(units < 1 for units in self.dense):
                raise ValueError(f"dense: sizes must be >= 1, got {self.dense}")
            if self.lexical_dim < 0 or self.lexical_cells < 1:
                raise ValueError("lexical_dim must be >= 0 and lexical_cells >= 1")
            if self.head not in HEADS:
                raise ValueError(f"head: unknown {self.head!r} (known: {', '.join(HEADS)})")

    def __init__(self, cfg: Rlc.Config, input_dim: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.input_dim = input_dim
        layers: list[nn.Module] = []
        channels = input_dim
        if cfg.residual_cnn:
            kernel, channels = cfg.first_conv
            layers.append(ConvBnRelu(input_dim, channels, kernel, cfg.stride, cfg.dropout))
            for kernel, filters in cfg.groups:
                layers.append(ConvBnRelu(channels, filters, kernel, cfg.stride, cfg.dropout))
                layers += [ResidualBlock(filters, kernel, cfg.heads, cfg.dropout) for _ in range(cfg.blocks)]
                channels = filters
        self.rcn = nn.ModuleList(layers)
        if cfg.recurrent == "gca-lstm":
            self.recurrent = GcaLstm(channels, cfg.lstm_units, cfg.iterations)
        else:
            self.recurrent = nn.LSTM(channels, cfg.lstm_units, cfg.lstm_layers, batch_first=True)
        dense: list[nn.Module] = []
        width = cfg.lstm_units + (cfg.lexical_cells if cfg.lexical_dim else 0)
        for units in cfg.dense:
            dense += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = units
        self.classifier = nn.Sequential(*dense)
        self.head = make_head(cfg.head, width, num_classes, cfg.head_scale)
        # Built last, so an acoustic-only model draws exactly the initial weights it always did.
        self.lexical_dim = cfg.lexical_dim
        if cfg.lexical_dim:
            self.lexical = nn.LSTM(cfg.lexical_dim, cfg.lexical_cells, batch_first=True)

    def suprasegmental(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RCN: (B, T, D) frames -> (B, N, C) steps of 2⁵ frames each and their lengths (§3.1-3.2)."""
        mask = frame_mask(lengths, feats.shape[1]).to(feats.dtype)
        # Zero the padded frames so the first conv sees the zeros the utterance alone would be padded with.
        x = (feats * mask[..., None]).transpose(1, 2)
        for layer in self.rcn:
            x, lengths = layer(x, lengths)
        return x.transpose(1, 2), lengths

    def representation(self, steps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N, C) steps -> utterance representation (B, lstm_units): F⁽ᴵ⁾, or the stacked LSTM's h_N."""
        if isinstance(self.recurrent, GcaLstm):
            return self.recurrent(steps, lengths)
        packed = pack_padded_sequence(steps, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (last, _) = self.recurrent(packed)
        return last[-1]

    def sentence(self, words: torch.Tensor, word_lengths: torch.Tensor) -> torch.Tensor:
        """(B, K, D) word vectors -> RT = hr_K, the lexical LSTM's last valid output (B, lexical_cells) (§3.4).

        A forward LSTM's output at step k depends on steps <= k only, so reading it at K - 1 ignores the
        padding exactly, without packing (which costs more than the tiny branch itself on CPU).
        """
        outputs, _ = self.lexical(words)
        return outputs[torch.arange(len(words), device=words.device), word_lengths.to(words.device) - 1]

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        words: torch.Tensor | None = None,
        word_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """feats (B, T, D) float, lengths (B,) long [, words (B, K, D_w), word_lengths (B,)] -> logits (B, C).

        Frames t >= lengths[b] and words k >= word_lengths[b] are ignored. With ``lexical_dim`` > 0 the
        sentence representation RT is concatenated with F⁽ᴵ⁾ before the classifier (§3.4).
        """
        if feats.dim() != 3 or feats.shape[-1] != self.input_dim:
            raise SertkError(f"rlc: expected features (B, T, {self.input_dim}), got {tuple(feats.shape)}")
        if (words is not None) != bool(self.lexical_dim) or (words is None) != (word_lengths is None):
            raise SertkError(
                f"rlc: lexical_dim {self.lexical_dim} needs word vectors and word lengths exactly when > 0 "
                "(pass sertk train --lexical-feats DIR for a lexical config, and only for one)"
            )
        steps, lengths = self.suprasegmental(feats, lengths)
        utterance = self.representation(steps, lengths)
        if words is not None:
            if words.dim() != 3 or words.shape[-1] != self.lexical_dim:
                raise SertkError(
                    f"rlc: expected word vectors (B, K, {self.lexical_dim}), got {tuple(words.shape)}"
                )
            utterance = torch.cat([utterance, self.sentence(words, word_lengths)], dim=-1)
        return self.head(self.classifier(utterance))
