"""tools/bench_infer.py's FLOP count: a conv, an LSTM and a linear layer against their hand formulas."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_infer  # noqa: E402


def test_counted_flops_of_conv_blstm_and_linear_equal_the_hand_count():
    torch.manual_seed(0)
    frames, mels, channels, cells, classes = 50, 12, 3, 5, 4
    conv = torch.nn.Conv2d(1, channels, 3, padding=1)
    lstm = torch.nn.LSTM(channels * mels, cells, batch_first=True, bidirectional=True)
    linear = torch.nn.Linear(2 * cells, classes)

    def forward():
        x = conv(torch.randn(1, 1, mels, frames))  # (1, C, F, T)
        out, _ = lstm(x.permute(0, 3, 1, 2).reshape(1, frames, channels * mels))
        return linear(out)

    per_pixel_conv = 2 * 9 * channels
    # Per frame and direction: 4 gates of input and recurrent products (2 FLOPs per multiply-add).
    per_frame_lstm = 2 * 2 * 4 * cells * (channels * mels + cells)
    per_frame_linear = 2 * 2 * cells * classes
    expected = frames * (mels * per_pixel_conv + per_frame_lstm + per_frame_linear)
    assert bench_infer.count_flops(forward) == expected
