"""Every Config key of every feature type moves the numbers as its definition says: one test per key.

``KEY_TESTS`` names, for every field of every ``Config`` in ``sertk.features.FEATURES``, the test that fails
when the key is ignored or wired to the wrong place; a new key without an entry fails
``test_every_config_key_has_a_test``. Expected values come from ``feature_reference`` (numpy loops and
textbook formulas), from hand computations, or from torchaudio's Kaldi code.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import feature_reference as reference
import numpy as np
import pytest
import scipy.signal
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional

from sertk.features import FEATURES, build_feature
from sertk.features.lld import harmonics_to_noise_db
from sertk.features.pitch import _best_peak, _local_median, robust_acf_pitch
from sertk.features.speechlike import speech_like_utterance, synthetic_voice

HERE = Path(__file__).resolve().parent
SR = 16000
FRONT_END = ["sample_rate", "frame_length_ms", "frame_shift_ms", "preemphasis", "num_mel_bins", "low_freq",
             "high_freq", "num_ceps", "lifter"]  # fmt: skip
LLD_KEYS = {
    **dict.fromkeys(FRONT_END, "test_feature_options.py::test_lld_front_end_matches_the_numpy_reference"),
    "pitch": "test_feature_options.py::test_pitch_key_selects_the_tracker",
    "voicing_threshold": "test_feature_options.py::test_voicing_threshold_gates_f0",
    "f0_min": "test_feature_options.py::test_f0_range_bounds_every_voiced_f0",
    "f0_max": "test_feature_options.py::test_f0_range_bounds_every_voiced_f0",
    "acf_window_ms": "test_feature_options.py::test_acf_keys_reach_the_tracker",
    "acf_sample_rate": "test_feature_options.py::test_acf_sample_rate_is_the_trackers_rate",
    "acf_silence_threshold": "test_feature_options.py::test_acf_silence_threshold_gates_quiet_voicing",
    "acf_octave_cost": "test_feature_options.py::test_acf_keys_reach_the_tracker",  # + test_octave_cost_by_hand
    "acf_neighbour_frames": "test_feature_options.py::test_neighbour_frames_fix_a_short_octave_error",
    "f0_delay_frames": "test_lld.py::test_is09_f0_comes_one_frame_late_as_in_opensmile",
    "smooth_window": "test_feature_options.py::test_smooth_window_is_a_centred_moving_average",
    "delta_window": "test_feature_options.py::test_delta_window_is_the_regression_by_hand",
}
SPECTROGRAM_KEYS = dict.fromkeys(
    [
        "sample_rate",
        "frame_length_ms",
        "frame_shift_ms",
        "n_fft",
        "max_freq_hz",
        "window",
        "remove_dc_offset",
    ],
    "test_feature_options.py::test_spectrograms_match_the_numpy_reference",
)
KEY_TESTS = {
    "logmel40": {
        **dict.fromkeys(
            [
                "sample_rate",
                "num_mel_bins",
                "frame_length_ms",
                "frame_shift_ms",
                "preemphasis",
                "remove_dc_offset",
                "window",
                "round_to_power_of_two",
                "low_freq",
                "high_freq",
                "snip_edges",
            ],  # fmt: skip
            "test_features.py::test_fbank_matches_torchaudio_kaldi_in_one_batch",
        ),
        "dither": "test_feature_options.py::test_fbank_dither_is_kaldis_gaussian_noise",
    },
    "lld-is09": LLD_KEYS,
    "lld-rlc17": {
        **LLD_KEYS,
        "hnr_min_db": "test_feature_options.py::test_rlc17_hnr_is_10_log10_r_over_1_minus_r",
        "hnr_max_db": "test_feature_options.py::test_rlc17_hnr_is_10_log10_r_over_1_minus_r",
    },
    "spec-li2018": {
        **SPECTROGRAM_KEYS,
        "scaling": "test_spectrogram.py::test_li2018_scaling_none_is_the_plain_magnitude_and_the_others_derive_from_it",
        "mu": "test_spectrogram.py::test_li2018_scaling_none_is_the_plain_magnitude_and_the_others_derive_from_it",
    },
    "spec-logpow": {
        **SPECTROGRAM_KEYS,
        "log_floor": "test_spectrogram.py::test_logpow_floors_digital_silence",
    },
}
KEY_TESTS["spec-logpow8k"] = KEY_TESTS["spec-logpow"]
_SSL = "test_ssl_features.py::"
KEY_TESTS["ssl"] = {
    "checkpoint": _SSL + "test_hf_dir_equals_transformers_forward",
    "torchaudio_builder": _SSL + "test_torchaudio_file_equals_torchaudio_forward",
    "torchaudio_args": _SSL + "test_torchaudio_file_equals_torchaudio_forward",
    "layers": _SSL + "test_layer_subset_order_and_average",
    "average_layers": _SSL + "test_layer_subset_order_and_average",
    "dtype": _SSL + "test_dump_stores_half_precision_layers_and_records_the_layout",
    "normalize_waveform": _SSL + "test_torchaudio_and_hf_formats_give_the_same_states",
    "max_chunk_seconds": _SSL + "test_chunking_is_seamless_where_the_receptive_field_fits",
    "overlap_seconds": _SSL + "test_chunking_is_seamless_where_the_receptive_field_fits",
    "batch_seconds": _SSL + "test_padded_calls_waste_at_most_max_padding",
    "max_padding": _SSL + "test_padded_calls_waste_at_most_max_padding",
    "sample_rate": _SSL + "test_ssl_reads_16_khz_only",
    "layer_dim": _SSL + "test_dump_stores_half_precision_layers_and_records_the_layout",
    "checkpoint_sha256": _SSL + "test_torchaudio_errors_are_one_line",
}
KEY_TESTS["wave"] = {
    "sample_rate": "test_ssl_onthefly.py::test_wave_dump_holds_the_pcm_samples_exactly",
    "dtype": "test_ssl_onthefly.py::test_wave_dump_holds_the_pcm_samples_exactly",
}


def test_every_config_key_has_a_test():
    for name, cls in FEATURES.items():
        keys = {field.name for field in dataclasses.fields(cls.Config)}
        assert keys == set(KEY_TESTS[name]), f"{name}: keys without a test: {keys - set(KEY_TESTS[name])}"
        for target in KEY_TESTS[name].values():
            module, test = target.split("::")
            assert f"def {test}(" in (HERE / module).read_text(), target


def _run(name: str, options: dict, wave: np.ndarray) -> np.ndarray:
    extractor = build_feature(name, options)
    return (
        extractor.compute(torch.from_numpy(wave)[None].float(), torch.tensor([len(wave)]))[0].double().numpy()
    )


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two speech-like utterances back to back (a low and a high voice), 16 kHz."""
    return np.concatenate(
        [speech_like_utterance(1.5, (90, 160), seed=3), speech_like_utterance(1.5, (170, 300), seed=4)]
    )


