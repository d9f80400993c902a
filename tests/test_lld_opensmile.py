"""Reference check of the IS09 LLDs against openSMILE's IS09_emotion configuration (needs the ``ref`` extra)."""

import math

import numpy as np
import pytest
import torch

from sertk.features.lld import Is09Config, Is09Lld
from sertk.features.pitch import synthetic_voice

opensmile = pytest.importorskip("opensmile")

SR = 16000
# openSMILE column -> our dimension (0 zcr, 1 rms, 2 F0, 3 voicing, 4-15 MFCC 1-12).
COLUMNS = ["pcm_zcr_sma", "pcm_RMSenergy_sma", "F0_sma", "voiceProb_sma"] + [
    f"pcm_fftMag_mfcc_sma[{i}]" for i in range(1, 13)
]
DELTA_COLUMNS = [c.replace("_sma", "_sma_de") for c in COLUMNS]


def speech_like(seconds: float, lo: float, hi: float, seed: int) -> np.ndarray:
    """Voiced stretches with a moving F0, a pause, a fricative and a silent start."""
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR
    f0 = lo + (hi - lo) * (0.5 + 0.5 * torch.sin(2 * math.pi * 0.6 * t + seed))
    f0[: int(0.1 * SR)] = 0
    f0[int(1.2 * SR) : int(1.4 * SR)] = 0
    noise = torch.zeros(n, dtype=torch.bool)
    noise[int(2.0 * SR) : int(2.15 * SR)] = True
    f0[noise] = 0
    wave = synthetic_voice(f0, SR, noise, seed=seed)
    rng = np.random.default_rng(seed)
    return (wave.numpy() + 1e-4 * rng.standard_normal(n)).astype(np.float32)


def both(wave: np.ndarray):
    """(ours (T, 32), openSMILE LLDs (T, 16), openSMILE deltas (T, 16)) on the same frames.

    openSMILE frames start at 0 every 10 ms like ours; it emits one extra frame at the end of input,
    so its first T rows are compared.
    """
    ours = Is09Lld(Is09Config()).compute(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))[0].numpy()
    lld = opensmile.Smile(opensmile.FeatureSet.IS09, opensmile.FeatureLevel.LowLevelDescriptors)
    de = opensmile.Smile(opensmile.FeatureSet.IS09, opensmile.FeatureLevel.LowLevelDescriptors_Deltas)
    ref = lld.process_signal(wave, SR)[COLUMNS].to_numpy()
    ref_de = de.process_signal(wave, SR)[DELTA_COLUMNS].to_numpy()
    num = ours.shape[0]
    assert ref.shape[0] >= num and ref_de.shape[0] >= num
    return ours, ref[:num], ref_de[:num]


def voicing_agreement(f0_ours: np.ndarray, f0_ref: np.ndarray) -> float:
    """Fraction of frames with the same voiced/unvoiced decision and, where both voiced, F0 within 5%."""
    voiced_ours, voiced_ref = f0_ours > 0, f0_ref > 0
    close = np.abs(f0_ours - f0_ref) <= 0.05 * np.maximum(f0_ref, 1e-9)
    return float(np.mean((voiced_ours == voiced_ref) & (~voiced_ref | close)))


@pytest.mark.parametrize("lo,hi,seed", [(100.0, 140.0, 0), (180.0, 280.0, 1), (90.0, 300.0, 2)])
def test_mfcc_energy_zcr_correlate_with_opensmile(lo, hi, seed):
    ours, ref, ref_de = both(speech_like(3.0, lo, hi, seed))
    for dim in [0, 1] + list(range(4, 16)):
        assert np.corrcoef(ours[:, dim], ref[:, dim])[0, 1] >= 0.95, COLUMNS[dim]
        assert np.corrcoef(ours[:, 16 + dim], ref_de[:, dim])[0, 1] >= 0.95, DELTA_COLUMNS[dim]


@pytest.mark.parametrize(
    "lo,hi,seed", [(80.0, 110.0, 5), (100.0, 140.0, 0), (90.0, 300.0, 2), (180.0, 280.0, 1)]
)
def test_voicing_and_f0_agree_with_opensmile(lo, hi, seed):
    ours, ref, _ = both(speech_like(3.0, lo, hi, seed))
    assert voicing_agreement(ours[:, 2], ref[:, 2]) >= 0.9
    assert np.corrcoef(ours[:, 3], ref[:, 3])[0, 1] >= 0.99
    assert np.abs(ours[:, 3] - ref[:, 3]).max() <= 0.05  # the signed ACF was 0.17 low at 100 Hz
