"""The feature registry, the Kaldi fbank against torchaudio's reference, and audio reading."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional

from sertk.config import read_yaml, to_dict
from sertk.errors import SertkError
from sertk.features import FEATURES, build_feature
from sertk.features.audio import read_audio
from sertk.features.fbank import FbankConfig, KaldiFbank


def _batch(signals: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in signals])
    waves = torch.zeros(len(signals), int(lengths.max()))
    for row, s in enumerate(signals):
        waves[row, : len(s)] = s
    return waves, lengths


def _reference(signal: torch.Tensor, cfg: FbankConfig) -> torch.Tensor:
    window = {"hann": "hanning"}.get(cfg.window, cfg.window)
    return kaldi.fbank(
        signal[None].double() * 32768,
        num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        preemphasis_coefficient=cfg.preemphasis,
        remove_dc_offset=cfg.remove_dc_offset,
        window_type=window,
        round_to_power_of_two=cfg.round_to_power_of_two,
        low_freq=cfg.low_freq,
        high_freq=cfg.high_freq,
        snip_edges=cfg.snip_edges,
        sample_frequency=cfg.sample_rate,
        dither=0.0,
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"window": "hamming", "snip_edges": False},
        {"window": "hann", "low_freq": 60.0, "high_freq": -400.0, "remove_dc_offset": False},
        {"round_to_power_of_two": False, "preemphasis": 0.5, "num_mel_bins": 23},
        {"sample_rate": 8000, "frame_length_ms": 40.0, "frame_shift_ms": 20.0},
    ],
)
def test_fbank_matches_torchaudio_kaldi_in_one_batch(options):
    extractor = build_feature("logmel40", options)
    generator = torch.Generator().manual_seed(1)
    rate = extractor.sample_rate
    # Speech-like mixture: a DC offset, a tone and noise, at different lengths, one shorter than a frame.
    lengths = [rate, extractor.window_length + 1, extractor.window_length - 1, rate // 2 + 37, 3 * rate + 11]
    signals = []
    for n in lengths:
        t = torch.arange(n) / rate
        tone = 0.3 * torch.sin(2 * torch.pi * 220 * t)
        signals.append(0.05 + tone + 0.05 * torch.randn(n, generator=generator))
    waves, lens = _batch(signals)
    feats = extractor.compute(waves, lens)
    assert feats.dtype == torch.float32
    assert feats.shape[2] == extractor.dim == extractor.cfg.num_mel_bins
    compared = 0
    for row, signal in enumerate(signals):
        if len(signal) < extractor.window_length:
            shift = extractor.window_shift
            expected = 0 if extractor.cfg.snip_edges else (len(signal) + shift // 2) // shift
            assert extractor.num_frames(len(signal)) == expected
            continue
        ref = _reference(signal, extractor.cfg)
        frames = extractor.num_frames(len(signal))
        assert frames == ref.shape[0]
        diff = (feats[row, :frames].double() - ref).abs().max().item()
        assert diff < 1e-4, (row, diff)
        compared += 1
    assert compared == 4


def test_num_frames_snip_edges():
    extractor = build_feature("logmel40")
    assert extractor.window_length == 400 and extractor.window_shift == 160 and extractor.fft_size == 512
    assert extractor.num_frames(399) == 0
    assert extractor.num_frames(400) == 1
    assert extractor.num_frames(559) == 1
    assert extractor.num_frames(560) == 2
    assert extractor.num_frames(16000) == 1 + (16000 - 400) // 160 == 98
    waves, lengths = _batch([torch.randn(16000) * 0.1, torch.randn(560) * 0.1])
    assert extractor.compute(waves, lengths).shape == (2, 98, 40)


def test_batch_rows_equal_single_utterance():
    extractor = build_feature("logmel40")
    long, short = torch.randn(8000) * 0.1, torch.randn(1234) * 0.1
    waves, lengths = _batch([long, short])
    batched = extractor.compute(waves, lengths)
    alone = extractor.compute(short[None], torch.tensor([1234]))
    frames = extractor.num_frames(1234)
    # Equal up to float32 rounding: the FFT and matmul kernels vectorise differently per batch shape.
    torch.testing.assert_close(batched[1, :frames], alone[0], rtol=0, atol=1e-5)
    assert not torch.allclose(batched[0, :frames], alone[0], atol=1e-2)


def test_silence_hits_kaldi_log_floor():
    extractor = build_feature("logmel40")
    feats = extractor.compute(torch.zeros(1, 800), torch.tensor([800]))
    expected = np.log(np.finfo(np.float32).eps)
    assert torch.allclose(feats, torch.full_like(feats, float(expected)))


def test_unknown_feature_name_lists_known():
    with pytest.raises(SertkError, match=r"unknown feature 'mfcc99' \(known: .*logmel40"):
        build_feature("mfcc99")


def test_unknown_yaml_key(tmp_path):
    conf = tmp_path / "fb.yaml"
    conf.write_text("num_mel_bins: 40\nnum_mel_bin: 80\n")
    with pytest.raises(SertkError, match=r"fb.yaml: unknown key\(s\) num_mel_bin"):
        build_feature("logmel40", conf)


def test_bad_option_values():
    with pytest.raises(SertkError, match="window must be one of"):
        build_feature("logmel40", {"window": "blackman-harris"})
    with pytest.raises(SertkError, match="high_freq"):
        build_feature("logmel40", {"low_freq": 5000.0, "high_freq": 4000.0})
    with pytest.raises(SertkError, match="expected an integer"):
        build_feature("logmel40", {"num_mel_bins": "forty"})


def test_every_feature_type_has_its_own_version():
    # The provenance record of a dump holds it; an inherited or missing one would let two extractors
    # (or an old and a new one) share a record.
    for name, cls in FEATURES.items():
        assert isinstance(vars(cls).get("version"), int) and cls.version >= 1, name


def test_registry_and_recipe_config():
    assert FEATURES["logmel40"] is KaldiFbank
    conf = "egs/iemocap/conf/feats/logmel40.yaml"
    assert to_dict(build_feature("logmel40", conf).cfg) == to_dict(FbankConfig())
    assert read_yaml(conf) == to_dict(FbankConfig())


def test_stereo_and_8k_are_downmixed_and_resampled(tmp_path):
    rng = np.random.default_rng(0)
    mono16 = 0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000) + 0.01 * rng.standard_normal(16000)
    mono16 = mono16.astype(np.float32)
    left, right = mono16 + 0.1, mono16 - 0.1
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    mono8 = mono16[::2].copy()
    soundfile.write(tmp_path / "mono8k.wav", mono8, 8000, subtype="FLOAT")

    wave, downmixed, resampled = read_audio(tmp_path / "stereo.wav", 16000)
    assert downmixed and not resampled
    np.testing.assert_allclose(wave, mono16, atol=1e-6)

    wave, downmixed, resampled = read_audio(tmp_path / "mono8k.wav", 16000)
    assert resampled and not downmixed
    expected = torchaudio.functional.resample(torch.from_numpy(mono8), 8000, 16000).numpy()
    assert wave.shape == (16000,)
    np.testing.assert_allclose(wave, expected, atol=1e-6)


def test_unreadable_audio_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(SertkError, match=r"bad.wav: cannot read audio") as err:
        read_audio(bad, 16000)
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(SertkError, match=r"empty.wav: empty audio file"):
        read_audio(empty, 16000)


def test_pcm16_read_equals_soundfile_float(tmp_path):
    rng = np.random.default_rng(3)
    samples = rng.integers(-32768, 32767, size=(1000, 2), dtype=np.int16)
    soundfile.write(tmp_path / "pcm.wav", samples, 16000, subtype="PCM_16")
    wave, downmixed, resampled = read_audio(tmp_path / "pcm.wav", 16000)
    expected = soundfile.read(tmp_path / "pcm.wav", dtype="float32")[0].mean(axis=1, dtype=np.float32)
    assert downmixed and not resampled
    assert np.array_equal(wave, expected)
    assert np.array_equal(wave, samples.astype(np.float32).mean(axis=1, dtype=np.float32) / 32768)


def test_fbank_reads_waves_on_kaldis_int16_scale():
    # Kaldi's energies are of int16 sample values, x * 32768 for waves in [-1, 1]: a scale of 32767 would
    # shift every log energy by 2 ln(32768 / 32767) = 6.1e-5, six times the float32 rounding seen here.
    t = torch.arange(4000) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(
        4000, generator=torch.Generator().manual_seed(0)
    )
    ours = build_feature("logmel40").compute(wave[None], torch.tensor([4000]))[0].double()
    reference = kaldi.fbank(wave[None].double() * 32768, num_mel_bins=40, dither=0.0)
    assert (ours - reference).mean().abs().item() < 1e-5


@pytest.mark.parametrize(
    "options,match",
    [
        ({"low_freq": 4000.0, "high_freq": 4000.0}, "need 0 <= low_freq < high_freq"),
        ({"frame_length_ms": 10.0, "frame_shift_ms": 25.0}, "frame_shift_ms <= frame_length_ms"),
        ({"dither": -0.5}, "dither must be >= 0"),
        ({"preemphasis": 1.5}, "preemphasis must be in"),
        ({"round_to_power_of_two": False, "frame_length_ms": 25.0625}, "FFT size 401 is odd"),
    ],
)
def test_fbank_option_ranges_are_checked(options, match):
    with pytest.raises(SertkError, match=match):
        build_feature("logmel40", options)
