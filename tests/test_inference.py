"""Inference: posteriors.tsv of a fold's test set, segment averaging inside evaluate, TTA combination."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train import CLASSES, DIM, ToyModel, make_recipe, run, write_conf

from sertk.errors import SertkError
from sertk.evaluate.inference import evaluate, utterance_posteriors
from sertk.features.io import load_features
from sertk.models import build_model
from sertk.train.dataset import build_feature_set


@pytest.fixture(autouse=True)
def toy_arch(monkeypatch):
    from sertk.models import MODELS, SYSTEMS

    monkeypatch.setitem(MODELS, "toy", ToyModel)
    monkeypatch.setitem(SYSTEMS, "toy", "toy_system")


def read_tsv(path):
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def by_hand(exp, recipe, fold, segment=None):
    """Posteriors of each test utterance computed alone, unpadded, from best.pt (mean over its segments)."""
    best = torch.load(exp / fold / "best.pt", weights_only=True)
    model = build_model("toy", best["model_config"], DIM, len(CLASSES))
    model.load_state_dict(best["model"])
    model.eval()
    folds = json.loads(recipe["folds"].read_text())["folds"]
    test = next(f for f in folds if f["name"] == fold)["test"]
    feats = load_features(recipe["feats"], test)
    out = []
    with torch.no_grad():
        for utt in test:
            x = (torch.from_numpy(feats[utt]) - best["norm_mean"]) / best["norm_std"]
            if segment:
                size, shift = segment
                starts = range(0, max(len(x) - size, 0) + 1, shift)
                pieces = [x[s : s + size] for s in starts]
            else:
                pieces = [x]
            probs = [model(p[None], torch.tensor([len(p)])).softmax(-1)[0] for p in pieces]
            out.append(torch.stack(probs).mean(0).numpy())
    return test, np.array(out)


def test_evaluate_writes_correct_posteriors(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="all", epochs=2)
    results = evaluate(exp, fold="2", device="cpu")
    assert [r["name"] for r in results] == ["fold2"]
    assert not (exp / "fold1" / "posteriors.tsv").exists()
    header, rows = read_tsv(exp / "fold2" / "posteriors.tsv")
    assert header == ["utt", "label", "pred", *CLASSES]
    test, expected = by_hand(exp, recipe, "fold2")
    assert [r[0] for r in rows] == test
    posteriors = np.array([[float(v) for v in r[3:]] for r in rows])
    assert all(len(v.split(".")[1]) == 6 for r in rows for v in r[3:])
    np.testing.assert_allclose(posteriors, expected, atol=2e-6)
    assert [r[2] for r in rows] == [CLASSES[i] for i in expected.argmax(1)]
    labels = [r[1] for r in rows]
    assert labels == [u.split("_")[1][:3] for u in test]
    wa = np.mean([r[1] == r[2] for r in rows])
    assert results[0]["n"] == len(test) and results[0]["wa"] == pytest.approx(wa)


def test_evaluate_averages_segments(tmp_path):
    recipe = make_recipe(tmp_path, max_len=40)
    write_conf(
        recipe["conf"], input_opts={"segment_frames": 10, "segment_shift_train": 5, "segment_shift_test": 3}
    )
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    evaluate(exp, fold="1", device="cpu")
    _, rows = read_tsv(exp / "fold1" / "posteriors.tsv")
    _, expected = by_hand(exp, recipe, "fold1", segment=(10, 3))
    np.testing.assert_allclose([[float(v) for v in r[3:]] for r in rows], expected, atol=2e-6)


def test_tta_mean_and_vote():
    torch.manual_seed(0)
    model = ToyModel(ToyModel.Config(dropout=0.0), DIM, 3)
    feats = [np.random.default_rng(i).normal(size=(5 + i, DIM)).astype(np.float32) for i in range(4)]
    fset = build_feature_set(feats, [0, 1, 2, 0], ["a", "b", "c", "d"])
    cpu = torch.device("cpu")

    def scale(factor):
        return lambda x, lengths: (x * factor, lengths)

    single = [utterance_posteriors(model, fset, None, None, cpu, 2, [scale(f)]) for f in (1.0, 3.0, -2.0)]
    assert torch.allclose(single[0], utterance_posteriors(model, fset, None, None, cpu, 2))
    mean = utterance_posteriors(model, fset, None, None, cpu, 2, [scale(f) for f in (1.0, 3.0, -2.0)])
    assert torch.allclose(mean, torch.stack(single).mean(0), atol=1e-6)
    vote = utterance_posteriors(model, fset, None, None, cpu, 2, [scale(f) for f in (1.0, 3.0, -2.0)], "vote")
    votes = torch.stack([torch.nn.functional.one_hot(s.argmax(1), 3) for s in single]).float().mean(0)
    assert torch.equal(vote, votes)
    with pytest.raises(SertkError, match="combine"):
        utterance_posteriors(model, fset, None, None, cpu, 2, None, "max")


def test_evaluate_errors(tmp_path):
    with pytest.raises(SertkError, match=r"experiment.json: not found \(run stage 5"):
        evaluate(tmp_path / "exp")
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    with pytest.raises(SertkError, match=r"fold2/best.pt: checkpoint not found"):
        evaluate(tmp_path / "exp", fold="2", device="cpu")
    (tmp_path / "exp" / "fold1" / "best.pt").write_bytes(b"garbage")
    with pytest.raises(SertkError, match="cannot load checkpoint"):
        evaluate(tmp_path / "exp", fold="1", device="cpu")