# ---- fbank ---------------------------------------------------------------------------------------


def test_fbank_dither_is_kaldis_gaussian_noise():
    # Dither adds N(0, dither^2) (int16 units) to every frame sample before DC removal: on digital
    # silence the mean log-Mel energy per bin must match torchaudio's Kaldi fbank with the same dither.
    silence = torch.zeros(1, 32000)
    torch.manual_seed(0)
    ours = build_feature("logmel40", {"dither": 2.0}).compute(silence, torch.tensor([32000]))[0]
    reference_fbank = kaldi.fbank(silence * 32768, num_mel_bins=40, dither=2.0)
    assert (ours.mean(0) - reference_fbank.mean(0)).abs().max() < 0.15  # doubling the noise moves it by 1.39
    again = build_feature("logmel40", {"dither": 2.0}).compute(silence, torch.tensor([32000]))[0]
    assert not torch.equal(ours, again)


# ---- LLD front end -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,options",
    [
        ("lld-is09", {}),
        (
            "lld-is09",
            {
                "preemphasis": 0.5,
                "num_mel_bins": 20,
                "low_freq": 100.0,
                "high_freq": 6000.0,
                "num_ceps": 9,
                "lifter": 15.0,
                "frame_length_ms": 20.0,
                "frame_shift_ms": 8.0,
            },
        ),  # fmt: skip
        ("lld-rlc17", {}),
        ("lld-rlc17", {"sample_rate": 8000, "high_freq": 4000.0, "frame_length_ms": 32.0, "lifter": 0.0}),
    ],
)
def test_lld_front_end_matches_the_numpy_reference(speech, name, options):
    extractor = build_feature(name, {**options, "smooth_window": 1})
    cfg = extractor.cfg
    wave = speech if cfg.sample_rate == SR else scipy.signal.resample_poly(speech, 1, 2).astype(np.float32)
    out = _run(name, {**options, "smooth_window": 1}, wave)
    want = reference.lld_front_end(
        wave.astype(np.float64), cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms, cfg.preemphasis,
        cfg.num_mel_bins, cfg.low_freq, cfg.high_freq, cfg.num_ceps, cfg.lifter,
    )  # fmt: skip
    assert out.shape[0] == len(want["zcr"])
    ceps = cfg.num_ceps
    if name == "lld-is09":
        zcr, rms, mfcc = out[:, 0], out[:, 1], out[:, 4 : 4 + ceps]
        np.testing.assert_allclose(rms, want["rms"], rtol=1e-4, atol=1e-7)
    else:
        mfcc, zcr = out[:, :ceps], out[:, ceps + 4]
        np.testing.assert_allclose(out[:, ceps], np.log(np.maximum(want["energy"], 1e-10)), atol=2e-3)
    np.testing.assert_allclose(zcr, want["zcr"], atol=1e-6)
    np.testing.assert_allclose(mfcc, want["mfcc"], atol=2e-3)


