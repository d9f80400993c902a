"""cnn-blstm: strided CNN (no pooling) + masked BiLSTM + dense softmax layer of cnn_blstm_vtlp.txt (§3, Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sertk.errors import SertkError
from sertk.masking import frame_mask, zero_padding
from sertk.models.heads import HEADS, make_head
from sertk.models.layers import LayerBatchNorm, conv_output_length

RECURRENT_NORMS = ("none", "layer-batch")


class RecurrentLayer(nn.Module):
    """One BiLSTM layer over packed sequences; with ``norm`` it computes h_t = a(W_h h_{t-1} + BN(W_x x_t)) (Eq. 12).

    For Eq. 12 the input projection W_x x_t of both directions is a separate linear layer whose output is
    normalised, then fed to an LSTM whose own input weights are a fixed (frozen) selection of its direction's
    4H gate inputs: the recurrence stays cuDNN's, and only W_x x_t is normalised, not W_h h_{t-1}.
    """

    def __init__(self, input_dim: int, cells: int, norm: bool):
        super().__init__()
        self.proj: nn.Linear | None = None
        self.norm: LayerBatchNorm | None = None
        if norm:
            self.proj = nn.Linear(input_dim, 8 * cells, bias=False)
            self.norm = LayerBatchNorm(8 * cells)
            input_dim = 8 * cells
        self.lstm = nn.LSTM(input_dim, cells, batch_first=True, bidirectional=True)
        if norm:
            eye = torch.eye(4 * cells)
            with torch.no_grad():
                self.lstm.weight_ih_l0.copy_(torch.cat([eye, torch.zeros_like(eye)], dim=1))
                self.lstm.weight_ih_l0_reverse.copy_(torch.cat([torch.zeros_like(eye), eye], dim=1))
            self.lstm.weight_ih_l0.requires_grad_(False)
            self.lstm.weight_ih_l0_reverse.requires_grad_(False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), lengths (B,) -> outputs (B, T, 2H) zero past each length, final states (B, 2H)."""
        if self.proj is not None:
            x = self.norm(self.proj(x), frame_mask(lengths.to(x.device), x.shape[1])[..., None])
        host_lengths = lengths.cpu()
        if bool((host_lengths == x.shape[1]).all()):
            # Nothing padded: the same recurrence without packing, which runs as one fused kernel on CPU.
            out, (final, _) = self.lstm(x)
        else:
            packed = pack_padded_sequence(x, host_lengths, batch_first=True, enforce_sorted=False)
            out, (final, _) = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        # Forward state at each sequence's last valid step, backward state at step 0.
        return out, torch.cat([final[0], final[1]], dim=-1)


