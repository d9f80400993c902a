"""Gaps found by mutation testing in scoring and comparison: each test names one behaviour, checked by hand."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from test_compare import R, S, make_exp
from test_score import make_exp as make_scored_exp
from test_score import wide_console  # noqa: F401  (autouse: a quiet console for score and compare)

import sertk.evaluate.stats as stats
from sertk import provenance
from sertk.errors import SertkError
from sertk.evaluate.compare import CompareOptions, build_comparison
from sertk.evaluate.posteriors import read_posteriors, write_posteriors
from sertk.evaluate.score import (
    check_fold_provenance,
    find_folds,
    fold_statistics,
    score_experiment,
    up_to_date,
)
from sertk.evaluate.stats import bootstrap_confusions, recall_ua_wa, sign_flip_pvalue
from sertk.metrics import summarize


def test_fold_statistics_are_the_mean_and_sample_std_over_three_folds():
    # Three folds, where the mean differs from the median (two folds cannot tell them apart).
    values = {"wa": [0.5, 0.6, 0.9], "ua": [0.4, 0.45, 0.8], "macro_f1": [0.3, 0.3, 0.6]}
    folds = [{m: v[k] for m, v in values.items()} for k in range(3)]
    mean, std, ddof = fold_statistics(folds)
    assert ddof == 1
    for metric, v in values.items():
        assert mean[metric] == pytest.approx(statistics.mean(v))
        assert std[metric] == pytest.approx(statistics.stdev(v))


def test_compare_seed_option_reaches_the_bootstrap(tmp_path):
    r, s = make_exp(tmp_path, "R", R), make_exp(tmp_path, "S", S)

    def intervals(seed):
        comp = build_comparison([r, s], options=CompareOptions(n_boot=200, seed=seed))
        return comp.systems[0].interval["ua"], comp.versus[0].pooled_difference["ua"]

    assert intervals(3) == intervals(3)
    assert intervals(3) != intervals(4)


def _stamp_fold(fold_dir, experiment_key: str, train_key: str | None = None) -> provenance.Record:
    """A fold's train record (of ``experiment_key``) and an eval record naming ``train_key`` (default: its own)."""
    train = provenance.Record(stage="train", inputs={"experiment": experiment_key})
    provenance.write_record(provenance.record_path(fold_dir, "train"), train)
    made_from = {"train": train_key or train.key}
    record = provenance.Record(stage="eval", inputs=made_from)
    provenance.write_record(provenance.record_path(fold_dir, "eval"), record, [fold_dir / "posteriors.tsv"])
    return record


def test_score_refuses_posteriors_made_from_another_fold_model(tmp_path):
    exp = make_scored_exp(tmp_path, extra={"provenance_key": "sha256:exp"})
    experiment = json.loads((exp / "experiment.json").read_text())
    keys = {f: _stamp_fold(exp / f, "sha256:exp").key for f in ("fold1", "fold2")}
    assert check_fold_provenance(exp, experiment, ["fold1", "fold2"]) == keys
    # fold2's posteriors name another training run's key than the fold's own train record.
    _stamp_fold(exp / "fold2", "sha256:exp", train_key="sha256:another-model")
    with pytest.raises(SertkError, match=r"fold2/posteriors.tsv: not made from this fold's model"):
        check_fold_provenance(exp, experiment, ["fold1", "fold2"])


def test_results_go_stale_when_a_folds_posteriors_are_remade(tmp_path):
    exp = make_scored_exp(tmp_path, extra={"provenance_key": "sha256:exp"})
    for fold in ("fold1", "fold2"):
        _stamp_fold(exp / fold, "sha256:exp")
    score_experiment(exp)
    assert up_to_date(exp) is not None
    # fold2 evaluated again under other options (another eval key, same training): results.json is stale.
    train_key = provenance.read_record(provenance.record_path(exp / "fold2", "train")).key
    again = provenance.Record(stage="eval", inputs={"train": train_key}, options={"tta": "vtlp"})
    provenance.write_record(
        provenance.record_path(exp / "fold2", "eval"), again, [exp / "fold2" / "posteriors.tsv"]
    )
    assert up_to_date(exp) is None


def test_folds_are_scored_in_folds_json_order_else_in_natural_order(tmp_path):
    exp = tmp_path / "exp"
    for name in ("fold10", "fold2", "fold1", "notes"):
        (exp / name).mkdir(parents=True)
    for name in ("fold10", "fold2", "fold1"):
        (exp / name / "metrics.csv").write_text("")
    assert find_folds(exp, {}) == ["fold1", "fold2", "fold10"]
    listed = {"folds": [{"name": "fold2"}, {"name": "fold10"}, {"name": "fold1"}]}
    assert find_folds(exp, listed) == ["fold2", "fold10", "fold1"]


