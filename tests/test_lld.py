"""IS09 and rlc17 LLDs: hand-checked components, batch == single, edge conventions, config errors."""

import math
from pathlib import Path

import feature_reference as reference
import numpy as np
import pytest
import torch

from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.lld import (
    Is09Config,
    Is09Lld,
    Rlc17Config,
    Rlc17Lld,
    moving_average,
    regression_deltas,
    voiced_moving_average,
)
from sertk.features.speechlike import synthetic_voice

SR = 16000
REPO = Path(__file__).resolve().parents[1]


def speech_like(seconds: float, lo: float, hi: float) -> torch.Tensor:
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR
    f0 = lo + (hi - lo) * (0.5 + 0.5 * torch.sin(2 * math.pi * 1.3 * t))
    f0[int(0.3 * n) : int(0.45 * n)] = 0
    noise = torch.zeros(n, dtype=torch.bool)
    noise[int(0.6 * n) : int(0.7 * n)] = True
    f0[noise] = 0
    return synthetic_voice(f0, SR, noise)


def test_dims_and_frame_counts():
    is09, rlc = Is09Lld(Is09Config()), Rlc17Lld(Rlc17Config())
    assert (is09.dim, rlc.dim) == (32, 17)
    assert [is09.num_frames(n) for n in (399, 400, 559, 560, 16000)] == [0, 1, 1, 2, 98]
    assert [rlc.num_frames(n) for n in (399, 400, 480, 16000)] == [0, 1, 2, 196]
    x = torch.zeros(1, 16000)
    assert is09.compute(x, torch.tensor([16000])).shape == (1, 98, 32)
    assert rlc.compute(x, torch.tensor([16000])).shape == (1, 196, 17)


@pytest.mark.parametrize("cls,cfg", [(Is09Lld, Is09Config()), (Rlc17Lld, Rlc17Config())])
def test_batch_rows_equal_single_utterances(cls, cfg):
    ext = cls(cfg)
    waves = [speech_like(0.9, 100, 180), speech_like(0.5, 180, 260), speech_like(0.045, 200, 220)]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(3, int(lengths.max()))
    for b, w in enumerate(waves):
        batch[b, : len(w)] = w
    batch[2, len(waves[2]) :] = 0.7  # garbage past a row's length must not leak into its features
    out = ext.compute(batch, lengths)
    for b, w in enumerate(waves):
        alone = ext.compute(w[None], lengths[b : b + 1])[0]
        n = ext.num_frames(len(w))
        assert alone.shape[0] == n
        torch.testing.assert_close(out[b, :n], alone, rtol=1e-4, atol=1e-4)
    ext.chunk_samples = 1  # one row per pass: the same rows
    torch.testing.assert_close(ext.compute(batch, lengths), out)


def test_zcr_is_opensmiles_cmzcr_by_hand():
    # cMZcr: sample i = 1 … L-2 counts if x[i-1] x[i] < 0, or x[i] = 0 and x[i-1] x[i+1] <= 0; / L.
    ext = Is09Lld(Is09Config(smooth_window=1))
    alternating = torch.tensor([0.5, -0.5]).repeat(200)  # 398 of the 399 sign changes are counted
    silence = torch.zeros(400)  # every inner zero counts: (L - 2) / L, not 0
    touching = torch.full((400,), -0.5)
    touching[50] = 0.0  # a dip to zero without crossing: not counted
    touching[200:] = 0.0  # then digital silence: samples 200 … 398 count
    constant = torch.full((400,), 0.4)
    out = ext.compute(torch.stack([alternating, silence, touching, constant]), torch.full((4,), 400))
    assert out[:, 0, 0].tolist() == pytest.approx([398 / 400, 398 / 400, 199 / 400, 0.0])


def test_rms_energy_of_the_preemphasised_hamming_frame_by_hand():
    ext = Is09Lld(Is09Config(smooth_window=1))
    out = ext.compute(torch.full((1, 400), 0.4), torch.tensor([400]))
    # pre-emphasis of a constant c is (1 - 0.97) c everywhere, so RMS = 0.03 c sqrt(mean(hamming^2))
    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 399)
    assert out[0, 0, 1].item() == pytest.approx(0.03 * 0.4 * np.sqrt(np.mean(hamming**2)), rel=1e-5)


def test_smoothing_and_deltas_repeat_each_utterances_edges():
    x = torch.tensor([[1.0, 2.0, 4.0, 8.0, 100.0], [3.0, 5.0, 0.0, 0.0, 0.0]])[..., None]
    num = torch.tensor([4, 2])
    smooth = moving_average(x, num, 3)[..., 0]
    assert smooth[0, :4].tolist() == pytest.approx([4 / 3, 7 / 3, 14 / 3, 20 / 3])  # frame 4 is padding
    assert smooth[1, :2].tolist() == pytest.approx([11 / 3, 13 / 3])
    ramp = torch.arange(8, dtype=torch.float64)[None, :, None] * 2.0
    deltas = regression_deltas(ramp, torch.tensor([8]), 2)[0, :, 0]
    assert deltas[2:6].tolist() == pytest.approx([2.0] * 4)
    # frame 0 with edges repeated: (1*(x1 - x0) + 2*(x2 - x0)) / 10 = (2 + 8) / 10
    assert deltas[0].item() == pytest.approx(1.0)


