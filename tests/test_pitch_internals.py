"""The pitch trackers' internals against hand computations and a plain numpy restatement of the ACF tracker;
the LLD sets' pitch gate and configuration limits.

``acf_tracker_reference`` rewrites ``robust_acf_pitch`` from its definition (Boersma 1993 Eq. 9 with a Hann
window centred on each frame, the lag range, parabolic refinement, octave cost, the central-quarter silence
gate, the octave re-pick around the local median) one frame at a time with ``np.correlate``, sharing no
code with sertk, so a flipped comparison, a dropped mask or a shifted window in the tracker moves its
output away from the reference.
"""

import math

import numpy as np
import pytest
import torch

from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.lld import Is09Config, Is09Lld
from sertk.features.pitch import (
    _lag_range,
    _parabolic,
    _peak_candidates,
    acf_voicing,
    cepstral_peak_f0,
    is09_f0_contour,
    robust_acf_pitch,
)
from sertk.features.speechlike import synthetic_voice

RATE = 8000  # the acf tracker's own analysis rate: 25 ms frames of 200 samples, 5 ms hop of 40, 50 ms window
FRAME, HOP, WINDOW = 200, 40, 400


def _parabola(y: np.ndarray, k: int) -> tuple[float, float]:
    """Vertex (position, height) of the parabola through (k-1, y[k-1]), (k, y[k]), (k+1, y[k+1])."""
    a, b, c = y[k - 1], y[k], y[k + 1]
    curvature = a - 2 * b + c
    shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    return k + shift, b - 0.25 * (a - c) * shift