def test_macro_f1_leaves_out_a_class_predicted_but_absent_from_the_reference():
    # true 0 0 1 1, predicted 0 2 1 1: class 2 is predicted once but never in the reference.
    # F1 = 2PR / (P + R): class 0 P 1, R 1/2 -> 2/3; class 1 P 1, R 1 -> 1; class 2 left out (not a 0).
    scores = summarize([0, 0, 1, 1], [0, 2, 1, 1], 3)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["ua"] == pytest.approx((1 / 2 + 1) / 2) and scores["wa"] == pytest.approx(3 / 4)


def test_bootstrap_ua_leaves_out_a_class_missing_from_a_resample():
    # Two resamples; in the second, class 1 was never drawn: its recall is NaN and UA is the mean of the others.
    cms = np.array([[[2, 1, 0], [1, 1, 0], [0, 1, 3]], [[2, 1, 0], [0, 0, 0], [1, 0, 3]]])
    recall, ua, wa = recall_ua_wa(cms)
    assert np.isnan(recall[1, 1])
    assert ua.tolist() == pytest.approx([(2 / 3 + 1 / 2 + 3 / 4) / 3, (2 / 3 + 3 / 4) / 2])
    assert wa.tolist() == pytest.approx([6 / 9, 5 / 7])


def test_sign_flip_beyond_exact_folds_is_a_seeded_monte_carlo_estimate():
    # 21 folds (above EXACT_FLIP_FOLDS), d = +1 x 13 and -1 x 8 hundredths, sum 5. With X ~ Bin(21, 1/2) signs
    # left +, a flipped sum is 2X - 21: p = P(|2X - 21| >= 5) = sum of C(21, x) / 2^21 over x <= 8 or x >= 13.
    a, b = [0.51] * 13 + [0.49] * 8, [0.5] * 21
    exact = sum(math.comb(21, x) for x in range(22) if abs(2 * x - 21) >= 5) / 2**21
    p = sign_flip_pvalue(a, b)
    assert p == pytest.approx(exact, abs=0.01)  # 100,000 draws: standard error ~.0015
    assert sign_flip_pvalue(a, b) == p  # the default seed makes the estimate reproducible


def test_bootstrap_blocks_continue_one_generator(monkeypatch):
    # With one resample per block, the blocks continue one seeded generator's stream, not reseed it each time.
    monkeypatch.setattr(stats, "BOOTSTRAP_BLOCK", 30)  # per_block = 30 // 30 = 1
    y_true = np.repeat([0, 1], 15)
    y_pred = np.tile([0, 1], 15)
    cms = bootstrap_confusions([(y_true, y_pred)], [15, 15], 2, 50, seed=0)[0]
    assert len({cm.tobytes() for cm in cms}) > 10
    np.testing.assert_array_equal(cms, bootstrap_confusions([(y_true, y_pred)], [15, 15], 2, 50, seed=0)[0])


def test_a_p_value_equal_to_alpha_is_not_significant(tmp_path):
    # S - R on UA: sign-flip p = 4/32 = .125 (see test_compare's comment on R and S); one row: Holm = raw.
    r, s = make_exp(tmp_path, "R", R), make_exp(tmp_path, "S", S)

    def verdict(alpha):
        options = CompareOptions(test="sign-flip", alpha=alpha, n_boot=0)
        return build_comparison([r, s], options=options).versus[0].verdict

    assert verdict(0.125) == "n.s."  # "below --alpha": p < alpha, not p <= alpha
    assert verdict(0.126) == "worse"


def test_pooled_difference_is_of_pooled_scores_not_of_fold_means(tmp_path):
    # fold2 keeps only 3 ang utterances, so pooled and per-fold means differ. A: fold1 (6, 3), fold2 (5, 2 of 3);
    # B: fold1 (6, 3), fold2 (5, 3 of 3). Pooled UA: A (11/20 + 5/8) / 2, B (11/20 + 6/8) / 2: B - A = 1/16
    # (fold means: (1/3) / 4 = 1/12). Pooled WA: A 16/28, B 17/28: B - A = 1/28 (fold means: 1/26).
    def drop(fold, rows):
        return [r for r in rows if not (fold == "fold2" and r[0][-2:] in ("a3", "a4"))]

    a = make_exp(tmp_path, "A", {"fold1": (6, 3), "fold2": (5, 2)}, edit=drop)
    b = make_exp(tmp_path, "B", {"fold1": (6, 3), "fold2": (5, 3)}, edit=drop)
    versus = build_comparison([a, b], options=CompareOptions(baseline="A", n_boot=20)).versus[1]
    assert versus.tests["ua"].mean_difference == pytest.approx(1 / 12)
    assert versus.pooled_difference["ua"][0] == pytest.approx(1 / 16)
    assert versus.pooled_difference["wa"][0] == pytest.approx(1 / 28)