# ---- pitch ---------------------------------------------------------------------------------------


def test_pitch_key_selects_the_tracker(speech):
    # The same tracker gives the same voicing column whichever feature set carries it (10 ms hop both).
    acf_in_is09 = _run(
        "lld-is09", {"pitch": "acf", "voicing_threshold": 0.45, "f0_min": 60.0, "smooth_window": 1}, speech
    )
    rlc = _run("lld-rlc17", {"frame_shift_ms": 10.0, "smooth_window": 1}, speech)
    np.testing.assert_allclose(acf_in_is09[:, 3], rlc[:, 13], atol=1e-6)
    is09_in_rlc = _run("lld-rlc17", {"frame_shift_ms": 10.0, "pitch": "is09", "voicing_threshold": 0.55,
                                      "f0_min": 52.0, "smooth_window": 1}, speech)  # fmt: skip
    is09 = _run("lld-is09", {"smooth_window": 1, "f0_delay_frames": 0}, speech)
    np.testing.assert_allclose(is09_in_rlc[:, 13], is09[:, 3], atol=1e-6)
    assert np.abs(is09[:, 3] - rlc[:, 13]).max() > 0.2  # the two trackers differ on this signal
    # rlc17's log F0 is ln F0 of the same tracker on voiced frames, 0 elsewhere.
    voiced = is09[:, 2] > 0
    np.testing.assert_allclose(is09_in_rlc[voiced, 15], np.log(is09[voiced, 2]), atol=1e-5)
    assert (is09_in_rlc[~voiced, 15] == 0).all()


