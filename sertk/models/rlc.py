"""rlc: residual CNN + multi-head self-attention + GCA-LSTM + dense classifier (rlc_gca_lstm.md, Fig. 1-4).

One arch covers the four systems of Table 2 through its config: Baseline (``residual_cnn: false``, stacked
LSTM on the LLDs), S1 (RCN + stacked LSTM, ``heads: 0``), S2 (RCN with 4-head self-attention + stacked
LSTM) and S3 (the full RLC: ``recurrent: gca-lstm``); ``lexical_dim`` adds the lexical branch (§3.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sertk.errors import SertkError
from sertk.masking import frame_mask, zero_padding
from sertk.models.gca_lstm import GcaLstm
from sertk.models.heads import HEADS, make_head
from sertk.models.layers import MaskedBatchNorm, conv_output_length, same_padding

RECURRENT = ("gca-lstm", "lstm")


class SameConv1d(nn.Conv1d):
    """Conv1d without bias (batch norm follows) and with "same" zero padding: ceil(L / stride) steps out.

    Even kernels (group 1's k = 10) get their extra padding step on the right, so a stride of 2 maps
    5 ms frames exactly onto 10 ms steps, and five strides give T / 32 steps of 160 ms (§3.1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, same_padding(self.kernel_size[0])))


class FirstGroup(nn.Module):
    """Group 1 of RCN (Fig. 2): one strided conv (10, 32) -> masked BN -> ReLU -> dropout."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, dropout: float):
        super().__init__()
        self.conv = SameConv1d(in_channels, out_channels, kernel, stride)
        self.norm = MaskedBatchNorm(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T), zero on padded steps -> (B, C', T'), zero on padded steps; lengths -> T' lengths."""
        lengths = conv_output_length(lengths, self.conv.kernel_size[0], self.conv.stride[0])
        y = self.conv(x)
        return self.dropout(F.relu(self.norm(y, frame_mask(lengths, y.shape[-1])[:, None, :]))), lengths


def masked_self_attention(
    attention: nn.MultiheadAttention, steps: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``attention(steps, steps, steps, key_padding_mask=~valid)`` through one fused attention kernel.

    rlc_gca_lstm.md §3.2, Eq. 2-3: per head softmax(Q Kᵀ / sqrt(d_k)) V over the valid keys, heads
    concatenated and projected, with ``attention``'s own weights (no dropout). The same arithmetic as
    ``nn.MultiheadAttention``, but ``F.scaled_dot_product_attention`` never writes the (T, T) masked
    scores out: on CPU up to 5x faster for long inputs (``tools/bench_infer.py``).
    """
    batch, steps_len, channels = steps.shape
    heads = attention.num_heads
    qkv = F.linear(steps, attention.in_proj_weight, attention.in_proj_bias)
    query, key, value = qkv.view(batch, steps_len, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=valid[:, None, None, :])
    return attention.out_proj(out.transpose(1, 2).reshape(batch, steps_len, channels))


class ResidualBlock(nn.Module):
    """Residual block of RCN (§3.1, Fig. 2; He et al. 2016): conv-BN-ReLU, [MHSA], conv-BN, + shortcut, ReLU.

    The first block of groups 2-5 strides its first conv by 2 and changes the channel count, so its
    shortcut is a projection (He et al. 2016 option B: a strided 1×1 conv + BN; not one of Fig. 2's 17
    convs); every other shortcut is the identity. In S2/S3 a multi-head self-attention (§3.2, Eq. 2-3:
    ``nn.MultiheadAttention`` with r heads of C / r dims, padded keys masked) sits between the two convs
    (Fig. 2(b)) with its own identity path, h + MHSA(h), so a block starts out close to S1's block. One
    dropout follows the block.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, heads: int, dropout: float
    ):
        super().__init__()
        self.conv1 = SameConv1d(in_channels, out_channels, kernel, stride)
        self.norm1 = MaskedBatchNorm(out_channels)
        self.attention = nn.MultiheadAttention(out_channels, heads, batch_first=True) if heads else None
        self.conv2 = SameConv1d(out_channels, out_channels, kernel)
        self.norm2 = MaskedBatchNorm(out_channels)
        self.shortcut: nn.Conv1d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv1d(in_channels, out_channels, 1, stride, bias=False)
            self.shortcut_norm = MaskedBatchNorm(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T), zero on padded steps -> (B, C', T'), zero on padded steps; lengths -> T' lengths."""
        lengths = conv_output_length(lengths, self.conv1.kernel_size[0], self.conv1.stride[0])
        h = self.conv1(x)
        valid = frame_mask(lengths, h.shape[-1])
        mask = valid[:, None, :]
        h = F.relu(self.norm1(h, mask))
        if self.attention is not None:
            h = h + masked_self_attention(self.attention, h.transpose(1, 2), valid).transpose(1, 2) * mask
        h = self.norm2(self.conv2(h), mask)
        identity = x if self.shortcut is None else self.shortcut_norm(self.shortcut(x), mask)
        return self.dropout(F.relu(identity + h)), lengths