def test_the_marks_follow_per_fold_ua_not_wa(tmp_path):
    # Y trades one right neu of X for one right ang in every fold: UA + .05 (= (-1/10 + 1/5) / 2) in each fold,
    # so t is infinite and p = 0; WA is the same in each fold, so p = 1.
    x = make_exp(tmp_path, "X", {"fold1": (6, 3), "fold2": (5, 3), "fold3": (7, 2)})
    y = make_exp(tmp_path, "Y", {"fold1": (5, 4), "fold2": (4, 4), "fold3": (6, 3)})
    comp = build_comparison([x, y], options=CompareOptions(n_boot=0))
    versus = comp.versus[0]
    assert comp.reference == 1
    assert versus.tests["ua"].t_pvalue == 0.0 and versus.tests["wa"].t_pvalue == 1.0
    assert versus.verdict == "worse"


def test_recall_intervals_are_the_same_95_percent_intervals_as_ua(tmp_path):
    # No ang in the reference: in every resample UA is the neu recall, so the two intervals coincide.
    def neu_only(fold, rows):
        return [r for r in rows if r[1] == "neu"]

    exp = make_exp(tmp_path, "N", {"fold1": (6, 0), "fold2": (8, 0)}, edit=neu_only)
    interval = build_comparison([exp], options=CompareOptions(n_boot=200)).systems[0].interval
    low, high = interval["ua"]
    assert low < 14 / 20 < high
    assert interval["recall"][:, 0].tolist() == pytest.approx([low, high])
    assert np.isnan(interval["recall"][:, 1]).all()


def test_bootstrap_resamples_each_fold_to_its_own_size(tmp_path):
    # fold1: 10 neu, right in both systems; fold2: 5 ang, wrong for P and right for Q. Drawn within each fold,
    # every resample holds 10 neu and 5 ang: P's WA is 10/15 in each, and P - Q on WA is -5/15 in each.
    def split(fold, rows):
        return [r for r in rows if r[1] == ("neu" if fold == "fold1" else "ang")]

    p = make_exp(tmp_path, "P", {"fold1": (10, 0), "fold2": (0, 0)}, edit=split)
    q = make_exp(tmp_path, "Q", {"fold1": (10, 0), "fold2": (0, 5)}, edit=split)
    comp = build_comparison([p, q], options=CompareOptions(n_boot=200))
    assert comp.reference == 1
    assert comp.systems[0].interval["wa"] == pytest.approx((2 / 3, 2 / 3))
    assert comp.versus[0].pooled_difference["wa"] == pytest.approx((-1 / 3, -1 / 3, -1 / 3))


def test_an_unknown_predicted_class_is_a_one_line_error(tmp_path):
    path = tmp_path / "posteriors.tsv"
    path.write_text("utt\tlabel\tpred\tneu\tang\nu1\tneu\tneu\t0.9\t0.1\nu2\tang\tjoy\t0.2\t0.8\n")
    with pytest.raises(
        SertkError, match=r"posteriors\.tsv: line 3: unknown class 'joy' \(classes: neu ang\)"
    ):
        read_posteriors(path, ["neu", "ang"])


def test_a_repeated_utterance_id_is_not_paired(tmp_path):
    # Both systems' fold1 name two different neu utterances fold1_n0: same ids and labels, but not one per utt.
    def repeat(fold, rows):
        return [(f"{fold}_n0" if u == "fold1_n1" else u, y, p) for u, y, p in rows]

    a, b = make_exp(tmp_path, "A", R, edit=repeat), make_exp(tmp_path, "B", S, edit=repeat)
    versus = build_comparison([a, b], options=CompareOptions(n_boot=20)).versus[0]
    assert versus.fold_problem == "fold1: an utterance id occurs twice in one posteriors.tsv"
    assert versus.tests == {} and versus.verdict == "not paired"
    assert versus.pooled_problem == "test utterances differ" and versus.pooled_difference == {}


def test_posteriors_keep_the_mean_softmax_apart_from_the_vote_shares(tmp_path):
    path = tmp_path / "posteriors.tsv"
    votes = np.array([[6 / 11, 5 / 11], [0.0, 1.0]])
    softmax = np.array([[0.3, 0.7], [0.25, 0.75]])
    write_posteriors(path, ["u1", "u2"], [1, 1], (np.array([0, 1]), votes, softmax), ["neu", "ang"])
    table = read_posteriors(path, ["neu", "ang"])
    assert (table.utts, table.labels.tolist(), table.preds.tolist()) == (["u1", "u2"], [1, 1], [0, 1])
    np.testing.assert_allclose(table.scores, votes, atol=5e-7)  # 6 decimals
    np.testing.assert_allclose(table.softmax, softmax, atol=5e-7)
