"""VTLP (cnn_blstm_vtlp.txt Eq. 4): the warp vs torchaudio's Kaldi VTLN warp, spectrogram warping, training and TTA hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ToyModel, make_recipe, run, write_conf
from torchaudio.compliance.kaldi import vtln_warp_freq

import sertk.train.loop as loop
from sertk.augment.vtlp import (
    TTA_ALPHAS,
    FixedVtlp,
    RandomVtlp,
    tta_copies,
    vtlp_tta_transforms,
    vtlp_warp,
    warp_spectrogram,
)
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.models import MODELS, SYSTEMS
from sertk.models.predict import utterance_posteriors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("alpha", [0.9, 0.93, 1.0, 1.04, 1.1])
def test_warp_equals_kaldi_vtln_warp(alpha):
    """Kaldi's F(f) = f / w below its upper inflection h = cutoff * min(1, w): with w = 1 / alpha and
    cutoff = f0 * max(1, alpha), h = f0 and F is Eq. 4's G (low_freq 0 makes the lower piece the same line)."""
    f_max, f0 = 4000.0, 0.9 * 4000.0
    freqs = torch.linspace(0, f_max, 801, dtype=torch.float64)
    kaldi = vtln_warp_freq(1.0, f0 * max(1.0, alpha), 0.0, f_max, 1.0 / alpha, freqs)
    ours = vtlp_warp(freqs, torch.tensor(alpha, dtype=torch.float64), f_max, 0.9)
    torch.testing.assert_close(ours, kaldi, rtol=0, atol=1e-9)
    # Hand values: alpha * f below f0, the end points fixed.
    assert ours[400].item() == pytest.approx(alpha * 2000.0)
    assert ours[0].item() == 0.0 and ours[-1].item() == pytest.approx(f_max)


def test_warp_spectrogram_is_linear_interpolation_at_the_warped_bins():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 4, 20, generator=gen)
    alpha = torch.tensor([0.9, 1.0, 1.1])
    out = warp_spectrogram(feats, alpha)
    freqs = np.arange(1, 21, dtype=np.float64)  # column j holds bin j + 1 (DC dropped)
    for b in range(3):
        warped = vtlp_warp(torch.from_numpy(freqs), alpha[b].double(), 20.0).numpy()
        for t in range(4):
            expected = np.interp(warped, freqs, feats[b, t].double().numpy())
            np.testing.assert_allclose(out[b, t].numpy(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], feats[1])


def test_one_alpha_per_row_and_padding_stays_zero():
    feats = torch.randn(2, 5, 16)
    feats[1, 3:] = 0.0
    alpha = torch.tensor([0.92, 1.07])
    out = warp_spectrogram(feats, alpha)
    torch.testing.assert_close(out[1:2], warp_spectrogram(feats[1:2], alpha[1:2]))
    assert torch.all(out[1, 3:] == 0)
    with pytest.raises(Exception, match="one alpha per row"):
        warp_spectrogram(feats, torch.tensor([1.0]))


def test_random_vtlp_is_seeded_and_in_range(monkeypatch):
    drawn = []
    monkeypatch.setattr(
        "sertk.augment.vtlp.warp_spectrogram", lambda feats, alpha, boundary: drawn.append(alpha) or feats
    )
    feats, lengths = torch.zeros(64, 2, 8), torch.full((64,), 2)
    RandomVtlp(torch.Generator().manual_seed(5))(feats, lengths)
    RandomVtlp(torch.Generator().manual_seed(5))(feats, lengths)
    assert torch.equal(drawn[0], drawn[1]) and drawn[0].min() >= 0.9 and drawn[0].max() <= 1.1
    assert drawn[0].std() > 0.03  # one alpha per spectrogram, not one per batch


def test_an_input_configs_tta_names_its_copies():
    assert tta_copies("none") is None
    copies = tta_copies("vtlp", boundary=0.8)
    assert [t.alpha for t in copies] == list(TTA_ALPHAS) and {t.boundary for t in copies} == {0.8}


def test_tta_copies_and_majority_vote():
    assert TTA_ALPHAS == (0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1)
    assert [t.alpha for t in vtlp_tta_transforms()] == list(TTA_ALPHAS)

    class HighBins(torch.nn.Module):
        """Class 0 when the top bin dominates, else class 1: sensitive to the warp."""

        def forward(self, feats, lengths):
            score = feats[..., -3:].mean(dim=(1, 2)) - feats[..., :-3].mean(dim=(1, 2))
            return torch.stack([score, torch.zeros_like(score)], dim=1)

    feats = [np.linspace(0, 1, 30, dtype=np.float32)[None, :].repeat(4, 0) * s for s in (1.0, -1.0)]
    fset = build_feature_set(MemoryFrames(feats), ["a", "b"], [0, 1], InputConfig(), training=False)
    votes = utterance_posteriors(
        HighBins(), fset, torch.device("cpu"), 4, None, vtlp_tta_transforms(), vote=True
    ).scores
    shares = votes.numpy() * len(TTA_ALPHAS)
    np.testing.assert_allclose(shares, np.round(shares), atol=1e-5)  # whole votes out of 11
    np.testing.assert_allclose(votes.sum(dim=1).numpy(), [1.0, 1.0])
    assert votes.argmax(dim=1).tolist() == [0, 1]


