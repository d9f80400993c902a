"""Waveform perturbations (sertk.augment.perturb): speed length and pitch, SNR of added noise, RIR alignment and energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sertk.augment.perturb import add_noise_at_snr, fast_fft_length, normalize_rir, reverberate, speed_perturb
from sertk.errors import SertkError

pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 16000


def tone(freq: float, n: int, rate: int = RATE) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / rate).float()


def autocorrelation_pitch(
    wave: np.ndarray, rate: int = RATE, low: float = 100.0, high: float = 400.0
) -> float:
    """Frequency of the highest autocorrelation peak with a lag in [rate/high, rate/low], the peak refined
    by a parabola through it and its neighbours."""
    wave = wave - wave.mean()
    corr = np.correlate(wave, wave, mode="full")[len(wave) - 1 :]
    lo, hi = int(rate / high), int(rate / low)
    lag = lo + int(np.argmax(corr[lo : hi + 1]))
    a, b, c = corr[lag - 1], corr[lag], corr[lag + 1]
    return rate / (lag + 0.5 * (a - c) / (a - 2 * b + c))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_by_one_over_factor(factor):
    n = 16000
    out, lengths = speed_perturb(tone(200, n)[None], torch.tensor([n]), RATE, factor)
    assert out.shape[1] == int(lengths[0]) == math.ceil(n / factor)
    assert abs(out.shape[1] - n / factor) < 1  # within a sample of 1/speed


@pytest.mark.parametrize(("factor", "expected"), [(1.1, 220.0), (0.9, 180.0)])
def test_speed_shifts_pitch_by_the_factor(factor, expected):
    """A 200 Hz tone played 1.1 times faster is a 220 Hz tone, as sox's speed effect gives."""
    original = tone(200, 16000)
    assert autocorrelation_pitch(original.numpy()) == pytest.approx(200.0, abs=0.5)
    out, _ = speed_perturb(original[None], torch.tensor([16000]), RATE, factor)
    assert autocorrelation_pitch(out[0, 200:-200].numpy()) == pytest.approx(expected, abs=0.5)


def test_speed_rounds_the_source_rate():
    """1.15 · 16000 is 18399.999... in floating point: rounded, the ratio is 18400/16000 = 23/20 and 2300
    samples become exactly 2000; truncated to 18399 Hz (torchaudio's speed) they would become 2001."""
    _, lengths = speed_perturb(torch.zeros(1, 2300), torch.tensor([2300]), RATE, 1.15)
    assert int(lengths[0]) == 2000


def test_speed_batched_rows_equal_single_rows_and_padding_stays_zero():
    long, short = tone(200, 4000), tone(310, 2500)
    batch = torch.zeros(2, 4000)
    batch[0], batch[1, :2500] = long, short
    out, lengths = speed_perturb(batch, torch.tensor([4000, 2500]), RATE, 0.9)
    alone, alone_len = speed_perturb(short[None], torch.tensor([2500]), RATE, 0.9)
    assert lengths.tolist() == [math.ceil(4000 / 0.9), math.ceil(2500 / 0.9)]
    torch.testing.assert_close(out[1, : int(lengths[1])], alone[0, : int(alone_len[0])], atol=1e-6, rtol=0)
    assert torch.all(out[1, int(lengths[1]) :] == 0)


