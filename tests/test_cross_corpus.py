"""Cross-corpus evaluation: fold models scored on another data dir, classes intersected and stated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import CLASSES, make_feature_dir, make_recipe, run

import sertk.evaluate.cross as cross
from sertk import provenance
from sertk.data.datadir import write_data_dir
from sertk.errors import SertkError
from sertk.evaluate.cross import cross_record, evaluate_cross, restrict, shared_classes
from sertk.evaluate.inference import EvalOptions
from sertk.evaluate.posteriors import read_posteriors
from sertk.metrics import summarize
from sertk.models.predict import Posteriors

pytestmark = pytest.mark.usefixtures("toy_arch")


def other_corpus(root, rng):
    """A second corpus with classes neu, sad and cal (RAVDESS's calm, unknown to the model)."""
    utts = [f"other{i:02d}" for i in range(18)]
    emo = {u: ["neu", "sad", "cal"][i % 3] for i, u in enumerate(utts)}
    tables = {"wav.scp": dict.fromkeys(utts, "/x"), "utt2spk": dict.fromkeys(utts, "o"), "utt2emo": emo}
    data = write_data_dir(root / "other", tables, {"classes": ["neu", "sad", "cal"], "synthetic": True})
    arrays = {}
    for u in utts:
        x = rng.normal(0, 1, size=(12, 6)).astype(np.float32)
        if emo[u] != "cal":
            x[:, CLASSES.index(emo[u])] += 2.0
        arrays[u] = x
    return data.path, make_feature_dir(root / "other_feats", arrays)


def test_cross_corpus_scores_the_shared_classes(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, epochs=2)
    data, feats = other_corpus(tmp_path, np.random.default_rng(5))
    results = evaluate_cross(exp, data, feats, opts=EvalOptions(device="cpu"))
    assert results["classes"] == ["neu", "sad"] and results["protocol"] == "cross-corpus"
    assert results["cross_corpus"]["left_out"] == 6 and results["cross_corpus"]["utterances"] == 12
    assert [f["name"] for f in results["folds"]] == ["fold1", "fold2"]
    out = exp / "cross_other"
    tables = [read_posteriors(out / f / "posteriors.tsv", ["neu", "sad"]) for f in ("fold1", "fold2")]
    for fold, table in zip(results["folds"], tables, strict=True):
        assert fold["ua"] == pytest.approx(summarize(table.labels, table.preds, 2)["ua"])
        np.testing.assert_allclose(table.scores.sum(1), 1.0, atol=1e-5)
    ensemble = summarize(tables[0].labels, (tables[0].scores + tables[1].scores).argmax(1), 2)
    assert results["ensemble"]["ua"] == pytest.approx(ensemble["ua"])
    assert json.loads((out / "results.json").read_text())["classes"] == ["neu", "sad"]
    mtime = (out / "fold1" / "posteriors.tsv").stat().st_mtime_ns
    evaluate_cross(exp, data, feats, opts=EvalOptions(device="cpu"))
    assert (out / "fold1" / "posteriors.tsv").stat().st_mtime_ns == mtime


def test_restrict_renormalises_over_the_shared_classes():
    scores = np.array([[0.1, 0.6, 0.2, 0.1]])
    np.testing.assert_allclose(restrict(scores, CLASSES, ["neu", "ang"]), [[1 / 3, 2 / 3]])


def test_other_features_must_match_the_models(tmp_path):
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    data, _ = other_corpus(tmp_path, np.random.default_rng(0))
    other = make_feature_dir(tmp_path / "mfcc", {"other00": np.zeros((3, 6), np.float32)}, feat="mfcc")
    with pytest.raises(SertkError, match="holds mfcc with another config"):
        evaluate_cross(exp, data, other, opts=EvalOptions(fold="1", device="cpu"))
    # The same feature name dumped with another config (the model's toyfeat config is {}) is refused too.
    shifted = make_feature_dir(
        tmp_path / "toyfeat_5ms", {"other00": np.zeros((3, 6), np.float32)}, config={"frame_shift_ms": 5}
    )
    with pytest.raises(SertkError, match="holds toyfeat with another config"):
        evaluate_cross(exp, data, shifted, opts=EvalOptions(fold="1", device="cpu"))


def _recorded_fold(tmp_path):
    """A fold dir with a train record and a best.pt, and a one-utterance feature dir: what cross_record reads."""
    fold = tmp_path / "exp" / "fold1"
    fold.mkdir(parents=True)
    provenance.write_record(
        provenance.record_path(fold, "train"), provenance.Record(stage="train", inputs={"experiment": "x"})
    )
    (fold / "best.pt").write_bytes(b"weights")
    return fold, make_feature_dir(tmp_path / "feats", {"a": np.zeros((3, 2), np.float32)})


def test_cross_eval_record_changes_with_the_other_corpus_labels(tmp_path):
    fold, feats = _recorded_fold(tmp_path)
    tables = {"wav.scp": {"a": "/x", "b": "/x"}, "utt2spk": {"a": "s", "b": "s"}}
    keys = []
    for name, emo in (("one", ["neu", "sad"]), ("two", ["neu", "sad"]), ("three", ["sad", "neu"])):
        data = write_data_dir(
            tmp_path / name,
            {**tables, "utt2emo": dict(zip("ab", emo, strict=True))},
            {"classes": ["neu", "sad"]},
        )
        keys.append(cross_record(fold, data.path, feats, EvalOptions(), "none").key)
    # Same tables, same record; other labels on the same utterances: another record (the posteriors rerun).
    assert keys[0] == keys[1] != keys[2]


def test_shared_classes_keep_the_models_order_and_none_is_an_error(tmp_path):
    tables = {"wav.scp": {"a": "/x", "b": "/x"}, "utt2spk": {"a": "s", "b": "s"}}
    other = write_data_dir(
        tmp_path / "other",
        {**tables, "utt2emo": {"a": "sad", "b": "neu"}},
        {"classes": ["sad", "cal", "neu"]},
    )
    # The model's order (neu before sad), not the other corpus's (sad, cal, neu).
    assert shared_classes(CLASSES, other) == ["neu", "sad"]
    with pytest.raises(SertkError, match=r"none of its classes \['sad', 'cal', 'neu'\]"):
        shared_classes(["hap", "ang"], other)


def test_cross_eval_record_changes_with_the_features_the_checkpoint_and_the_tta(tmp_path):
    fold, feats = _recorded_fold(tmp_path)
    tables = {"wav.scp": {"a": "/x"}, "utt2spk": {"a": "s"}, "utt2emo": {"a": "neu"}}
    data = write_data_dir(tmp_path / "other", tables, {"classes": ["neu", "sad"]}).path

    def key(feats=feats, tta="none"):
        return cross_record(fold, data, feats, EvalOptions(), tta).key

    base = key()
    assert key() == base
    assert key(tta="vtlp") != base
    other_feats = make_feature_dir(tmp_path / "feats2", {"a": np.ones((3, 2), np.float32)})
    assert key(feats=other_feats) != base
    (fold / "best.pt").write_bytes(b"retrained weights")
    assert key() != base


def test_cross_predictions_are_the_argmax_among_the_shared_classes(tmp_path, monkeypatch):
    """Hand-made model outputs over (neu, hap, ang, sad) in place of the trained folds', to check the
    restriction to (neu, sad), the predictions, the --tta override and the ensemble by hand."""
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, epochs=1)
    data, feats = other_corpus(tmp_path, np.random.default_rng(5))
    # Fold 1: every utterance (neu, hap, ang, sad) = (0.3, 0, 0.5, 0.2): ang is highest, but among the shared
    # classes neu wins, 0.3 / 0.5 = 0.6 against 0.4. Fold 2: a neu utterance (0.09, 0.8, 0, 0.11) ->
    # (0.45, 0.55); a sad one (0.02, 0.8, 0, 0.18) -> (0.1, 0.9): sad wins either way.
    fold1 = [0.3, 0.0, 0.5, 0.2]
    fold2 = {0: [0.09, 0.8, 0.0, 0.11], 1: [0.02, 0.8, 0.0, 0.18]}
    seen = []

    def fake(model, fset, tta, device, batch_size):
        seen.append(tta)
        labels = fset.labels.tolist()  # indices into the shared classes (neu, sad)
        rows = [fold1] * len(labels) if len(seen) == 1 else [fold2[y] for y in labels]
        scores = torch.tensor(rows, dtype=torch.float32)
        return Posteriors(scores, scores, voted=False)

    monkeypatch.setattr(cross, "fold_posteriors", fake)
    results = evaluate_cross(exp, data, feats, opts=EvalOptions(device="cpu", tta="vtlp"))
    assert seen == ["vtlp", "vtlp"]  # --tta overrides the config's (none)
    out = exp / "cross_other"
    one = read_posteriors(out / "fold1" / "posteriors.tsv", ["neu", "sad"])
    np.testing.assert_allclose(one.scores, np.tile([0.6, 0.4], (12, 1)), atol=1e-6)
    assert one.preds.tolist() == [0] * 12
    two = read_posteriors(out / "fold2" / "posteriors.tsv", ["neu", "sad"])
    assert two.preds.tolist() == [1] * 12
    # 6 neu and 6 sad: fold 1 gets the neu half right, fold 2 the sad half: UA 1/2 each.
    assert [f["ua"] for f in results["folds"]] == [0.5, 0.5]
    # Ensemble: neu (0.6 + 0.45) / 2 = 0.525 > 0.475 -> neu; sad (0.4 + 0.9) / 2 = 0.65 -> sad: all right.
    assert (results["ensemble"]["ua"], results["ensemble"]["wa"]) == (1.0, 1.0)
