"""sertk.masking: frame masks, zero padding, masked mean and masked softmax on tiny hand-checked batches."""

from __future__ import annotations

import math

import numpy as np
import torch

from sertk.masking import frame_mask, masked_mean, masked_softmax, zero_padding


def test_frame_mask_is_true_on_the_first_length_frames_of_each_row():
    mask = frame_mask(torch.tensor([3, 0, 5, 1]), 5)
    expected = [
        [True, True, True, False, False],
        [False] * 5,
        [True] * 5,
        [True, False, False, False, False],
    ]
    assert mask.dtype == torch.bool and mask.tolist() == expected


def test_zero_padding_zeroes_the_padded_frames_of_any_trailing_shape():
    # (B=2, T=3, C=2, F=2) all ones: row 0 keeps 2 frames, row 1 keeps 1; every value of a padded frame is 0.
    out = zero_padding(torch.ones(2, 3, 2, 2), torch.tensor([2, 1]))
    per_frame = out.sum(dim=(2, 3))  # 4 values per real frame
    assert per_frame.tolist() == [[4, 4, 0], [4, 0, 0]]


def test_masked_mean_averages_the_real_frames_only_and_gives_zero_for_an_empty_row():
    frames = torch.tensor(
        [
            [[1.0, 10.0], [3.0, 20.0], [100.0, 100.0]],  # 2 real frames: (1 + 3) / 2, (10 + 20) / 2
            [[4.0, -2.0], [50.0, 50.0], [50.0, 50.0]],  # 1 real frame
            [[7.0, 7.0], [7.0, 7.0], [7.0, 7.0]],  # length 0: the documented 0, not 0 / 0
        ]
    )
    out = masked_mean(frames, torch.tensor([2, 1, 0]))
    np.testing.assert_array_equal(out.numpy(), [[2.0, 15.0], [4.0, -2.0], [0.0, 0.0]])


def test_masked_softmax_is_the_softmax_of_the_real_scores_and_zero_on_padding():
    scores = torch.tensor([[1.0, 2.0, 50.0], [0.0, -30.0, 40.0]])
    out = masked_softmax(scores, torch.tensor([2, 3]))
    # Row 0 over its two real scores: e^1 / (e^1 + e^2), e^2 / (e^1 + e^2); the padded 50 gets exactly 0.
    total = math.exp(1) + math.exp(2)
    np.testing.assert_allclose(out[0].numpy(), [math.exp(1) / total, math.exp(2) / total, 0.0], rtol=1e-6)
    assert out[0, 2] == 0
    # Row 1 is all real: the plain softmax, written out.
    row = np.exp(np.array([0.0, -30.0, 40.0]) - 40.0)
    np.testing.assert_allclose(out[1].numpy(), row / row.sum(), rtol=1e-6, atol=1e-30)