def measured_snr(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """10 log10 of the clean energy over the energy of what was added (output minus clean)."""
    added = (noisy - clean).double()
    return float(10 * torch.log10(clean.double().square().sum() / added.square().sum()))


@pytest.mark.parametrize("snr", [0.0, 7.3, 15.0])
def test_added_noise_has_the_requested_snr(snr):
    gen = torch.Generator().manual_seed(0)
    clean = tone(180, 8000) + 0.05 * torch.randn(8000, generator=gen)
    noise = 3.0 * torch.randn(8000, generator=gen)
    noisy = add_noise_at_snr(clean[None], noise[None], torch.tensor([8000]), torch.tensor([snr]))
    assert measured_snr(clean, noisy[0]) == pytest.approx(snr, abs=0.5)
    assert measured_snr(clean, noisy[0]) == pytest.approx(snr, abs=1e-3)  # exact, in fact


def test_noise_is_measured_and_added_on_real_samples_only():
    """A short row's SNR counts its real samples only, and its padding stays zero although the noise row
    given for it is non-zero there."""
    gen = torch.Generator().manual_seed(1)
    batch = torch.zeros(2, 6000)
    batch[0] = tone(200, 6000)
    batch[1, :3000] = tone(250, 3000)
    noise = torch.randn(2, 6000, generator=gen)
    noisy = add_noise_at_snr(batch, noise, torch.tensor([6000, 3000]), torch.tensor([5.0, 12.0]))
    assert measured_snr(batch[0], noisy[0]) == pytest.approx(5.0, abs=1e-3)
    assert measured_snr(batch[1, :3000], noisy[1, :3000]) == pytest.approx(12.0, abs=1e-3)
    assert torch.all(noisy[1, 3000:] == 0)
    with pytest.raises(SertkError, match="silent"):
        add_noise_at_snr(batch, torch.zeros(2, 6000), torch.tensor([6000, 3000]), torch.tensor([5.0, 5.0]))


def test_normalize_rir_gives_unit_energy_and_the_direct_path():
    h, delay = normalize_rir(torch.tensor([0.0, 0.01, -2.0, 1.0, 0.5]))
    assert delay == 2
    assert float(h.square().sum()) == pytest.approx(1.0)
    torch.testing.assert_close(h, torch.tensor([0.0, 0.01, -2.0, 1.0, 0.5]) / math.sqrt(5.2501))
    with pytest.raises(SertkError, match="silent"):
        normalize_rir(torch.zeros(10))


def test_reverberate_with_a_delayed_impulse_is_the_input():
    """An impulse after 37 samples of silence only delays the sound: aligned on it, the output is the input."""
    x = tone(200, 3000)[None]
    h = torch.zeros(1, 120)
    h[0, 37] = 0.8
    y = reverberate(x, torch.tensor([3000]), h, torch.tensor([37]))
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_reverberate_by_hand():
    """h = [0.1, 1, 0, 0.5] aligned on its peak (index 1): y[n] = 0.1 x[n+1] + x[n] + 0.5 x[n-2], then scaled
    to the input's energy; the output keeps the input's length, the tail is dropped."""
    x = torch.tensor([[1.0, 2.0, 0.0, -1.0, 3.0]])
    h = torch.tensor([[0.1, 1.0, 0.0, 0.5]])
    y = reverberate(x, torch.tensor([5]), h, torch.tensor([1]))
    raw = torch.tensor([[1.2, 2.0, 0.4, 0.3, 3.0]])  # 0.1·x[n+1] + x[n] + 0.5·x[n-2], by hand
    expected = raw * math.sqrt(15.0 / float(raw.square().sum()))
    torch.testing.assert_close(y, expected)
    assert float(y.square().sum()) == pytest.approx(float(x.square().sum()))


def test_reverberate_batched_keeps_each_row_length_and_energy():
    gen = torch.Generator().manual_seed(2)
    batch = torch.zeros(2, 4000)
    batch[0] = tone(200, 4000)
    batch[1, :1500] = tone(300, 1500)
    decay = torch.exp(-torch.arange(800) / 120.0) * torch.randn(800, generator=gen)
    rirs = torch.zeros(2, 800)
    rirs[0], rirs[1, 10:] = decay, decay[:790]
    delays = rirs.abs().argmax(dim=1)
    y = reverberate(batch, torch.tensor([4000, 1500]), rirs, delays)
    assert y.shape == batch.shape and torch.all(y[1, 1500:] == 0)
    for row, n in ((0, 4000), (1, 1500)):
        assert float(y[row, :n].square().sum()) == pytest.approx(
            float(batch[row, :n].square().sum()), rel=1e-4
        )
    # Reverberation smears the sound: the output differs from the input although its energy does not.
    assert float((y[0] - batch[0]).abs().max()) > 0.1


def test_fast_fft_length_is_the_next_5_smooth_number():
    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in [*range(1, 400), 27331, 100003]:
        best = fast_fft_length(n)
        assert best >= n and smooth(best) and not any(smooth(m) for m in range(n, best)), n
    assert fast_fft_length(27331) == 27648  # 2^10 · 3^3


def test_noise_silent_in_any_one_row_or_only_loud_in_its_padding_is_refused():
    """Every row needs noise energy on its real samples: one silent row among loud ones, or a row whose noise
    is non-zero only past the row's length, has no gain that reaches the SNR."""
    batch = torch.zeros(2, 400)
    batch[0], batch[1, :200] = tone(200, 400), tone(300, 200)
    lengths, snr = torch.tensor([400, 200]), torch.tensor([5.0, 5.0])
    one_silent = torch.ones(2, 400)
    one_silent[1] = 0
    with pytest.raises(SertkError, match="silent"):
        add_noise_at_snr(batch, one_silent, lengths, snr)
    padding_only = torch.ones(2, 400)
    padding_only[1, :200] = 0
    with pytest.raises(SertkError, match="silent"):
        add_noise_at_snr(batch, padding_only, lengths, snr)