def test_epoch_vtlp_strategies():
    utt = InputConfig(vtlp="utterance")
    train_a, valid_a = loop.epoch_vtlp(utt, 0, 3)
    train_b, _ = loop.epoch_vtlp(utt, 0, 3)
    assert isinstance(train_a, RandomVtlp) and isinstance(valid_a, RandomVtlp)
    feats, lengths = torch.randn(4, 3, 10), torch.full((4,), 3)
    torch.testing.assert_close(train_a(feats, lengths)[0], train_b(feats, lengths)[0])
    train, valid = loop.epoch_vtlp(InputConfig(vtlp="epoch"), 0, 3)
    assert isinstance(train, FixedVtlp) and 0.9 <= train.alpha <= 1.1 and valid is None
    assert train.alpha != loop.epoch_vtlp(InputConfig(vtlp="epoch"), 0, 4)[0].alpha
    assert loop.epoch_vtlp(InputConfig(), 0, 3) == (None, None)
    with pytest.raises(ValueError, match="vtlp_boundary"):
        InputConfig(vtlp_boundary=0.95)


def test_training_with_vtlp_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "toy", ToyModel)
    monkeypatch.setitem(SYSTEMS, "toy", "toy_system")
    recipe = make_recipe(tmp_path, per_class=6, max_len=12)
    write_conf(recipe["conf"], {"epochs": 2}, {"vtlp": "utterance", "tta": "vtlp"})
    run(recipe, tmp_path / "straight", fold="1")
    real_validate = loop.validate

    def crash_in_second_epoch(state, data, draws, cfg, device):
        if draws.epoch == 2:
            assert draws.valid_transform.generator.initial_seed() == loop.epoch_seed(3 + 6, 2)
            raise KeyboardInterrupt
        return real_validate(state, data, draws, cfg, device)

    monkeypatch.setattr(loop, "validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path / "resumed", fold="1")
    monkeypatch.setattr(loop, "validate", real_validate)
    run(recipe, tmp_path / "resumed", fold="1", resume=True)
    a = torch.load(tmp_path / "straight" / "fold1" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "fold1" / "checkpoint.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["input"]["tta"] == "vtlp"


def kaldi_style_reference(feats: np.ndarray, alpha: float, boundary: float) -> np.ndarray:
    """Eq. 4 by hand in bin units (f_max = D): G(f) = αf up to f₀ = boundary·D, then the line through
    (f₀, αf₀) and (D, D); each column j reads the row at G(j + 1) by linear interpolation (np.interp)."""
    num_bins = feats.shape[-1]
    freqs = np.arange(1, num_bins + 1, dtype=np.float64)
    f0 = boundary * num_bins
    slope = (num_bins - alpha * f0) / (num_bins - f0)
    warped = np.where(freqs <= f0, alpha * freqs, alpha * f0 + slope * (freqs - f0))
    return np.stack([np.interp(warped, freqs, row) for row in feats.reshape(-1, num_bins)]).reshape(
        feats.shape
    )


def test_fixed_and_random_vtlp_warp_at_their_boundary():
    """The boundary f₀ / f_max a transform is built with is the one its warp uses (0.8 here, not the default 0.9)."""
    feats = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lengths = torch.full((2,), 3)
    expected = kaldi_style_reference(feats.numpy(), 1.1, 0.8)
    assert not np.allclose(expected, kaldi_style_reference(feats.numpy(), 1.1, 0.9))
    fixed = FixedVtlp(1.1, boundary=0.8)(feats, lengths)[0]
    # Positions are computed in float32: agreement to 1e-5.
    np.testing.assert_allclose(fixed.numpy(), expected, rtol=1e-5, atol=1e-5)
    # low = high pins the random draw, so only the boundary decides the warp.
    random = RandomVtlp(torch.Generator().manual_seed(0), 1.1, 1.1, boundary=0.8)(feats, lengths)[0]
    np.testing.assert_allclose(random.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_random_vtlp_draws_alpha_uniformly_over_the_papers_range(monkeypatch):
    """cnn_blstm_vtlp.txt §2: α ~ U(0.9, 1.1) by default: mean 1, variance 0.2² / 12, both ends reached."""
    drawn = []
    monkeypatch.setattr(
        "sertk.augment.vtlp.warp_spectrogram", lambda feats, alpha, boundary: drawn.append(alpha) or feats
    )
    RandomVtlp(torch.Generator().manual_seed(2))(torch.zeros(4000, 1, 4), torch.ones(4000, dtype=torch.long))
    alpha = drawn[0].double()
    assert 0.9 <= float(alpha.min()) < 0.902 and 1.098 < float(alpha.max()) <= 1.1
    assert float(alpha.mean()) == pytest.approx(1.0, abs=0.003)
    assert float(alpha.var()) == pytest.approx(0.04 / 12, rel=0.08)
