"""Cross-corpus evaluation: fold models scored on another data dir, classes intersected and stated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CLASSES, make_feature_dir, make_recipe, run

from sertk import provenance
from sertk.data.datadir import write_data_dir
from sertk.errors import SertkError
from sertk.evaluate.cross import cross_record, evaluate_cross, restrict
from sertk.evaluate.inference import EvalOptions
from sertk.evaluate.posteriors import read_posteriors
from sertk.metrics import summarize

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


def test_cross_eval_record_changes_with_the_other_corpus_labels(tmp_path):
    fold = tmp_path / "exp" / "fold1"
    fold.mkdir(parents=True)
    provenance.write_record(
        provenance.record_path(fold, "train"), provenance.Record(stage="train", inputs={"experiment": "x"})
    )
    (fold / "best.pt").write_bytes(b"weights")
    feats = make_feature_dir(tmp_path / "feats", {"a": np.zeros((3, 2), np.float32)})
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