class CnnBlstm(nn.Module):
    """Strided convs + masking + BiLSTM(s) + dense softmax layer (cnn_blstm_vtlp.txt §3, Fig. 3; best: 4 conv + 1 BiLSTM).

    Input (B, T, D) log-power spectrogram frames, seen as a 1-channel image (frequency x time). Each conv
    (kernel k, "same" padding, ReLU) strides over frequency and time instead of pooling (the paper drops
    pooling); the valid length after each conv follows ``conv_output_length`` and every step past it is
    zeroed, so the next conv sees the same zeros as a lone utterance's padding. The BiLSTM reads
    pack_padded_sequence input of exactly those lengths ("masking layer", §3), its final states (forward at
    the last valid step, backward at the first) feed the dense layer. Outputs are padding-invariant in
    train and eval mode (dropout aside).

    The paper's text gives no kernel sizes, filter counts, strides, cell count or dropout (its Fig. 3 is not
    in the text we have): the defaults here are our choice, sized for 64 ms / 32 ms frames (21-909 frames
    per utterance): time stride 2 in the first two convs (128 ms per BiLSTM step), frequency stride 2 in
    all four (256 bins -> 16, 512 -> 32).
    """

    # Most model rows per batch at CPU inference (sertk.models.predict.rows_per_batch): an utterance's 11
    # VTLP copies go as one batch; larger batches spill the conv maps from the cache (tools/bench_infer.py).
    cpu_batch_rows = 8

    @dataclass
    class Config:
        """The ``model`` section for arch cnn-blstm."""

        conv_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])  # 1-6 conv layers (§3)
        kernel: int = 3  # square conv kernel (odd, "same" padding)
        freq_strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])  # one per conv layer
        time_strides: list[int] = field(default_factory=lambda: [2, 2, 1, 1])  # one per conv layer
        dropout: float = 0.3  # after each conv and before the dense layer
        lstm_layers: int = 1  # 1-4 BiLSTM layers (§3)
        lstm_cells: int = 128  # per direction
        recurrent_norm: str = "none"  # "layer-batch": Eq. 12-14 on every BiLSTM layer's input projection
        head: str = "linear"
        head_scale: float = 30.0  # s of the cosine head (unused by the linear head)

        def __post_init__(self) -> None:
            layers = len(self.conv_channels)
            if not layers or min(self.conv_channels) < 1:
                raise ValueError(f"conv_channels: need at least one positive size, got {self.conv_channels}")
            if len(self.freq_strides) != layers or len(self.time_strides) != layers:
                raise ValueError(
                    f"freq_strides and time_strides need one entry per conv layer ({layers}), "
                    f"got {self.freq_strides} and {self.time_strides}"
                )
            if min(self.freq_strides + self.time_strides) < 1:
                raise ValueError("freq_strides and time_strides: must be >= 1")
            if self.kernel < 1 or self.kernel % 2 == 0:
                raise ValueError(f"kernel: must be odd and positive, got {self.kernel}")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
            if self.lstm_layers < 1 or self.lstm_cells < 1:
                raise ValueError("lstm_layers and lstm_cells: must be >= 1")
            if self.recurrent_norm not in RECURRENT_NORMS:
                raise ValueError(
                    f"recurrent_norm: unknown {self.recurrent_norm!r} (known: {', '.join(RECURRENT_NORMS)})"
                )
            if self.head not in HEADS:
                raise ValueError(f"head: unknown {self.head!r} (known: {', '.join(HEADS)})")

    def __init__(self, cfg: CnnBlstm.Config, input_dim: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.input_dim = input_dim
        convs = []
        in_channels, freq = 1, input_dim
        pad = cfg.kernel // 2
        for channels, f_stride, t_stride in zip(
            cfg.conv_channels, cfg.freq_strides, cfg.time_strides, strict=True
        ):
            convs.append(
                nn.Conv2d(in_channels, channels, cfg.kernel, stride=(f_stride, t_stride), padding=pad)
            )
            in_channels, freq = channels, conv_output_length(freq, cfg.kernel, f_stride)
        self.convs = nn.ModuleList(convs)
        self.dropout = nn.Dropout(cfg.dropout)
        rnn_dim = in_channels * freq
        norm = cfg.recurrent_norm == "layer-batch"
        layers = []
        for _ in range(cfg.lstm_layers):
            layers.append(RecurrentLayer(rnn_dim, cfg.lstm_cells, norm))
            rnn_dim = 2 * cfg.lstm_cells
        self.rnn = nn.ModuleList(layers)
        self.head = make_head(cfg.head, 2 * cfg.lstm_cells, num_classes, cfg.head_scale)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """BiLSTM steps of utterances of ``lengths`` frames, through every conv's time stride."""
        for stride in self.cfg.time_strides:
            lengths = conv_output_length(lengths, self.cfg.kernel, stride)
        return lengths

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, D) float, lengths (B,) long -> logits (B, C); frames t >= lengths[b] are ignored."""
        if feats.dim() != 3 or feats.shape[-1] != self.input_dim:
            raise SertkError(
                f"cnn-blstm: expected features (B, T, {self.input_dim}), got {tuple(feats.shape)}"
            )
        # (B, T, D) -> (B, 1, D, T): frequency as image height, time as width; padded frames zeroed.
        x = zero_padding(feats, lengths).transpose(1, 2)[:, None]
        inference = not torch.is_grad_enabled()
        if inference:
            # Channels-last maps, on which oneDNN's convs run 1.5-4x faster (tools/bench_infer.py).
            x = x.to(memory_format=torch.channels_last)
        for conv, stride in zip(self.convs, self.cfg.time_strides, strict=True):
            x = F.relu_(conv(x))
            lengths = conv_output_length(lengths, self.cfg.kernel, stride)
            # Without autograd a batch with nothing padded skips the (all-ones) mask: one pass less.
            if not (inference and bool((lengths == x.shape[-1]).all())):
                x = x * frame_mask(lengths, x.shape[-1]).to(x.dtype)[:, None, None, :]
            x = self.dropout(x)
        batch, channels, freq, steps = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, steps, channels * freq)
        for layer in self.rnn:
            x, final = layer(x, lengths)
        return self.head(self.dropout(final))
