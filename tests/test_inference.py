"""Inference: posteriors.tsv of a fold's test set, segment averaging inside evaluate, TTA combination."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import CLASSES, DIM, ToyModel, make_recipe, run, write_conf

import sertk.evaluate.inference as inference
from sertk.errors import SertkError
from sertk.evaluate.inference import EvalOptions, evaluate
from sertk.evaluate.posteriors import read_posteriors
from sertk.features.io import load_features
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.models import build_model
from sertk.models.predict import Posteriors, rows_per_batch, utterance_posteriors

pytestmark = pytest.mark.usefixtures("toy_arch")
CPU = EvalOptions(device="cpu")


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
    results = evaluate(exp, EvalOptions(fold="2", device="cpu"))
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
    evaluate(exp, EvalOptions(fold="1", device="cpu"))
    _, rows = read_tsv(exp / "fold1" / "posteriors.tsv")
    _, expected = by_hand(exp, recipe, "fold1", segment=(10, 3))
    np.testing.assert_allclose([[float(v) for v in r[3:]] for r in rows], expected, atol=2e-6)


def test_tta_mean_and_vote():
    torch.manual_seed(0)
    model = ToyModel(ToyModel.Config(dropout=0.0), DIM, 3)
    feats = [np.random.default_rng(i).normal(size=(5 + i, DIM)).astype(np.float32) for i in range(4)]
    fset = build_feature_set(MemoryFrames(feats), ["a", "b", "c", "d"], [0, 1, 2, 0], InputConfig(), False)
    cpu = torch.device("cpu")

    def scale(factor):
        return lambda x, lengths: (x * factor, lengths)

    single = [utterance_posteriors(model, fset, cpu, 2, None, [scale(f)]).scores for f in (1.0, 3.0, -2.0)]
    assert torch.allclose(single[0], utterance_posteriors(model, fset, cpu, 2).scores)
    copies = [scale(f) for f in (1.0, 3.0, -2.0)]
    mean = utterance_posteriors(model, fset, cpu, 2, None, copies)
    assert torch.allclose(mean.scores, torch.stack(single).mean(0), atol=1e-6) and not mean.voted
    vote = utterance_posteriors(model, fset, cpu, 2, None, copies, vote=True)
    votes = torch.stack([torch.nn.functional.one_hot(s.argmax(1), 3) for s in single]).float().mean(0)
    assert torch.equal(vote.scores, votes) and vote.voted
    assert torch.allclose(vote.softmax, mean.scores, atol=1e-6)


def test_a_batch_holds_every_copy_of_its_rows_and_cpu_batches_keep_to_the_models_cap():
    torch.manual_seed(0)
    model = ToyModel(ToyModel.Config(dropout=0.0), DIM, 3)
    feats = [np.random.default_rng(i).normal(size=(4 + i, DIM)).astype(np.float32) for i in range(5)]
    fset = build_feature_set(MemoryFrames(feats), list("abcde"), [0, 1, 2, 0, 1], InputConfig(), False)
    cpu = torch.device("cpu")
    copies = [lambda x, n: (x, n), lambda x, n: (3 * x, n)]
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    free = utterance_posteriors(model, fset, cpu, 32, None, copies)
    assert [len(x) for x in seen] == [10]  # 5 rows x 2 copies
    model.cpu_batch_rows = 4
    seen.clear()
    capped = utterance_posteriors(model, fset, cpu, 32, None, copies)
    # 4 model rows = 2 rows x 2 copies per batch, shortest rows first; each batch: the rows, then 3x them.
    assert [len(x) for x in seen] == [4, 4, 2]
    assert [x.shape[1] for x in seen] == [5, 7, 8]
    for x in seen:
        half = len(x) // 2
        torch.testing.assert_close(x[half:], 3 * x[:half])
    torch.testing.assert_close(capped.scores, free.scores)
    # The cap is a CPU one; on a GPU the batch size alone counts.
    assert rows_per_batch(model, torch.device("cuda"), 32, 2) == 16
    assert rows_per_batch(model, cpu, 32, 2) == 2 and rows_per_batch(model, cpu, 32, 11) == 1


def test_vote_ties_are_broken_by_the_mean_softmax():
    votes = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    softmax = torch.tensor([[0.3, 0.4, 0.3], [0.1, 0.5, 0.4]])
    assert Posteriors(votes, softmax, voted=True).pred.tolist() == [1, 1]
    # Not the class index: the first tie would give class 0 by argmax of the votes.
    assert votes.argmax(-1).tolist() == [0, 1]


def test_eval_follows_the_checkpoints_tta_and_writes_softmax_columns(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    write_conf(recipe["conf"], input_opts={"tta": "vtlp"})
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    seen = []
    real = inference.fold_posteriors

    def spy(model, fset, tta, device, batch_size):
        seen.append(tta)
        return real(model, fset, tta, device, batch_size)

    monkeypatch.setattr(inference, "fold_posteriors", spy)
    evaluate(exp, EvalOptions(fold="1", device="cpu"))
    assert seen == ["vtlp"]
    header, rows = read_tsv(exp / "fold1" / "posteriors.tsv")
    assert header[-4:] == [f"softmax_{c}" for c in CLASSES]
    table = read_posteriors(exp / "fold1" / "posteriors.tsv", CLASSES)
    np.testing.assert_allclose(table.scores.sum(1), 1.0, atol=1e-5)
    assert set(np.round(table.scores * 11).ravel()) <= set(range(12))  # vote shares of 11 copies
    evaluate(exp, EvalOptions(fold="1", device="cpu", tta="none"))
    assert seen == ["vtlp", "none"]
    header, _ = read_tsv(exp / "fold1" / "posteriors.tsv")
    assert header == ["utt", "label", "pred", *CLASSES]


def test_evaluate_errors(tmp_path):
    with pytest.raises(SertkError, match=r"experiment.json: not found \(run stage 5"):
        evaluate(tmp_path / "exp")
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    with pytest.raises(SertkError, match=r"fold2/best.pt: checkpoint not found"):
        evaluate(tmp_path / "exp", EvalOptions(fold="2", device="cpu"))
    (tmp_path / "exp" / "fold1" / "best.pt").write_bytes(b"garbage")
    with pytest.raises(SertkError, match="cannot load checkpoint"):
        evaluate(tmp_path / "exp", EvalOptions(fold="1", device="cpu"))


def test_evaluate_reports_ua_as_the_mean_recall_of_the_true_classes(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)

    def hap_as_neu(model, fset, tta, device, batch_size):
        # Every utterance right except hap, predicted neu.
        pred = fset.labels.masked_fill(fset.labels == CLASSES.index("hap"), CLASSES.index("neu"))
        scores = torch.nn.functional.one_hot(pred, len(CLASSES)).float()
        return Posteriors(scores, scores, voted=False)

    monkeypatch.setattr(inference, "fold_posteriors", hap_as_neu)
    (result,) = evaluate(tmp_path / "exp", EvalOptions(fold="1", device="cpu"))
    _, rows = read_tsv(tmp_path / "exp" / "fold1" / "posteriors.tsv")
    labels = [r[1] for r in rows]
    assert "hap" in labels and [r[2] for r in rows] == ["neu" if y == "hap" else y for y in labels]
    # WA: share right; UA: mean over the true classes present of their recall (hap 0, the others 1).
    present = sorted(set(labels))
    assert result["wa"] == pytest.approx(np.mean([y != "hap" for y in labels]))
    assert result["ua"] == pytest.approx((len(present) - 1) / len(present))


def test_posteriors_reader_skips_blank_lines_and_names_the_line_of_a_bad_row(tmp_path):
    path = tmp_path / "posteriors.tsv"
    header = "utt\tlabel\tpred\tneu\tang\n"
    path.write_text(header + "u1\tneu\tneu\t0.9\t0.1\n\n   \nu2\tang\tneu\t0.6\t0.4\n\n")
    table = read_posteriors(path, ["neu", "ang"])
    assert (table.utts, table.labels.tolist(), table.preds.tolist()) == (["u1", "u2"], [0, 1], [0, 0])
    np.testing.assert_allclose(table.scores, [[0.9, 0.1], [0.6, 0.4]])
    path.write_text(header)
    with pytest.raises(SertkError, match=r"posteriors\.tsv: no utterances after the header"):
        read_posteriors(path, ["neu", "ang"])
    # 3 + 2 fields expected; a sixth on line 3 is an error, not a silently dropped column.
    path.write_text(header + "u1\tneu\tneu\t0.9\t0.1\nu2\tang\tang\t0.2\t0.8\t0.0\n")
    with pytest.raises(SertkError, match=r"posteriors\.tsv: line 3: expected 5 fields, got 6"):
        read_posteriors(path, ["neu", "ang"])
    path.write_text(header + "u1\tneu\tneu\t0.9\tx\n")
    with pytest.raises(SertkError, match=r"posteriors\.tsv: line 2: posteriors must be numbers"):
        read_posteriors(path, ["neu", "ang"])


def test_evaluate_refuses_an_unknown_tta_and_a_model_of_other_classes(tmp_path):
    with pytest.raises(SertkError, match=r"--tta speed: expected config, none or vtlp"):
        evaluate(tmp_path / "exp", EvalOptions(tta="speed"))
    recipe = make_recipe(tmp_path)
    run(recipe, tmp_path / "exp", fold="1", epochs=1)
    best = tmp_path / "exp" / "fold1" / "best.pt"
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["classes"] = CLASSES[::-1]  # same count, other order: every label would be misread
    torch.save(checkpoint, best)
    with pytest.raises(SertkError, match=r"best.pt: classes \['sad', 'ang', 'hap', 'neu'\] differ from"):
        evaluate(tmp_path / "exp", EvalOptions(fold="1", device="cpu"))


def test_a_rewritten_checkpoint_is_evaluated_again(tmp_path):
    # best.pt is guarded by the training record; a checkpoint file of the user's own (here a copy) only by
    # the eval record's digest of it.
    recipe = make_recipe(tmp_path)
    exp = tmp_path / "exp"
    run(recipe, exp, fold="1", epochs=1)
    checkpoint = torch.load(exp / "fold1" / "best.pt", weights_only=True)
    torch.save(checkpoint, exp / "fold1" / "mine.pt")
    mine = EvalOptions(fold="1", device="cpu", checkpoint="mine.pt")
    assert [r["name"] for r in evaluate(exp, mine)] == ["fold1"]
    assert evaluate(exp, mine) == []  # up to date: skipped
    checkpoint["model"]["out.bias"] += 1.0
    torch.save(checkpoint, exp / "fold1" / "mine.pt")
    assert [r["name"] for r in evaluate(exp, mine)] == ["fold1"]
