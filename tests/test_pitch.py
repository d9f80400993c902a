"""Pitch trackers on synthetic voiced signals with known F0 contours, and the ACF helpers by hand."""

import math

import numpy as np
import pytest
import torch

from sertk.features.lld import Rlc17Config, Rlc17Lld
from sertk.features.pitch import (
    _parabolic,
    acf_voicing,
    autocorrelation,
    cepstral_peak_f0,
    is09_f0_contour,
)
from sertk.features.speechlike import synthetic_voice

SR = 16000


def glide(lo: float, hi: float, seconds: float = 1.5) -> torch.Tensor:
    """Exponential F0 glide lo -> hi with a 0.1 s silent start and a 0.2 s silent gap in the middle."""
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR
    f0 = lo * (hi / lo) ** (t / seconds)
    f0[: int(0.1 * SR)] = 0
    f0[int(0.6 * SR) : int(0.8 * SR)] = 0
    return f0


def track(extractor: Rlc17Lld, f0: torch.Tensor):
    """(estimated F0, true F0 at each frame centre) of the unsmoothed front end."""
    wave = synthetic_voice(f0, SR)
    est = extractor._front_end(wave[None], torch.tensor([len(wave)]))["f0"][0].double()
    centres = torch.arange(est.shape[0]) * extractor.frame_shift + extractor.frame_length // 2
    return est, f0[centres]


@pytest.mark.parametrize("lo,hi", [(90.0, 300.0), (300.0, 90.0), (70.0, 140.0), (100.0, 140.0)])
def test_acf_tracker_follows_glides(lo, hi):
    est, truth = track(Rlc17Lld(Rlc17Config()), glide(lo, hi))
    voiced = truth > 0
    assert ((est > 0) == voiced).double().mean() > 0.95
    both = voiced & (est > 0)
    rel_err = (est[both] - truth[both]).abs() / truth[both]
    assert rel_err.mean() < 0.02
    assert (rel_err > 0.02).double().mean() < 0.02


def test_is09_tracker_follows_high_glide():
    extractor = Rlc17Lld(Rlc17Config(pitch="is09", voicing_threshold=0.55, f0_min=52.0))
    est, truth = track(extractor, glide(160.0, 320.0))
    voiced = truth > 0
    assert ((est > 0) == voiced).double().mean() > 0.9
    both = voiced & (est > 0)
    assert ((est[both] - truth[both]).abs() / truth[both]).mean() < 0.02


def test_autocorrelation_is_linear_not_circular():
    x = torch.randn(3, 50, dtype=torch.float64)
    got = autocorrelation(x, 20)
    want = np.stack([np.correlate(row, row, mode="full")[49 : 49 + 21] for row in x.numpy()])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_acf_voicing_takes_the_highest_rising_lag_in_range_over_lag0():
    # sample_rate 16, f0 in [2, 4] Hz: lags 3 (ceil(16 / 4) - 1, openSMILE's 31 for 500 Hz) … 8.
    acf = torch.zeros(1, 12, dtype=torch.float64)
    acf[0, 0] = 2.0
    acf[0, 1] = 1.9  # below the lag range
    acf[0, 5] = 0.8  # rising from lag 4: counted
    acf[0, 7] = 1.2  # rising: the highest counted
    acf[0, 10] = 1.5  # beyond f0_min's lag 8
    assert acf_voicing(acf, sample_rate=16, f0_min=2.0, f0_max=4.0).item() == pytest.approx(0.6)
    acf[0, 6] = -1.6  # a deeper negative lobe counts by its magnitude, as in openSMILE's |ACF|
    assert acf_voicing(acf, 16, 2.0, 4.0).item() == pytest.approx(0.8)
    acf[0, 3] = 1.8  # lag 3 is in range (it rises from lag 2)
    assert acf_voicing(acf, 16, 2.0, 4.0).item() == pytest.approx(0.9)
    falling = torch.tensor([[2.0, 1.9, 1.85, 1.0, 0.5, 0.2, 0.1, 0.0, 0.3, 0.0]])
    assert acf_voicing(falling, 16, 2.0, 4.0).item() == pytest.approx(0.15)  # only the last lag, 8
    assert acf_voicing(torch.zeros(1, 12), 16, 2.0, 4.0).item() == 0.0