class Rlc(nn.Module):
    """RCN [+ self-attention] + GCA-LSTM or stacked LSTM + dense classifier (rlc_gca_lstm.md §3, Table 2).

    RCN as Fig. 2 and §3.1 draw it, 17 convs: group 1 is one conv (10, 32); groups 2-5 are ``blocks`` = 2
    residual blocks of two convs each, (kernel, filters) (5, 64), (5, 128), (3, 256), (3, 512). Group 1's
    conv and the first conv of each group's first block have stride 2: five strides, so 5 ms frames become
    2⁵ x 5 = 160 ms steps, exactly T / 32 with "same" padding (§3.1). Each channel-changing, strided block
    has a projection shortcut (a strided 1×1 conv + BN, He et al. 2016 option B, not counted among the 17).
    Every conv is followed by masked BN (§3.1); dropout follows group 1 and every residual block. In S2/S3 a
    4-head self-attention sits between the two convs of every block (§3.2, Fig. 2(b)). The recurrent part
    reads the 512-channel steps: GCA-LSTM with 256 units and I = 3 (§3.3, §4.1), or a stacked LSTM whose
    last valid output is the representation (Baseline, S1, S2). The authors' code (3 strides, extra strided
    openers, 9.36M parameters) is context only: the paper wins (shared/papers/README.md).

    Classifier (§4.1, "three stacked dense layers, each contains 256 units"): three hidden FC-256 layers,
    each ReLU + dropout, then the logits layer. The logits layer has one unit per class, not 256, so it
    cannot be one of the three (the authors' code has FC256, FC256, FC4 and a ReLU on the logits, not copied).

    Parameter counts, 17 LLDs in, 4 classes (convs without bias, LSTMs with PyTorch's two bias vectors):
    RCN 3,988,224 (convs 3,804,480 + projections 174,080 + BN 9,664); self-attention 4C² + 4C per block,
    2,792,960 in all; GCA-LSTM(512 -> 256) 1,576,704; classifier 197,376 + logits 1,028. S3 (default)
    8,556,292 (paper 9.11M, -6.1%). The ablation configs balance their LSTM units as Table 2's note says,
    keeping the paper's ratios to S3: S2 2 x LSTM 282: 8,522,580 (9.07M); S1 2 x LSTM 521: 8,587,104
    (9.15M); Baseline 2 x LSTM 831 on the LLDs: 8,702,140 (9.27M); each -6.1% to -6.2% from the paper.
    The paper's extra ~0.55M is not pinned down by its text (conv biases, the width of W_e2 in Eq. 9 and the
    self-attention's d_k are not given).

    Padding is masked everywhere: padded steps are zeroed before every convolution and excluded from the
    batch-norm statistics, self-attention never attends to them (``key_padding_mask``), the LSTMs run on
    packed sequences and the GCA-LSTM freezes its state on them. In eval mode a padded utterance gives
    exactly its lone output.
    """

    # Most model rows per batch at CPU inference (sertk.models.predict.rows_per_batch): 8 rows amortise the
    # GCA-LSTM recursion's many small ops and stay in the cache (tools/bench_infer.py).
    cpu_batch_rows = 8

    @dataclass
    class Config:
        """The ``model`` section for arch rlc."""

        residual_cnn: bool = True  # False: the Baseline, recurrent layers straight on the LLD frames
        first_conv: list[int] = field(default_factory=lambda: [10, 32])  # group 1: [kernel, filters]
        groups: list[list[int]] = field(
            default_factory=lambda: [[5, 64], [5, 128], [3, 256], [3, 512]]
        )  # groups 2-5: [kernel, filters]
        blocks: int = 2  # residual blocks of two convs per group 2-5
        stride: int = 2  # of group 1's conv and of the first conv of every group 2-5
        heads: int = 4  # self-attention heads in every residual block; 0 = no self-attention (S1)
        dropout: float = 0.5  # after group 1's conv, every residual block and every hidden dense layer
        recurrent: str = "gca-lstm"  # "gca-lstm" (S3) or "lstm" (stacked LSTM: Baseline, S1, S2)
        lstm_units: int = 256
        lstm_layers: int = 2  # stacked LSTM only
        iterations: int = 3  # GCA-LSTM refinements I
        # Hidden dense layers before the logits: §4.1's "three stacked dense layers, each 256 units".
        dense: list[int] = field(default_factory=lambda: [256, 256, 256])
        head: str = "linear"  # "linear" (affine logits) or "cosine"
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)
        lexical_dim: int = 0  # word-vector size D of the lexical branch (§3.4); 0 = acoustic only
        lexical_cells: int = 256  # units of the lexical branch's LSTM

        def __post_init__(self) -> None:
            if len(self.first_conv) != 2 or min(self.first_conv) < 1:
                raise ValueError(f"first_conv: expected [kernel, filters] >= 1, got {self.first_conv}")
            for kernel_filters in self.groups:
                if len(kernel_filters) != 2 or min(kernel_filters) < 1:
                    raise ValueError(f"groups: expected [kernel, filters] >= 1, got {kernel_filters}")
                if self.heads and kernel_filters[1] % self.heads:
                    raise ValueError(f"heads: {self.heads} does not divide {kernel_filters[1]} filters")
            if self.blocks < 1 or self.stride < 1 or self.heads < 0:
                raise ValueError("blocks and stride must be >= 1 and heads >= 0")
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
            layers.append(FirstGroup(input_dim, channels, kernel, cfg.stride, cfg.dropout))
            for kernel, filters in cfg.groups:
                for block in range(cfg.blocks):
                    stride = cfg.stride if block == 0 else 1
                    layers.append(ResidualBlock(channels, filters, kernel, stride, cfg.heads, cfg.dropout))
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
        # Zero the padded frames so the first conv sees the zeros the utterance alone would be padded with.
        x = zero_padding(feats, lengths).transpose(1, 2)
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
