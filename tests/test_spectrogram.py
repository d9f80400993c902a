"""spec-li2018 and spec-logpow: Kaldi framing, alignment vs torch.stft, Kaldi reference, tones, μ-law, scaling."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.spectrogram import framed_spectrum, minmax_scale, mu_law_compress

SR = 16000


def tone(freq_hz: float, num_samples: int, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(num_samples, dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t)).float()


def noise(num_samples: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(num_samples, generator=generator)


@pytest.mark.parametrize("num_samples", [0, 639, 640, 799, 800, 32000, 32159])
def test_li2018_frame_count_is_kaldi_snip_edges(num_samples):
    feat = build_feature("spec-li2018")
    expected = 0 if num_samples < 640 else 1 + (num_samples - 640) // 160
    assert feat.num_frames(num_samples) == expected
    if num_samples >= 640:
        reference = kaldi.spectrogram(
            noise(num_samples)[None], frame_length=40, frame_shift=10, dither=0.0, snip_edges=True
        )
        assert reference.shape[0] == expected


def test_li2018_two_seconds_give_197_frames_of_400_bins():
    feat = build_feature("spec-li2018")
    out = feat.compute(noise(32000)[None], torch.tensor([32000]))
    assert feat.dim == 400
    assert out.shape == (1, 197, 400)


def test_frames_align_with_torch_stft_shifted_by_the_centred_window():
    # torch.stft(center=False) centres the 640-sample window in a 1600-sample frame: its frame j is
    # our frame j + (1600 - 640) / 2 / 160 = j + 3, and it has (1600 - 640) / 160 = 6 fewer frames.
    wave = noise(8000)
    ours = framed_spectrum(wave[None], 640, 160, 1600, "hamming", False, 400)[0].abs()
    window = torch.hamming_window(640, periodic=False)
    stft = torch.stft(wave, 1600, 160, 640, window, center=False, return_complex=True).abs().T[:, 1:401]
    assert ours.shape[0] == 1 + (8000 - 640) // 160
    assert stft.shape[0] == ours.shape[0] - 6
    torch.testing.assert_close(stft, ours[3 : 3 + stft.shape[0]], rtol=1e-4, atol=1e-5)


def test_framed_spectrum_matches_kaldi_hamming_power():
    # Kaldi rounds the 640-sample window up to a 1024-point DFT; with n_fft=1024 both must agree.
    wave = noise(4000, seed=1)
    ours = framed_spectrum(wave[None], 640, 160, 1024, "hamming", True, 512)[0]
    reference = kaldi.spectrogram(
        wave[None],
        frame_length=40,
        frame_shift=10,
        dither=0.0,
        preemphasis_coefficient=0.0,
        window_type="hamming",
        remove_dc_offset=True,
        snip_edges=True,
    )
    torch.testing.assert_close(ours.abs().square().log(), reference[:, 1:513], rtol=1e-4, atol=2e-3)


def test_logpow_matches_kaldi_hann_spectrogram():
    wave = noise(16000, seed=2)
    feat = build_feature("spec-logpow", {"max_freq_hz": 8000.0})
    out = feat.compute(wave[None], torch.tensor([16000]))[0]
    reference = kaldi.spectrogram(
        wave[None],
        frame_length=64,
        frame_shift=32,
        dither=0.0,
        preemphasis_coefficient=0.0,
        window_type="hanning",
        remove_dc_offset=True,
        snip_edges=True,
    )
    assert feat.dim == 512 and out.shape == (1 + (16000 - 1024) // 512, 512)
    torch.testing.assert_close(out, reference[:, 1:513], rtol=1e-4, atol=2e-3)


def test_li2018_tone_peaks_in_its_10hz_bin():
    feat = build_feature("spec-li2018")
    out = feat.compute(tone(2500.0, 16000)[None], torch.tensor([16000]))[0]
    # Bin k is k * 10 Hz and column k - 1 holds it (DC is dropped): 2500 Hz -> column 249.
    assert torch.all(out.argmax(dim=1) == 249)
    assert out.max().item() == pytest.approx(1.0)


def test_logpow_tone_peaks_in_its_bin_and_uses_4khz_by_default():
    feat = build_feature("spec-logpow")
    out = feat.compute(tone(2000.0, 16000)[None], torch.tensor([16000]))[0]
    assert feat.dim == 256 and out.shape == (30, 256)
    # 2000 Hz / 15.625 Hz = bin 128 -> column 127.
    assert torch.all(out.argmax(dim=1) == 127)


def test_logpow_floors_digital_silence():
    feat = build_feature("spec-logpow", {"log_floor": 1e-6})
    out = feat.compute(torch.zeros(1, 4096), torch.tensor([4096]))
    torch.testing.assert_close(out, torch.full_like(out, math.log(1e-6)))


def test_mu_law_hand_values():
    x = torch.tensor([-1.0, -0.1, 0.0, 0.5, 1.0])
    # ln(1 + 255|x|) / ln(256): ln 26.5 / ln 256 = 0.590988, ln 128.5 / ln 256 = 0.875703.
    expected = torch.tensor([-1.0, -0.590988, 0.0, 0.875703, 1.0])
    torch.testing.assert_close(mu_law_compress(x, 255.0), expected, rtol=0, atol=1e-5)


def test_minmax_scale_by_hand_ignores_padding():
    x = torch.tensor([[[1.0, 3.0], [5.0, 7.0], [100.0, -50.0]], [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]])
    out = minmax_scale(x, torch.tensor([2, 3]))
    # row 0: min 1, max 7 over its 2 real frames -> 2 (x - 1) / 6 - 1; its padded frame -> -1
    torch.testing.assert_close(out[0], torch.tensor([[-1.0, -1 / 3], [1 / 3, 1.0], [-1.0, -1.0]]))
    assert out[1].tolist() == [[-1.0, -1.0]] * 3  # constant: no contrast, the floor


def test_li2018_scaling_none_is_the_plain_magnitude_and_the_others_derive_from_it():
    wave = noise(4000, seed=6) + 0.05  # with a DC offset, removed per frame
    lengths = torch.tensor([4000])
    plain = build_feature("spec-li2018", {"scaling": "none"}).compute(wave[None], lengths)[0].double()
    frames = wave.double().unfold(0, 640, 160)
    window = torch.hamming_window(640, periodic=False, dtype=torch.float64)
    by_hand = torch.fft.rfft((frames - frames.mean(-1, keepdim=True)) * window, n=1600).abs()[:, 1:401]
    torch.testing.assert_close(plain, by_hand, rtol=1e-4, atol=1e-5)
    peak = build_feature("spec-li2018", {"scaling": "peak", "mu": 100.0}).compute(wave[None], lengths)[0]
    torch.testing.assert_close(
        peak.double(), mu_law_compress(by_hand / by_hand.max(), 100.0), rtol=1e-4, atol=1e-5
    )
    minmax = build_feature("spec-li2018", {"scaling": "minmax"}).compute(wave[None], lengths)
    expected = mu_law_compress(minmax_scale(by_hand[None], torch.tensor([by_hand.shape[0]])), 255.0)
    torch.testing.assert_close(minmax.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scaling", ["peak", "minmax"])
def test_li2018_range_and_minmax_end_points(scaling):
    feat = build_feature("spec-li2018", {"scaling": scaling})
    out = feat.compute(noise(6000)[None], torch.tensor([6000]))[0]
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.max().item() == pytest.approx(1.0)
    if scaling == "minmax":
        assert out.min().item() == pytest.approx(-1.0)
    else:
        assert out.min().item() >= 0.0


def test_li2018_peak_scaling_removes_gain():
    feat = build_feature("spec-li2018")
    wave = noise(5000, seed=3)
    loud = feat.compute(wave[None], torch.tensor([5000]))
    quiet = feat.compute(0.01 * wave[None], torch.tensor([5000]))
    torch.testing.assert_close(loud, quiet, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,options",
    [("spec-li2018", {"scaling": "minmax"}), ("spec-li2018", {"scaling": "peak"}), ("spec-logpow", {})],
)
def test_batched_rows_equal_each_utterance_alone(name, options):
    # The peak and the min/max come from each row's own frames, never from its padding.
    feat = build_feature(name, options)
    short, long = noise(3000, seed=4), 5.0 * noise(9000, seed=5)
    waves = torch.zeros(2, 9000)
    waves[0, :3000], waves[1] = short, long
    waves[0, 3000:] = 0.9  # garbage in the padding must not leak into the short row's scale
    batch = feat.compute(waves, torch.tensor([3000, 9000]))
    for row, wave in enumerate([short, long]):
        alone = feat.compute(wave[None], torch.tensor([wave.numel()]))[0]
        frames = feat.num_frames(wave.numel())
        torch.testing.assert_close(batch[row, :frames], alone[:frames], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("spec-li2018", {"scaling": "log"}, "scaling"),
        ("spec-li2018", {"window": "kaiser"}, "window"),
        ("spec-li2018", {"max_freq_hz": 4005.0}, "max_freq_hz"),
        ("spec-li2018", {"n_fft": 512}, "n_fft"),
        ("spec-li2018", {"mu": 0.0}, "mu must be positive"),
        ("spec-logpow", {"max_freq_hz": 9000.0}, "max_freq_hz"),
        ("spec-logpow", {"log_floor": 0.0}, "log_floor"),
    ],
)
def test_bad_options_are_one_line_errors(name, config, message):
    with pytest.raises(SertkError, match=message):
        build_feature(name, config)


def test_max_freq_one_bin_past_nyquist_is_an_error():
    # 8015.625 Hz is bin 513 of a 1024-point DFT at 16 kHz, one past Nyquist (bin 512): rfft has no such bin.
    with pytest.raises(SertkError, match="max_freq_hz must lie in"):
        build_feature("spec-logpow", {"max_freq_hz": 8015.625})