def test_log_f0_smoothing_averages_voiced_neighbours_only():
    x = torch.tensor([[1.0, 2.0, 9.0, 4.0]])[..., None]
    voiced = torch.tensor([[True, True, False, True]])[..., None]
    # t0: edges repeated (1 + 1 + 2) / 3; t1: (1 + 2) / 2, the unvoiced 9 left out; t2: unvoiced -> 0;
    # t3: only itself is voiced (edge repeated).
    out = voiced_moving_average(x, voiced, torch.tensor([4]), 3)[0, :, 0]
    assert out.tolist() == pytest.approx([4 / 3, 1.5, 0.0, 4.0])


def test_is09_f0_comes_one_frame_late_as_in_opensmile():
    wave = speech_like(0.6, 150, 250)[None]
    lengths = torch.tensor([wave.shape[1]])
    late = Is09Lld(Is09Config(smooth_window=1)).compute(wave, lengths)[0]
    aligned = Is09Lld(Is09Config(smooth_window=1, f0_delay_frames=0)).compute(wave, lengths)[0]
    assert (aligned[:, 2] > 0).any()
    assert late[0, 2].item() == 0.0
    torch.testing.assert_close(late[1:, 2], aligned[:-1, 2])
    torch.testing.assert_close(late[:, [0, 1, 3]], aligned[:, [0, 1, 3]])
    later = Is09Lld(Is09Config(smooth_window=1, f0_delay_frames=2)).compute(wave, lengths)[0]
    torch.testing.assert_close(later[2:, 2], aligned[:-2, 2])
    assert (later[:2, 2] == 0).all()


def test_rlc17_log_energy_and_mfcc_agree_with_is09_front_end():
    wave = speech_like(0.5, 120, 200)[None]
    lengths = torch.tensor([wave.shape[1]])
    rlc = Rlc17Lld(Rlc17Config(frame_shift_ms=10.0, smooth_window=1)).compute(wave, lengths)[0]
    is09 = Is09Lld(Is09Config(smooth_window=1)).compute(wave, lengths)[0]
    torch.testing.assert_close(rlc[:, :12], is09[:, 4:16])
    expected = (is09[:, 1].square() * 400).clamp_min(1e-10).log()
    torch.testing.assert_close(rlc[:, 12], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "override,match",
    [
        ({"pitch": "yin"}, "pitch must be one of"),
        ({"frame_rate": 3}, "unknown key"),
        ({"smooth_window": 2}, "smooth_window must be odd"),
        ({"f0_min": 600.0}, "f0_min"),
        ({"f0_delay_frames": -1}, "f0_delay_frames"),
        ({"acf_sample_rate": 1000}, "acf_sample_rate"),
        ({"acf_sample_rate": 11025}, "not a whole number of samples at acf_sample_rate 11025"),
    ],
)
def test_bad_config_is_one_line_sertk_error(override, match):
    with pytest.raises(SertkError, match=match):
        build_feature("lld-is09", override)


def test_registry_builds_both_from_repo_yaml():
    for name in ("lld-is09", "lld-rlc17"):
        ext = build_feature(name, REPO / "egs/iemocap/conf/feats" / f"{name}.yaml")
        assert ext.dim == {"lld-is09": 32, "lld-rlc17": 17}[name]


def test_mfcc_floors_mel_magnitudes_at_1e_8():
    # A 1 kHz tone of amplitude 1e-8: its own Mel bands lie between 1e-8 and 1e-6, the others below both.
    wave = 1e-8 * np.sin(2 * np.pi * 1000 * np.arange(800) / SR)
    out = Is09Lld(Is09Config(smooth_window=1)).compute(
        torch.from_numpy(wave).float()[None], torch.tensor([800])
    )
    want = reference.lld_front_end(wave, SR, 25.0, 10.0, 0.97, 26, 0.0, 8000.0, 12, 22.0)["mfcc"]
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(out[0, :, 4:16].double().numpy(), want, atol=2e-3)


def test_rlc17_log_f0_smoothing_leaves_unvoiced_frames_out():
    # A 200 Hz voice, then silence: next to the silence the 3-frame average is over voiced frames only.
    wave = torch.cat([synthetic_voice(torch.full((4000,), 200.0), SR), torch.zeros(4000)])[None]
    lengths = torch.tensor([8000])
    raw = Rlc17Lld(Rlc17Config(smooth_window=1)).compute(wave, lengths)[0, :, 15].double().numpy()
    smooth = Rlc17Lld(Rlc17Config()).compute(wave, lengths)[0, :, 15].double().numpy()
    voiced = raw != 0
    padded, flags = np.pad(raw, 1, mode="edge"), np.pad(voiced, 1, mode="edge")
    want = [
        (padded[t : t + 3] * flags[t : t + 3]).sum() / flags[t : t + 3].sum() if voiced[t] else 0.0
        for t in range(len(raw))
    ]
    assert voiced[:10].all() and not voiced[-10:].any()
    np.testing.assert_allclose(smooth, want, rtol=1e-5, atol=1e-5)