def acf_tracker_reference(wave, length, frames, rate, frame, hop, window, f0_min, f0_max, threshold,
                          silence, octave_cost, radius):  # fmt: skip
    """(F0, r) per frame of one utterance ``wave[:length]``, restated from the tracker's definition."""
    x = np.zeros(len(wave) + 2 * window)
    x[:length] = wave[:length]  # nothing past the utterance's own length
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / (window - 1))
    max_lag = min(math.ceil(rate / f0_min) + 1, window // 2)
    lag_min = math.floor(rate / f0_max)
    window_acf = np.correlate(hann, hann, "full")[window - 1 : window + max_lag]
    left, core = (window - frame) // 2, frame // 4
    period, r, rms, found = np.zeros(frames), np.zeros(frames), np.zeros(frames), np.zeros(frames, bool)
    candidates = []
    for t in range(frames):
        start = t * hop - left  # the long window centred on frame t's [t hop, t hop + frame)
        segment = np.array([x[i] if i >= 0 else 0.0 for i in range(start, start + window)])
        segment = (segment - segment.mean()) * hann
        acf = np.correlate(segment, segment, "full")[window - 1 : window + max_lag]
        centre = t * hop + (frame - core) // 2
        rms[t] = math.sqrt(np.mean(x[centre : centre + core] ** 2))
        if acf[0] <= 0:
            candidates.append((None, []))
            continue
        norm = (acf / acf[0]) / (window_acf / window_acf[0])  # Boersma Eq. 9
        # local maxima, strictly above the left neighbour, at least the right one
        peaks = [k for k in range(max(lag_min, 1), max_lag) if norm[k - 1] < norm[k] >= norm[k + 1]]
        candidates.append((norm, peaks))
        if peaks:
            best = max(peaks, key=lambda k: norm[k] - octave_cost * math.log2(f0_min * k / rate))
            period[t], r[t] = _parabola(norm, best)
            found[t] = True
    voiced = found & (r >= threshold) & (rms >= silence * rms.max())
    new_period, new_r = period.copy(), r.copy()
    for t in np.flatnonzero(voiced):
        near = sorted(period[u] for u in range(max(0, t - radius), min(frames, t + radius + 1)) if voiced[u])
        median = near[(len(near) - 1) // 2]  # the lower middle of an even count, as torch.nanmedian
        if abs(math.log2(period[t] / median)) > 0.6:  # about an octave off its neighbours
            norm, peaks = candidates[t]
            close = [k for k in peaks if abs(k - median) <= 0.2 * median]
            if close:
                new_period[t], new_r[t] = _parabola(norm, max(close, key=lambda k: norm[k]))
    f0 = np.where(voiced, rate / np.maximum(new_period, 1.0), 0.0)
    return f0, np.clip(np.where(found, new_r, 0.0), 0.0, 1.0)


def _voice(f0) -> torch.Tensor:
    return synthetic_voice(torch.as_tensor(f0, dtype=torch.float64), RATE)


def _reference_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three utterances that exercise every rule of the tracker, zero-padded with garbage past each length."""
    # a: silence, a 110 -> 260 Hz glide on a DC offset (mean removal), noise, a 498 Hz voice (lag 16.06, at
    # f0_max 500's lag floor(8000 / 500) = 16), and an octave-off stretch (a 100 Hz voice mixed in).
    f0 = torch.zeros(4000, dtype=torch.float64)
    f0[400:2400] = torch.linspace(110, 260, 2000)
    f0[2800:3600] = 498.0
    a = _voice(f0)
    noise = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a[2400:2800] += 0.02 * noise
    a += 0.05
    # b: 60.25 Hz, just above f0_min 60.2: its peak lag 132.8 rounds to ceil(8000 / 60.2) = 133, the last
    # candidate; a slow fade to 0.5% and back, so the silence gate (3%) is decided by the frames' central
    # quarters while their ACF peaks stay high; then a loud DC burst in the last 50 samples, after the last
    # frame (2800 … 3000): it lies in the central quarter of no valid frame, so it must not raise the
    # utterance's loudness reference (frame 71's centre 2915 … 2965 holds some of it).
    gain = torch.ones(3000, dtype=torch.float64)
    gain[1300:1700] = torch.logspace(0, math.log10(0.005), 400, dtype=torch.float64)
    gain[1700:1900] = 0.005
    gain[1900:2300] = torch.logspace(math.log10(0.005), 0, 400, dtype=torch.float64)
    b = 0.3 * _voice(torch.full((3000,), 60.25)) * gain
    b[2950:] = 20.0
    # c: a 20 Hz tone, then a 200 Hz voice with 100 Hz mixed into 30 ms of it: the tone's period lies past
    # the lag range, so its ACF has no peak and no F0 (not the lag-1 edge); the mixture's frames pick the
    # 100 Hz period and are re-picked near their neighbours' median 5 ms.
    tone = 0.4 * torch.sin(2 * math.pi * 20 * torch.arange(1200, dtype=torch.float64) / RATE)
    mix = _voice(torch.full((2400,), 200.0))
    mix[1000:1240] += 0.3 * _voice(torch.full((2400,), 100.0))[1000:1240]
    c = torch.cat([tone, mix])
    lengths = torch.tensor([4000, 3000, 3600])
    batch = torch.full((3, 4000), 0.7, dtype=torch.float64)  # garbage past each row's length
    for row, wave in enumerate((a, b, c)):
        batch[row, : len(wave)] = wave
    return batch, lengths


TRACKER = dict(f0_min=60.2, f0_max=500.0, voicing_threshold=0.45, silence_threshold=0.03, octave_cost=0.01,
               neighbour_radius=5)  # fmt: skip


def test_acf_tracker_equals_a_numpy_restatement_of_its_definition(one_thread):
    batch, lengths = _reference_batch()
    counts = 1 + (lengths - FRAME) // HOP
    total = int(counts.max())
    f0, r = robust_acf_pitch(batch, lengths, counts, total, RATE, FRAME, HOP, WINDOW, *TRACKER.values())
    for row in range(3):
        n = int(counts[row])
        want_f0, want_r = acf_tracker_reference(batch[row].numpy(), int(lengths[row]), n, RATE, FRAME, HOP,
                                                WINDOW, *TRACKER.values())  # fmt: skip
        np.testing.assert_allclose(f0[row, :n].numpy(), want_f0, rtol=1e-6, atol=1e-6, err_msg=f"row {row}")
        np.testing.assert_allclose(r[row, :n].numpy(), want_r, atol=1e-6, err_msg=f"row {row}")
        assert (f0[row, n:] == 0).all() and (r[row, n:] == 0).all()  # frames past the row: nothing


def test_peak_candidates_are_strict_on_the_left_and_take_a_plateaus_first_lag():
    acf = torch.tensor([[1.0, 0.2, 0.5, 0.5, 0.1, 0.3, 0.9, 0.4, 0.6, 0.2, 0.8, 0.3]])
    # lags 2 … 8: 2 (0.5 > 0.2, 0.5 >= 0.5: a plateau's first lag), not 3 (0.5 is not > 0.5), 6, 8
    # (0.6 >= 0.2); the peak at 10 lies past lag_max 8.
    assert _peak_candidates(acf, 2, 8)[0].nonzero().flatten().tolist() == [2, 6, 8]
    # lag_max past the end: the last lag that has a right neighbour is K - 2 = 10; lag 11 never counts.
    assert _peak_candidates(acf, 2, 50)[0].nonzero().flatten().tolist() == [2, 6, 8, 10]


def test_lag_range_is_one_below_the_f0_max_period_and_rounds_the_f0_min_period_up():
    # first: ceil(16000 / 500) - 1 = 31 (openSMILE's int(1 / (f0_max T)) one below an integer period),
    # ceil(16000 / 480 = 33.3) - 1 = 33; last: ceil(16000 / 60 = 266.7) = 267, or size - 1.
    assert _lag_range(16000, 60.0, 500.0, 400) == (31, 267)
    assert _lag_range(16000, 60.0, 480.0, 400) == (33, 267)
    assert _lag_range(16000, 52.0, 500.0, 256) == (31, 255)


def test_acf_voicing_counts_only_strict_rises_and_always_the_last_lag():
    # sample_rate 16, f0 in [2, 4] Hz: lags 3 … 8, over a_0 = 2.
    plateau = [2.0, 0, 1.5, 1.5, 0, 0, 0.8, 0, 0, 0, 0, 0]  # lag 3 equals lag 2: no rise; lag 6 rises
    falling = [2.0, 1.95, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3, 1.95, 0, 0]  # no rise: lag 8 (1.3) counts anyway
    acf = torch.tensor([plateau, falling], dtype=torch.float64)
    assert acf_voicing(acf, 16, 2.0, 4.0).tolist() == pytest.approx([0.8 / 2, 1.3 / 2])
    # f0_min 3 Hz: the last lag is ceil(16 / 3 = 5.33) = 6, not 5.
    rising = torch.tensor([[2.0, 0, 0, 0, 0, 0.2, 1.2, 0, 0, 0, 0, 0]])
    assert acf_voicing(rising, 16, 3.0, 4.0).item() == pytest.approx(0.6)


def test_cepstral_peak_band_ends_at_the_f0_min_quefrency_rounded_up():
    # sample_rate 16, f0_min 2.5 Hz: q_max = ceil(16 / 2.5 = 6.4) = 7; f0_max 4: the max over q >= 4.
    # Threshold 0.6 (2 + 12 / 12) = 1.8: a peak of 2 at q = 7 is F0 16 / 7; at q = 8 it is out of range.
    cepstrum = torch.zeros(2, 12)
    cepstrum[:, 0] = 10.0
    cepstrum[0, 7] = 2.0
    cepstrum[1, 8] = 2.0
    assert cepstral_peak_f0(cepstrum, 16, 2.5, 4.0).tolist() == pytest.approx([16 / 7, 0.0])


def test_is09_f0_contour_sees_no_voicing_past_a_rows_frames():
    # Row 0 has 2 frames: its voiced frame 1 has no voiced successor (frame 2 is padding), so it is an
    # isolated voiced frame and becomes unvoiced; the padding stays 0. Row 1 (4 frames) keeps the run:
    # 100, then (100 + 100) / 2, and frame 3 is averaged with frame 2.
    raw = torch.tensor([[0.0, 100, 100, 100], [0.0, 100, 100, 110]])
    out = is09_f0_contour(raw, torch.tensor([2, 4]))
    assert out.tolist() == [[0, 0, 0, 0], pytest.approx([0, 100, 100, 105])]


def test_parabolic_shift_stays_within_half_a_lag():
    # At a non-peak lag the vertex can lie far away: y = 0, 1, 1.9 has its vertex 9.5 lags right of lag 1.
    # The shift is clamped to 0.5: position 1.5, height 1 - 0.25 (0 - 1.9) 0.5 = 1.2375. (The tracker only
    # passes peaks, where |shift| <= 0.5 holds by itself.)
    position, height = _parabolic(
        torch.tensor([[0.0, 1.0, 1.9, 2.5]], dtype=torch.float64), torch.tensor([1])
    )
    assert (position.item(), height.item()) == pytest.approx((1.5, 1.2375))


def test_is09_f0_is_kept_where_voicing_equals_the_threshold(one_thread):
    # F0 = 0 only where voicing < voicing_threshold: a threshold equal to a frame's own voicing keeps its
    # F0, the next float32 above it drops it. The frame is chosen inside a voiced run whose neighbours are
    # at least as voiced, so the isolated-frame rule cannot interfere.
    wave = synthetic_voice(torch.full((2400,), 200.0), 16000)[None]
    wave[0, :1200] *= torch.linspace(0.2, 1.0, 1200)  # a rising level, so the voicing varies by frame
    lengths = torch.tensor([2400])

    def f0_and_voicing(threshold):
        cfg = Is09Config(smooth_window=1, f0_delay_frames=0, voicing_threshold=threshold)
        out = Is09Lld(cfg).compute(wave, lengths)[0]
        return out[:, 2], out[:, 3]

    f0, voicing = f0_and_voicing(0.55)
    inner = [t for t in range(1, len(f0) - 1) if f0[t] > 0 and voicing[t - 1] >= voicing[t] <= voicing[t + 1]]
    frame = inner[0]
    level = float(voicing[frame])
    assert f0_and_voicing(level)[0][frame] > 0
    above = float(np.nextafter(np.float32(level), np.float32(1.0)))
    assert f0_and_voicing(above)[0][frame] == 0


@pytest.mark.parametrize(
    "name,override,match",
    [
        ("lld-rlc17", {"acf_window_ms": 20.0}, "acf_window_ms must be at least frame_length_ms"),
        ("lld-rlc17", {"hnr_min_db": 5.0, "hnr_max_db": 5.0}, "hnr_min_db < hnr_max_db"),
        ("lld-is09", {"acf_neighbour_frames": 0}, "acf_neighbour_frames must be >= 1"),
        ("lld-is09", {"num_ceps": 26}, "must be below num_mel_bins"),
        # 16000 / 40.05 = 399.5 samples: more than the 400-sample frame minus 2 (the is09 tracker only)
        ("lld-is09", {"f0_min": 40.05}, "f0_min 40.05 Hz has a period longer than the 25.0 ms frame"),
    ],
)
def test_lld_config_limits_are_one_line_errors(name, override, match):
    with pytest.raises(SertkError, match=match):
        build_feature(name, override)


def test_lld_config_limits_admit_their_boundaries():
    # 16000 / 40.25 = 397.5 <= 398 samples; the acf tracker has no such limit; a 25 ms acf window is allowed.
    assert build_feature("lld-is09", {"f0_min": 40.25}).dim == 32
    assert build_feature("lld-rlc17", {"f0_min": 40.05, "acf_window_ms": 25.0}).dim == 17