@pytest.mark.parametrize(
    "name,thresholds,voicing_column,voiced_column",
    [("lld-is09", (0.55, 0.7), 3, 2), ("lld-rlc17", (0.45, 0.7), 13, 15)],
)
def test_voicing_threshold_gates_f0(speech, name, thresholds, voicing_column, voiced_column):
    low, high = thresholds
    options = {"smooth_window": 1, "f0_delay_frames": 0}
    loose = _run(name, {**options, "voicing_threshold": low}, speech)
    strict = _run(name, {**options, "voicing_threshold": high}, speech)
    for out, threshold in ((loose, low), (strict, high)):
        voiced = out[:, voiced_column] != 0
        assert voiced.any() and (out[voiced, voicing_column] >= threshold).all()
    between = (loose[:, voicing_column] >= low) & (loose[:, voicing_column] < high)
    assert (loose[between, voiced_column] != 0).any()  # voiced at the low threshold only


@pytest.mark.parametrize("name,f0_column", [("lld-is09", 2), ("lld-rlc17", 15)])
def test_f0_range_bounds_every_voiced_f0(speech, name, f0_column):
    def voiced_f0(options):
        out = _run(name, {"smooth_window": 1, **options}, speech)[:, f0_column]
        return out[out != 0] if name == "lld-is09" else np.exp(out[out != 0])

    wide = voiced_f0({})
    assert (wide < 150).any() and (wide > 250).any()
    narrow = voiced_f0({"f0_min": 150.0, "f0_max": 250.0})
    # is09: quefrencies ceil(16000 / 250) + 1 = 65 … ceil(16000 / 150) = 107; acf (at its 8 kHz): lags
    # floor(8000 / 250) = 32 … ceil(8000 / 150) = 54, +- 0.5 from the parabolic refinement.
    low, high = (SR / 107, SR / 65) if name == "lld-is09" else (8000 / 54.5, 8000 / 31.5)
    assert narrow.size and narrow.min() >= low - 1e-3 and narrow.max() <= high + 1e-3


@pytest.mark.parametrize(
    "key,value",
    [
        ("acf_window_ms", 40.0),
        ("acf_silence_threshold", 0.3),
        ("acf_octave_cost", 0.3),
        ("acf_sample_rate", 16000),
    ],
)
def test_acf_keys_reach_the_tracker(speech, key, value):
    extractor = build_feature("lld-rlc17", {key: value})
    cfg, waves, lengths = extractor.cfg, torch.from_numpy(speech)[None], torch.tensor([len(speech)])
    got = extractor._front_end(waves, lengths)
    frames = extractor.num_frames(len(speech))
    want = robust_acf_pitch(
        waves, lengths, torch.tensor([frames]), frames, SR, 400, 80, round(cfg.acf_window_ms * 16), cfg.f0_min,
        cfg.f0_max, cfg.voicing_threshold, cfg.acf_silence_threshold, cfg.acf_octave_cost, cfg.acf_neighbour_frames,
        cfg.acf_sample_rate,
    )  # fmt: skip
    torch.testing.assert_close(got["f0"], want[0])
    torch.testing.assert_close(got["voicing"], want[1])
    default = build_feature("lld-rlc17")._front_end(waves, lengths)
    assert not torch.equal(default["f0"], got["f0"]) or not torch.equal(default["voicing"], got["voicing"])


def test_acf_sample_rate_is_the_trackers_rate(speech):
    # The tracker at 8 kHz is the tracker run on the signal resampled to 8 kHz, with every length halved.
    waves = torch.from_numpy(speech)[None]
    frames = 1 + (len(speech) - 400) // 80
    common = (60.0, 500.0, 0.45, 0.03, 0.01, 5)
    inside = robust_acf_pitch(
        waves, torch.tensor([len(speech)]), torch.tensor([frames]), frames, SR, 400, 80, 800, *common, 8000
    )
    half = torchaudio.functional.resample(waves, SR, 8000)
    outside = robust_acf_pitch(
        half, torch.tensor([half.shape[1]]), torch.tensor([frames]), frames, 8000, 200, 40, 400, *common
    )
    torch.testing.assert_close(inside, outside)
    full = robust_acf_pitch(
        waves, torch.tensor([len(speech)]), torch.tensor([frames]), frames, SR, 400, 80, 800, *common, SR
    )
    assert not torch.equal(full[1], inside[1])


