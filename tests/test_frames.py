"""The shared signal primitives of sertk.features.frames, each against a hand computation or a reference."""

import feature_reference as reference
import numpy as np
import pytest
import scipy.signal
import torch

from sertk.features.frames import (
    analysis_window,
    centred_frames,
    dct_matrix,
    fast_fft_size,
    frame_signal,
    frame_sums,
    lifter_weights,
    mel_filterbank,
    next_power_of_two,
    num_centred_frames,
    num_frames,
    preemphasize,
)


def test_frame_signal_cuts_kaldi_snip_edges_frames():
    waves = torch.arange(1.0, 11.0)[None]  # N = 10, L = 4, S = 3: frames start at 0, 3, 6
    frames = frame_signal(waves, 4, 3)
    assert frames.tolist() == [[[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]]]
    assert frame_signal(torch.ones(1, 2), 4, 3).tolist() == [[[1, 1, 0, 0]]]  # narrower than a frame


def test_num_frames_for_ints_and_tensors():
    counts = [num_frames(n, 400, 160) for n in (0, 399, 400, 559, 560, 16000)]
    assert counts == [0, 0, 1, 1, 2, 98]
    lengths = torch.tensor([0, 399, 400, 559, 560, 16000])
    assert num_frames(lengths, 400, 160).tolist() == counts
    assert num_frames(10, 4, 3) == frame_signal(torch.zeros(1, 10), 4, 3).shape[1]


def test_centred_frames_mirror_each_row_at_its_own_ends():
    # Kaldi snip_edges=false, L = 4, S = 2: frame m starts at 2m + 1 - 2; x[-1] = x[0], x[n + i] = x[n-1-i].
    waves = torch.tensor([[1.0, 2, 3, 4, 5, 0, 0], [1.0, 2, 3, 4, 5, 6, 7]])
    frames = centred_frames(waves, torch.tensor([5, 7]), 4, 2)
    assert num_centred_frames(5, 2) == 3 and num_centred_frames(7, 2) == 4
    assert frames[0, :3].tolist() == [[1, 1, 2, 3], [2, 3, 4, 5], [4, 5, 5, 4]]
    assert frames[1].tolist() == [[1, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 7, 6]]


@pytest.mark.parametrize("length", [400, 641])
def test_analysis_windows_by_formula(length):
    n = np.arange(length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))
    np.testing.assert_allclose(analysis_window("hann", length).numpy(), hann, atol=1e-12)
    np.testing.assert_allclose(
        analysis_window("hamming", length).numpy(), scipy.signal.get_window("hamming", length, False)
    )
    np.testing.assert_allclose(analysis_window("povey", length).numpy(), hann**0.85, atol=1e-12)
    assert analysis_window("hann", length, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="window must be one of"):
        analysis_window("kaiser", length)


def test_fft_sizes():
    assert [next_power_of_two(n) for n in (1, 400, 512, 513, 640)] == [1, 512, 512, 1024, 1024]

    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for minimum in range(1, 400):
        assert fast_fft_size(minimum) == next(n for n in range(minimum, 2 * minimum + 1) if smooth(n))
    assert fast_fft_size(800 + 268 + 1) == 1080


def test_preemphasis_treats_the_first_sample_as_its_own_predecessor():
    frames = torch.tensor([[[1.0, 2.0, 4.0], [2.0, 2.0, 2.0]]])
    assert preemphasize(frames, 0.5).tolist() == [[[0.5, 1.5, 3.0], [1.0, 1.0, 1.0]]]
    buffer = torch.full((1, 2, 5), 9.0)
    preemphasize(frames, 0.5, out=buffer[..., :3])
    assert buffer[0, 0].tolist() == [0.5, 1.5, 3.0, 9.0, 9.0]


def test_frame_sums_equal_direct_sums_over_frames():
    x = torch.randn(2, 101)
    starts = torch.arange(0, 101 - 25 + 1, 7)
    direct = x.unfold(1, 25, 7).sum(-1)
    torch.testing.assert_close(frame_sums(x, starts, 25), direct, rtol=1e-5, atol=1e-5)
    flags = x > 0
    assert torch.equal(frame_sums(flags, starts, 25), flags.unfold(1, 25, 7).sum(-1).float())


@pytest.mark.parametrize(
    "num_bins,fft_size,rate,low,high,high_arg",
    [
        (26, 512, 16000, 0.0, 8000.0, 8000.0),
        (40, 512, 16000, 20.0, 8000.0, 0.0),
        (23, 1024, 16000, 60.0, 7600.0, -400.0),
    ],
)
def test_mel_filterbank_is_the_htk_triangle_bank(num_bins, fft_size, rate, low, high, high_arg):
    bank = mel_filterbank(num_bins, fft_size, rate, low, high_arg)
    assert bank.shape == (fft_size // 2 + 1, num_bins) and bank.dtype == torch.float32
    np.testing.assert_allclose(
        bank.numpy(), reference.mel_bank(num_bins, fft_size, rate, low, high), atol=2e-5
    )
    assert bank[0].abs().max() == 0 and bank[-1].abs().max() == 0  # DC and Nyquist carry no weight


def test_dct_matrix_is_htk_eq_5_14_with_the_eq_5_12_lifter():
    want = reference.lifted_dct(26, 12, 22.0)
    np.testing.assert_allclose(dct_matrix(26, 12, 22.0).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(dct_matrix(26, 12, 0.0).numpy(), reference.lifted_dct(26, 12, 0.0), atol=1e-12)
    i = np.arange(1, 13)
    np.testing.assert_allclose(lifter_weights(12, 22.0).numpy(), 1 + 11 * np.sin(np.pi * i / 22))
    assert lifter_weights(3, 0.0).tolist() == [1.0, 1.0, 1.0]


def test_frame_sums_of_floats_are_float64_accurate_on_long_signals():
    # Values near 1 over 200 k samples: a float32 running sum is ~2e5 there, where its steps are 0.016, so
    # differencing it would miss each 400-sample sum by ~1e-4 of itself; the float64 one does not.
    generator = torch.Generator().manual_seed(0)
    x = 1.0 + 1e-3 * torch.randn(1, 200_000, generator=generator)
    starts = torch.arange(0, 200_000 - 400 + 1, 160)
    direct = x.double().unfold(1, 400, 160).sum(-1)
    torch.testing.assert_close(frame_sums(x, starts, 400).double(), direct, rtol=1e-6, atol=0)