def test_cepstral_peak_is_the_first_clear_peak_not_the_highest():
    # sample_rate 16, f0_max 4: max over q >= 4, peaks from q = 5 up to K - 2 = 10 (f0_min 1 Hz).
    cepstrum = torch.zeros(2, 12)
    cepstrum[:, 0] = 10.0  # enters mean |c| = 13 / 12 only: threshold 0.6 (2 + 13/12) = 1.85
    cepstrum[:, 9] = 2.0
    cepstrum[0, 6] = 1.0  # a peak below the threshold: skipped
    cepstrum[1, 6] = 1.9  # above it and first: chosen although q = 9 is higher
    assert cepstral_peak_f0(cepstrum, 16, 1.0, 4.0).tolist() == pytest.approx([16 / 9, 16 / 6])
    assert cepstral_peak_f0(torch.zeros(1, 12), 16, 1.0, 4.0).item() == 0.0  # no peak: unvoiced


def test_is09_f0_contour_rules_by_hand():
    raw = torch.tensor([[0.0, 100, 0, 0, 100, 102, 210, 104, 0, 150]])
    # frame 1 is isolated -> 0; 210 is outside (0.6, 1.4) x the running mean 100.6 -> 100.6 (the mean
    # then moves 10% towards 210); then each voiced frame is averaged with a voiced predecessor.
    # Frame 9 lies past the row's 9 frames: unvoiced.
    out = is09_f0_contour(raw, torch.tensor([9]))
    assert out[0].tolist() == pytest.approx([0, 0, 0, 0, 100, 101, 101.3, 102.3, 0, 0])
    jump = is09_f0_contour(torch.tensor([[100.0, 100, 300, 300, 300, 300, 300]]), torch.tensor([7]))
    # Each 300 is outside 1.4 x the mean, which moves 10% towards it: 100 (replaced by), 120, 138, 154.2,
    # 168.78; averaged with the predecessor: 100, 110, 129, 146.1, 161.49.
    assert jump[0, 2:].tolist() == pytest.approx([100, 110, 129, 146.1, 161.49], abs=0.01)


def test_parabolic_interpolation_recovers_quadratic_peak():
    lags = torch.arange(10, dtype=torch.float64)
    curve = (1.0 - 0.1 * (lags - 4.3) ** 2)[None]
    position, height = _parabolic(curve, torch.tensor([4]))
    assert position.item() == pytest.approx(4.3)
    assert height.item() == pytest.approx(1.0)


def test_hnr_and_log_f0_conventions():
    ext = Rlc17Lld(Rlc17Config(smooth_window=1))
    tone = synthetic_voice(torch.full((8000,), 200.0), SR)
    silence = torch.zeros(8000)
    out = ext.compute(torch.stack([tone, silence]), torch.tensor([8000, 8000]))
    voiced = out[0, 20:-20]
    assert voiced[:, 15].mean().item() == pytest.approx(math.log(200.0), abs=0.01)
    assert voiced[:, 14].min().item() > 20.0  # a clean periodic signal: r near 1, high HNR
    assert (out[1, :, 15] == 0).all()  # unvoiced log F0 is 0
    assert (out[1, :, 14] == ext.cfg.hnr_min_db).all()


def test_cepstral_peak_band_threshold_and_strictness_by_hand():
    # sample_rate 16, f0 in [1, 4] Hz: q0 = 3; the max runs over q >= 4, peaks from q = 5; threshold
    # 0.6 (max + mean |c|). Each row's clear peak is q = 9 (F0 16 / 9); the distractors must not win.
    def cepstrum(values):
        c = torch.zeros(12)
        for q, v in values.items():
            c[q] = v
        return c

    rows = torch.stack(
        [
            cepstrum({0: 10.0, 9: 2.0, 4: 1.99}),  # q = 4 < q0 + 2 is no candidate
            cepstrum({0: 10.0, 9: 2.0, 3: 3.0}),  # q0 itself stays out of the max (else threshold 2.55)
            cepstrum({0: 10.0, 9: 2.0, 6: 1.7}),  # below 0.6 (2 + 13.7 / 12) = 1.885 (0.5 would take it)
            cepstrum({0: 5.0, 9: 2.0, 6: 1.95, 7: 1.95}),  # a plateau is no strict local maximum
            cepstrum({0: 4.0, 2: -4.0, 9: 2.0, 6: 1.5}),  # mean |c|, not mean c: threshold 1.775 > 1.5
        ]
    )
    assert cepstral_peak_f0(rows, 16, 1.0, 4.0).tolist() == pytest.approx([16 / 9] * 5)