def test_acf_silence_threshold_gates_quiet_voicing():
    # A 200 Hz voice at full level, then the same at 2% (-34 dB): gated at a 3% threshold, voiced at 1%.
    f0 = torch.full((16000,), 200.0)
    voice = synthetic_voice(f0, SR)
    wave = torch.cat([voice[:8000], 0.02 * voice[8000:]])[None]
    quiet = slice(130, 180)  # frames well inside the quiet half (5 ms hop)
    for threshold, voiced in ((0.03, False), (0.01, True)):
        out = build_feature("lld-rlc17", {"acf_silence_threshold": threshold, "smooth_window": 1}).compute(
            wave, torch.tensor([16000])
        )[0]
        assert ((out[quiet, 15] != 0) == voiced).all(), threshold
        assert (out[10:90, 15] != 0).all()  # the loud half is voiced either way


def test_octave_cost_by_hand():
    # score(tau) = r(tau) - cost * log2(f0_min * tau / sample_rate); sample_rate 100, f0_min 5 Hz:
    # lag 10 -> log2 0.5 = -1, lag 20 -> 0. r(10) = 0.90, r(20) = 0.95.
    norm = torch.zeros(1, 25)
    norm[0, 10], norm[0, 20] = 0.90, 0.95
    peaks = norm > 0
    assert _best_peak(norm, peaks, 100, 5.0, 0.01)[0].item() == 20  # 0.91 < 0.95
    assert _best_peak(norm, peaks, 100, 5.0, 0.1)[0].item() == 10  # 1.00 > 0.95


def test_neighbour_frames_fix_a_short_octave_error():
    # 30 ms of a 100 Hz voice mixed into a 200 Hz one: the frames whose 50 ms window it dominates pick the
    # 10 ms period; with 10 neighbours each side their median is still 5 ms and they are re-picked at
    # 200 Hz, with 1 or 5 the median itself is 10 ms.
    v200 = synthetic_voice(torch.full((16000,), 200.0), SR)
    v100 = synthetic_voice(torch.full((16000,), 100.0), SR)
    wave = v200.clone()
    wave[8000:8480] += 0.3 * v100[8000:8480]
    stretch = slice(100, 102)  # frames 8000 / 80 … (8480 / 80) - 4

    def f0(radius):
        options = {"acf_neighbour_frames": radius, "smooth_window": 1}
        return (
            build_feature("lld-rlc17", options)
            .compute(wave[None], torch.tensor([16000]))[0, stretch, 15]
            .exp()
        )

    torch.testing.assert_close(f0(10), torch.full((2,), 200.0), rtol=0.01, atol=0)
    torch.testing.assert_close(f0(1), torch.full((2,), 100.0), rtol=0.01, atol=0)


def test_local_median_radius_by_hand():
    values = torch.tensor([[1.0, 2.0, 100.0, 3.0, 4.0]])
    valid = torch.tensor([[True, True, True, True, False]])
    # radius 1 over valid neighbours (torch's nanmedian takes the lower middle of an even count)
    assert _local_median(values, valid, 1)[0].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert _local_median(values, valid, 2)[0].tolist() == [2.0, 2.0, 2.0, 3.0, 3.0]


# ---- smoothing, deltas, HNR -----------------------------------------------------------------------


def _edge_padded(x: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(x, ((pad, pad), (0, 0)), mode="edge")


@pytest.mark.parametrize("window", [3, 5])
def test_smooth_window_is_a_centred_moving_average(speech, window):
    raw = _run("lld-is09", {"smooth_window": 1}, speech)[:, :16]
    smoothed = _run("lld-is09", {"smooth_window": window}, speech)[:, :16]
    padded = _edge_padded(raw, window // 2)
    want = sum(padded[k : k + len(raw)] for k in range(window)) / window
    np.testing.assert_allclose(smoothed, want, rtol=1e-5, atol=1e-5)
    rlc_raw = _run("lld-rlc17", {"smooth_window": 1}, speech)
    rlc = _run("lld-rlc17", {"smooth_window": window}, speech)
    columns = [*range(15), 16]  # all but log F0, which averages voiced neighbours only (test_lld.py)
    padded = _edge_padded(rlc_raw[:, columns], window // 2)
    want = sum(padded[k : k + len(rlc_raw)] for k in range(window)) / window
    np.testing.assert_allclose(rlc[:, columns], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [1, 2, 3])
def test_delta_window_is_the_regression_by_hand(speech, window):
    out = _run("lld-is09", {"delta_window": window}, speech)
    padded = _edge_padded(out[:, :16], window)
    total = len(out)
    want = sum(
        k * (padded[window + k : window + k + total] - padded[window - k : window - k + total])
        for k in range(1, window + 1)
    )
    want /= 2 * sum(k * k for k in range(1, window + 1))
    np.testing.assert_allclose(out[:, 16:], want, rtol=1e-4, atol=1e-5)


def test_rlc17_hnr_is_10_log10_r_over_1_minus_r(speech):
    r = torch.tensor([0.5, 0.9, 0.99, 0.0, 1.0])
    # 0 dB, 10 log10 9 = 9.542 dB, 10 log10 99 = 19.956 dB; r = 0 and 1 clip at the bounds.
    want = [0.0, 9.5424, 19.9564, -20.0, 40.0]
    assert harmonics_to_noise_db(r, -20.0, 40.0).tolist() == pytest.approx(want, abs=1e-3)
    out = _run("lld-rlc17", {"smooth_window": 1, "hnr_min_db": -5.0, "hnr_max_db": 12.0}, speech)
    r = np.clip(out[:, 13], 1e-6, 1 - 1e-6)
    np.testing.assert_allclose(out[:, 14], np.clip(10 * np.log10(r / (1 - r)), -5.0, 12.0), atol=1e-3)
    assert out[:, 14].min() == -5.0 and out[:, 14].max() == 12.0


# ---- spectrograms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "window": "hann",
            "remove_dc_offset": False,
            "n_fft": 2048,
            "frame_length_ms": 32.0,
            "frame_shift_ms": 16.0,
            "max_freq_hz": 2000.0,
        },
        {
            "sample_rate": 8000,
            "window": "hamming",
            "frame_length_ms": 64.0,
            "frame_shift_ms": 20.0,
            "n_fft": 512,
            "max_freq_hz": 3000.0,
        },
    ],
)
@pytest.mark.parametrize("name", ["spec-li2018", "spec-logpow"])
def test_spectrograms_match_the_numpy_reference(speech, name, options):
    extractor = build_feature(name, {**options, "scaling": "none"} if name == "spec-li2018" else options)
    cfg = extractor.cfg
    wave = speech if cfg.sample_rate == SR else scipy.signal.resample_poly(speech, 1, 2).astype(np.float32)
    wave = wave + np.float32(0.01)  # a DC offset, so remove_dc_offset matters
    got = extractor.compute(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))[0].double().numpy()
    spectrum = reference.spectrum(
        wave.astype(np.float64), cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms, cfg.n_fft,
        cfg.max_freq_hz, cfg.window, cfg.remove_dc_offset,
    )  # fmt: skip
    if name == "spec-li2018":
        np.testing.assert_allclose(got, np.abs(spectrum), rtol=1e-3, atol=1e-4 * np.abs(spectrum).max())
    else:
        want = np.log(np.maximum(np.abs(spectrum) ** 2, cfg.log_floor))
        loud = want > want.max() - 18  # within ~78 dB of the peak: above the float32 FFT's noise
        np.testing.assert_allclose(got[loud], want[loud], atol=2e-3)
    assert math.isclose(extractor.dim * cfg.sample_rate / cfg.n_fft, cfg.max_freq_hz)
