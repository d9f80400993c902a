"""sertk compare: paired tests over folds, bootstrap intervals, marks, Markdown and HTML, on hand-made exp dirs.

Every expected number is worked out by hand in the comments (or from the formula, never from sertk's
output): the folds below give per-fold UA and WA by construction.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import scipy.stats
from browser import find_browser, render
from matplotlib.container import BarContainer
from test_cli import sertk
from test_score import (
    FOLD1,
    FOLD2,
    assert_valid_png,
    wide_console,  # noqa: F401  (autouse: a quiet console for score and compare)
)
from test_score import make_exp as make_scored_exp

import sertk.evaluate.compare as compare_module
import sertk.evaluate.score as score_module
from sertk.errors import SertkError
from sertk.evaluate.compare import (
    CompareOptions,
    build_comparison,
    compare_experiments,
)
from sertk.evaluate.plots import learning_curves_figure, recall_bars_figure
from sertk.evaluate.report import render_markdown, summary_table
from sertk.evaluate.stats import (
    bootstrap_confusions,
    bootstrap_indices,
    confusion_counts,
    holm,
    paired_t,
    percentile_interval,
    recall_ua_wa,
    sign_flip_pvalue,
)
from sertk.metrics import confusion_matrix, unweighted_accuracy

CLASSES = ["neu", "ang"]
N_NEU, N_ANG = 10, 5  # test utterances per fold: UA = (c_neu/10 + c_ang/5) / 2, WA = (c_neu + c_ang) / 15
METRICS_CSV = "epoch,train_loss,train_acc,valid_loss,valid_wa,valid_ua,lr,seconds\n"
# R and S: per fold (correct neu, correct ang). The first c utterances of a class are the correct ones, so
# S is right wherever R is.
#   R UA: .60 .55 .65 .70 .45 (mean .59)   WA: 9 8 10 10 7 /15
#   S UA: .70 .60 .70 .70 .55 (mean .65)   WA: 11 9 11 10 8 /15
#   S - R: UA d = .10 .05 .05 0 .10: mean .06, sd = sqrt(.0070 / 4), t = .06 / (sd / sqrt 5) = 3.2071
#          WA d = (2 1 1 0 1)/15: deviations (1 0 0 -1 0)/15, sd = sqrt(2/4)/15, t = sqrt(10) = 3.1623
#   sign flips (5 folds, 32 flips): UA d in .05 units (2 1 1 0 2), |sum| >= 6 only for all-same signs of
#          the non-zero four, times 2 for the zero: 4/32 = .125; WA (2 1 1 0 1): likewise 4/32.
R = {"fold1": (6, 3), "fold2": (5, 3), "fold3": (7, 3), "fold4": (6, 4), "fold5": (5, 2)}
S = {"fold1": (8, 3), "fold2": (6, 3), "fold3": (8, 3), "fold4": (6, 4), "fold5": (5, 3)}
# T - S on UA: (.60 .55 .65 .70 .65) - S = -.10 -.05 -.05 0 .10: mean -.02, t = -0.5898, p = 0.5870.
T = {"fold1": (6, 3), "fold2": (5, 3), "fold3": (7, 3), "fold4": (6, 4), "fold5": (7, 3)}
P_UA_SR = 2 * scipy.stats.t.sf(3.2071349, df=4)  # 0.0327
P_WA_SR = 2 * scipy.stats.t.sf(math.sqrt(10), df=4)  # 0.0341
P_UA_TS = 2 * scipy.stats.t.sf(0.5897678, df=4)  # 0.5870


def fold_rows(fold: str, correct_neu: int, correct_ang: int) -> list[tuple[str, str, str]]:
    """(utt, label, pred): N_NEU neu then N_ANG ang utterances, the first ``correct_*`` of each right."""
    rows = [(f"{fold}_n{k}", "neu", "neu" if k < correct_neu else "ang") for k in range(N_NEU)]
    return rows + [(f"{fold}_a{k}", "ang", "ang" if k < correct_ang else "neu") for k in range(N_ANG)]


def write_posteriors(path: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = ["utt\tlabel\tpred\t" + "\t".join(CLASSES)]
    lines += [f"{u}\t{y}\t{p}\t" + "\t".join("0.9" if c == p else "0.1" for c in CLASSES) for u, y, p in rows]
    path.write_text("\n".join(lines) + "\n")


def make_exp(
    root: Path,
    name: str,
    counts: dict[str, tuple[int, int]],
    synthetic: bool | None = True,
    order: list[str] | None = None,
    edit=None,
    metrics_csv: str | None = None,
) -> Path:
    """An exp dir (experiment.json, folds.json in ``order``, per fold posteriors.tsv and metrics.csv).

    ``edit(fold, rows)`` may change a fold's rows; ``synthetic=None`` leaves the flag out.
    """
    exp = root / name
    exp.mkdir(parents=True)
    names = order or list(counts)
    folds_json = root / f"{name}_folds.json"
    folds_json.write_text(json.dumps({"protocol": "random", "folds": [{"name": n} for n in names]}))
    experiment = {"system": name, "arch": "crnn-att", "folds": str(folds_json), "classes": CLASSES}
    if synthetic is not None:
        experiment["synthetic"] = synthetic
    (exp / "experiment.json").write_text(json.dumps(experiment))
    for fold, (neu, ang) in counts.items():
        (exp / fold).mkdir()
        rows = fold_rows(fold, neu, ang)
        write_posteriors(exp / fold / "posteriors.tsv", edit(fold, rows) if edit else rows)
        (exp / fold / "metrics.csv").write_text(
            metrics_csv
            or METRICS_CSV + "1,1.2,0.4,1.1,0.45,0.40,0.001,2.0\n2,1.0,0.5,1.0,0.55,0.50,0.001,2.0\n"
        )
    if synthetic is None:
        compare_module.load_results(exp)  # score now, then drop the flag as an old results.json would lack it
        results = json.loads((exp / "results.json").read_text())
        del results["synthetic"]
        (exp / "results.json").write_text(json.dumps(results))
    return exp


def row(text: str, name: str) -> list[str]:
    """The cells of the Markdown row whose first cell is ``name`` (bold or not), in the given section."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0].strip("*") == name:
            return [c.strip("*") for c in cells]
    raise AssertionError(f"no row {name!r} in:\n{text}")


def section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1]


# --- statistics on hand-checked numbers -----------------------------------------------------------------


def test_paired_t_matches_the_formula_on_five_folds():
    a = [0.62, 0.58, 0.66, 0.60, 0.64]
    b = [0.60, 0.57, 0.62, 0.61, 0.60]
    # d = .02 .01 .04 -.01 .04: mean .02; deviations 0 -.01 .02 -.03 .02, squares sum .0018, sd = sqrt(.0018/4)
    t_hand = 0.02 / (math.sqrt(0.0018 / 4) / math.sqrt(5))
    assert t_hand == pytest.approx(2.1081851)
    t, p = paired_t(a, b)
    assert t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * scipy.stats.t.sf(t_hand, df=4))  # df = k - 1
    # Swapping the systems flips the sign, not the p; an unpaired (Welch) test would give another t.
    assert paired_t(b, a) == (pytest.approx(-t_hand), pytest.approx(p))
    assert scipy.stats.ttest_ind(a, b).statistic != pytest.approx(t_hand, abs=0.1)


def test_paired_t_with_constant_differences():
    assert paired_t([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == (0.0, 1.0)
    assert paired_t([0.5, 0.5], [0.25, 0.25]) == (math.inf, 0.0)
    # Equal differences up to rounding (0.8 - 0.7 != 0.3 - 0.2 in floating point) are equal.
    assert paired_t([0.8, 0.3], [0.7, 0.2]) == (math.inf, 0.0)
    assert paired_t([0.7, 0.2], [0.8, 0.3]) == (-math.inf, 0.0)
    with pytest.raises(ValueError):
        paired_t([0.5], [0.4])


def test_sign_flip_p_enumerated_by_hand_on_four_folds():
    # d = (4 2 1 -1)/100, sum 6. The 16 flips of (4 2 1 1): with +4 +2 the sums are 8 6 6 4, with +4 -2
    # they are 4 2 2 0, and the 8 with -4 mirror them: |sum| >= 6 for 8 6 6 and -8 -6 -6, 6 of 16.
    a = [0.54, 0.52, 0.51, 0.49]
    b = [0.50, 0.50, 0.50, 0.50]
    assert sign_flip_pvalue(a, b) == pytest.approx(6 / 16)
    assert sign_flip_pvalue(b, a) == pytest.approx(6 / 16)
    # All four of one sign: only the all-plus and all-minus flips reach |sum| = 10.
    assert sign_flip_pvalue([0.53, 0.51, 0.52, 0.54], [0.5] * 4) == pytest.approx(2 / 16)
    # d = (1 1 1 -1)/100: sums 4 (1 way), 2 (4), 0 (6), -2 (4), -4 (1); |sum| >= 2 in 10 of 16. The
    # ties at |sum| = 2 count, whatever the rounding of 0.01 + 0.01 + 0.01 - 0.01.
    assert sign_flip_pvalue([0.51, 0.51, 0.51, 0.49], [0.5] * 4) == pytest.approx(10 / 16)
    assert sign_flip_pvalue([0.5] * 4, [0.5] * 4) == 1.0


def test_sign_flip_smallest_p_is_two_over_two_to_the_k():
    for k in (4, 5, 10):
        assert sign_flip_pvalue(np.arange(1, k + 1) / 100 + 0.5, [0.5] * k) == pytest.approx(2 / 2**k)


def test_holm_by_hand():
    # sorted .01 .03 .04 -> 3 x .01 = .03, 2 x .03 = .06, 1 x .04 = .04 -> kept monotone: .06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert holm([0.02, None, 0.5]) == [pytest.approx(0.04), None, pytest.approx(0.5)]
    assert holm([0.6, 0.7]) == [1.0, pytest.approx(1.0)]
    assert holm([None]) == [None] and holm([]) == []


def test_bootstrap_draws_stay_inside_their_fold():
    index = bootstrap_indices([3, 5, 2], 400, np.random.default_rng(0))
    assert index.shape == (400, 10)
    assert index[:, :3].min() == 0 and index[:, :3].max() == 2
    assert index[:, 3:8].min() == 3 and index[:, 3:8].max() == 7
    assert index[:, 8:].min() == 8 and index[:, 8:].max() == 9


def test_bincount_confusions_equal_one_matrix_per_resample():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    index = bootstrap_indices([20, 30], 7, np.random.default_rng(2))
    cms = confusion_counts(y_true, y_pred, index, 3)
    for b in range(7):
        np.testing.assert_array_equal(cms[b], confusion_matrix(y_true[index[b]], y_pred[index[b]], 3))
    recall, ua, wa = recall_ua_wa(cms)
    assert ua[3] == pytest.approx(unweighted_accuracy(cms[3]))
    assert wa[3] == pytest.approx(np.trace(cms[3]) / 50)


def test_percentile_interval_by_hand():
    # 0, .001, ..., 1: the 2.5th and 97.5th percentiles (linear interpolation) are .025 and .975.
    assert percentile_interval(np.arange(1001) / 1000) == (pytest.approx(0.025), pytest.approx(0.975))
    assert percentile_interval(np.arange(1001) / 1000, level=0.9) == (
        pytest.approx(0.05),
        pytest.approx(0.95),
    )


def _labels(n_per_class: int, wrong_per_class: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.repeat([0, 1, 2], n_per_class)
    y_pred = y_true.copy()
    for c, wrong in enumerate(wrong_per_class):
        y_pred[c * n_per_class : c * n_per_class + wrong] = (c + 1) % 3
    return y_true, y_pred


def test_bootstrap_interval_contains_pooled_ua_and_shrinks_with_n():
    # 10 per class, 3/5/2 wrong: recall .7 .5 .8, UA = 2/3.
    small = _labels(10, (3, 5, 2))
    cms = bootstrap_confusions([small], [15, 15], 3, 1000, seed=0)[0]
    low, high = percentile_interval(recall_ua_wa(cms)[1])
    assert low < 2 / 3 < high
    # The same proportions at 9x the size: the interval shrinks by about 3 (1/sqrt(9)).
    big = _labels(90, (27, 45, 18))
    cms = bootstrap_confusions([big], [135, 135], 3, 1000, seed=0)[0]
    big_low, big_high = percentile_interval(recall_ua_wa(cms)[1])
    assert big_low < 2 / 3 < big_high
    assert big_high - big_low < 0.5 * (high - low)
    # Seeded: the same seed gives the same draws, another seed others.
    again = bootstrap_confusions([small], [15, 15], 3, 1000, seed=0)[0]
    other = bootstrap_confusions([small], [15, 15], 3, 1000, seed=1)[0]
    assert percentile_interval(recall_ua_wa(again)[1]) == (low, high)
    assert not np.array_equal(again, other)


def test_paired_bootstrap_sees_a_dominating_system():
    # B is right wherever A is and fixes 2 more: every paired resample has UA_B - UA_A >= 0. Drawn
    # independently the two intervals (each ~.3 wide) would make the difference's interval straddle 0.
    a = _labels(10, (3, 5, 2))
    b = _labels(10, (2, 4, 2))
    cms = bootstrap_confusions([a, b], [30], 3, 1000, seed=0)
    _, ua, _ = recall_ua_wa(cms)
    low, high = percentile_interval(ua[1] - ua[0])
    assert low >= 0 and high > 0
    assert np.all(ua[1] >= ua[0])


# --- pairing, tests and marks on experiment dirs ---------------------------------------------------------


def test_paired_tests_and_marks_against_the_best(tmp_path):
    r = make_exp(tmp_path, "R", R)
    # S's folds.json lists its folds backwards, so its results.json does too: pairing must go by name.
    s = make_exp(tmp_path, "S", S, order=list(reversed(S)))
    comp = build_comparison([r, s])
    assert comp.best == 1 and comp.reference == 1
    versus = comp.versus[0]
    assert versus.fold_problem is None
    ua, wa = versus.tests["ua"], versus.tests["wa"]
    assert ua.k == 5 and ua.mean_difference == pytest.approx(-0.06)
    assert ua.t == pytest.approx(-3.2071349) and ua.t_pvalue == pytest.approx(P_UA_SR)
    assert wa.mean_difference == pytest.approx(-1 / 15)
    assert wa.t == pytest.approx(-math.sqrt(10)) and wa.t_pvalue == pytest.approx(P_WA_SR)
    assert ua.flip_pvalue == pytest.approx(4 / 32) and wa.flip_pvalue == pytest.approx(4 / 32)
    assert versus.verdict == "worse"  # one comparison: Holm = raw p = .033 < .05

    text = render_markdown(comp, "x.png")
    systems = section(text, "vs S |")
    assert row(systems, "S")[-1] == "reference (best)" and row(systems, "R")[-1] == "worse"
    assert "| **S** | **5** | **65.0 ± " in text  # the best row is bold
    tests = section(text, "## Paired tests against S (the best mean UA)")
    cells = row(tests, "R")
    assert cells[1:6] == ["5", "-6.0", "-3.21", "0.033 (0.033)", "0.125 (0.125)"]
    assert cells[6:9] == ["-6.7", "0.034 (0.034)", "0.125 (0.125)"]
    # Pooled UA: R (29/50 + 15/25)/2 = .59, S (33/50 + 16/25)/2 = .65; S is right wherever R is, so every
    # paired resample has R - S <= 0.
    delta, low, high = versus.pooled_difference["ua"]
    assert delta == pytest.approx(-0.06) and low < 0 and high <= 0
    assert cells[9].startswith("-6.0 [")


def test_holm_and_the_chosen_test_decide_the_marks(tmp_path):
    r, s, t = make_exp(tmp_path, "R", R), make_exp(tmp_path, "S", S), make_exp(tmp_path, "T", T)
    comp = build_comparison([r, s, t])
    vr, vt = comp.versus[0], comp.versus[2]
    assert vt.tests["ua"].t == pytest.approx(-0.5897678) and vt.tests["ua"].t_pvalue == pytest.approx(P_UA_TS)
    # Holm over 2 rows: R's p .0327 is the smaller -> 2 x .0327 = .0654; T's: max(.0654, .587) = .587.
    assert vr.holm[("ua", "t")] == pytest.approx(2 * P_UA_SR)
    assert vt.holm[("ua", "t")] == pytest.approx(P_UA_TS)
    # After the correction R is no longer significantly worse than the best: both rows are n.s.
    assert (vr.verdict, vt.verdict) == ("n.s.", "n.s.")
    assert row(section(render_markdown(comp, "x.png"), "## Paired"), "R")[4] == "0.033 (0.065)"
    # Alone with S, R is significantly worse by the t-test, but never by the sign-flip test on 5 folds.
    assert build_comparison([r, s]).versus[0].verdict == "worse"
    assert build_comparison([r, s], options=CompareOptions(test="sign-flip")).versus[0].verdict == "n.s."
    assert build_comparison([r, s], options=CompareOptions(alpha=0.01)).versus[0].verdict == "n.s."


def test_baseline_option_moves_the_reference_not_the_bold(tmp_path):
    r, s = make_exp(tmp_path, "R", R), make_exp(tmp_path, "S", S)
    comp = build_comparison([r, s], options=CompareOptions(baseline=str(r)))
    assert (comp.best, comp.reference) == (1, 0)
    assert comp.versus[1].tests["ua"].t == pytest.approx(3.2071349)  # S - R
    assert comp.versus[1].verdict == "better"
    table = summary_table(comp)
    assert table.bold == {1} and table.header[-1] == "vs R"
    assert [cells[-1] for cells in table.rows] == ["reference", "better"]
    assert "## Paired tests against R (--baseline)" in render_markdown(comp, "x.png")
    assert (
        build_comparison([r, s], options=CompareOptions(baseline="R")).reference == 0
    )  # a row name works too
    with pytest.raises(SertkError, match=r"--baseline nope: not one of the compared"):
        build_comparison([r, s], options=CompareOptions(baseline="nope"))


def test_mismatched_folds_are_not_paired(tmp_path):
    r = make_exp(tmp_path, "R", R)
    four = make_exp(tmp_path, "U", {k: v for k, v in S.items() if k != "fold5"})

    def rename(fold, rows):
        return [(f"{u}x" if fold == "fold3" and u.endswith("n0") else u, y, p) for u, y, p in rows]

    def relabel(fold, rows):
        return [(u, "ang" if fold == "fold2" and u.endswith("n9") else y, p) for u, y, p in rows]

    other_utts = make_exp(tmp_path, "V", S, edit=rename)
    other_labels = make_exp(tmp_path, "W", S, edit=relabel)
    comp = build_comparison([r, four, other_utts, other_labels], options=CompareOptions(baseline="R"))
    problems = [v.fold_problem for v in comp.versus[1:]]
    assert problems == [
        "fold names differ (fold1 fold2 fold3 fold4 fold5 vs fold1 fold2 fold3 fold4)",
        "fold3: test utterances differ (15 vs 15, 14 in common)",
        "fold2: labels differ on 1 test utterance(s)",
    ]
    for versus in comp.versus[1:]:
        assert versus.tests == {} and versus.verdict == "not paired" and versus.pooled_difference == {}
    text = render_markdown(comp, "x.png")
    assert row(section(text, "## Paired"), "U")[1:4] == ["not paired: fold names differ", "—", "—"]
    assert row(section(text, "## Paired"), "V")[1] == "not paired: fold3: test utterances differ"
    assert f"U vs R: {problems[0]}; no paired test over folds." in text
    assert "No row is on the same folds as R." in text  # no hint: the reference was chosen
    assert row(text, "U")[-1] == "not paired"


def test_same_utterances_in_other_folds_get_the_paired_bootstrap_only(tmp_path):
    r = make_exp(tmp_path, "R", R)
    # The same 75 utterances (ids, labels, predictions of S) split into folds named differently.
    regrouped = tmp_path / "X"
    make_exp(tmp_path, "X", S)
    for k, fold in enumerate(S):
        (regrouped / fold).rename(regrouped / f"split{k + 1}")
    comp = build_comparison([r, regrouped], options=CompareOptions(baseline="R"))
    versus = comp.versus[1]
    assert versus.fold_problem.startswith("fold names differ") and versus.tests == {}
    assert "No row is on the same folds as R." in render_markdown(comp, "x")
    # The default reference (the best mean UA, X) shares no folds either: the notes say what to do.
    default = render_markdown(build_comparison([r, regrouped], options=CompareOptions(n_boot=0)), "x")
    assert "No row is on the same folds as X: choose a reference with --baseline EXP." in default
    delta, low, high = versus.pooled_difference["ua"]
    assert delta == pytest.approx(0.06) and low >= 0 and high > 0


def test_one_fold_has_no_fold_test(tmp_path):
    a = make_exp(tmp_path, "A", {"fold1": (6, 3)})
    b = make_exp(tmp_path, "B", {"fold1": (8, 3)})
    versus = build_comparison([a, b]).versus[0]
    assert versus.fold_problem == "one fold: nothing to pair over" and versus.verdict == "one fold"
    assert versus.tests == {} and versus.pooled_difference["ua"][0] == pytest.approx(-0.1)


def test_pooled_interval_in_the_table_contains_the_pooled_value(tmp_path):
    r = make_exp(tmp_path, "R", R)
    comp = build_comparison([r], options=CompareOptions(n_boot=500, seed=3))
    low, high = comp.systems[0].interval["ua"]
    assert low < 0.59 < high
    assert row(render_markdown(comp, "x.png"), "R")[4] == f"59.0 [{100 * low:.1f}, {100 * high:.1f}]"
    assert build_comparison([r], options=CompareOptions(n_boot=500, seed=3)).systems[0].interval["ua"] == (
        low,
        high,
    )
    none = build_comparison([r], options=CompareOptions(n_boot=0))
    assert none.systems[0].interval == {} and row(render_markdown(none, "x.png"), "R")[4] == "59.0"


@pytest.mark.parametrize(
    "flags, banners",
    [((True, False), ["SYNTHETIC data"]), ((False, None), ["provenance unknown"]), ((False, False), [])],
)
def test_banners_follow_the_synthetic_flags(tmp_path, flags, banners):
    exps = [make_exp(tmp_path, f"E{k}", R, synthetic=flag) for k, flag in enumerate(flags)]
    text = render_markdown(build_comparison(exps, options=CompareOptions(n_boot=0)), "x.png")
    heading = text.splitlines()[0]
    assert ("SYNTHETIC" in heading) is ("SYNTHETIC data" in banners)
    assert ("provenance unknown" in heading) is (
        "provenance unknown" in banners and "SYNTHETIC data" not in banners
    )
    assert ("**SYNTHETIC data**" in text) is ("SYNTHETIC data" in banners)
    assert ("**data provenance unknown**" in text) is ("provenance unknown" in banners)
    if None in flags:
        assert row(text, "E1 (provenance unknown)")


def test_bad_options_and_output_paths_are_one_line_errors(tmp_path):
    r = make_exp(tmp_path, "R", R)
    with pytest.raises(SertkError, match=r"--test z: expected one of t, sign-flip"):
        build_comparison([r], options=CompareOptions(test="z"))
    with pytest.raises(SertkError, match=r"--alpha 1.5"):
        build_comparison([r], options=CompareOptions(alpha=1.5))
    with pytest.raises(SertkError, match=r"--bootstrap -1"):
        build_comparison([r], options=CompareOptions(n_boot=-1))
    with pytest.raises(SertkError, match=r"--out is a directory"):
        compare_experiments([r], tmp_path)
    with pytest.raises(SertkError, match=r"--html is a directory"):
        compare_experiments([r], tmp_path / "a.md", html=tmp_path)
    with pytest.raises(SertkError, match=r"experiment dir not found"):
        compare_experiments([tmp_path / "missing"], tmp_path / "a.md")
    (r / "fold2" / "posteriors.tsv").write_text("utt\tlabel\tpred\tneu\tang\nu1\tjoy\tneu\t0.5\t0.5\n")
    with pytest.raises(SertkError, match=r"fold2/posteriors.tsv: line 2"):
        compare_experiments([r], tmp_path / "a.md")


# --- the Table 2 layout (kept from the first compare) ---------------------------------------------------


def test_compare_table_rows_and_columns(tmp_path):
    grid = tmp_path / "grid"
    baseline = make_scored_exp(grid, "baseline", paper={"ua": 0.623, "wa": 0.610})
    focal = make_scored_exp(
        grid,
        "focal",
        paper={"ua": 0.663, "wa": 0.655},
        extra={"config": "conf/crnn_discriminative/focal_g2_a2.yaml"},
        folds={"fold1": FOLD1},
    )
    score_module.score_experiment(baseline)  # focal is scored by compare itself (no results.json yet)
    out = tmp_path / "table2.md"
    text = compare_experiments([baseline, focal], out, title="Table 2", options=CompareOptions(n_boot=0))
    assert out.read_text() == text
    lines = text.splitlines()
    assert lines[0] == "# Table 2 (SYNTHETIC data)"
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == (
        "| system | folds | UA (%) | WA (%) | pooled UA (%) [95% CI] | pooled WA (%) [95% CI] "
        "| paper UA (%) | paper WA (%) | neu recall (%) | hap recall (%) | sad recall (%) | ang recall (%) "
        "| vs focal_g2_a2 |"
    )
    assert table[2] == (
        "| baseline | 2 | 70.8 ± 5.9 | 70.8 ± 5.9 | 66.7 | 70.0 | 62.3 | 61.0 | 66.7 | 50.0 | 100.0 | 50.0 "
        "| not paired |"
    )
    # Grid row named by its config's stem; one fold: std 0; pooled recall = fold1's recall; best UA: bold.
    assert table[3] == (
        "| **focal_g2_a2** | **1** | **75.0 ± 0.0** | **66.7 ± 0.0** | **75.0** | **66.7** | **66.3** "
        "| **65.5** | **50.0** | **100.0** | **100.0** | **50.0** | **reference (best)** |"
    )
    assert (focal / "results.json").is_file()
    assert_valid_png(tmp_path / "table2_confusions.png")
    assert (tmp_path / "table2.html").is_file()  # the HTML report goes beside the Markdown by default


def test_compare_real_data_has_no_synthetic_flag(tmp_path):
    exp = make_scored_exp(tmp_path, "iemocap_run", synthetic=False, folds={"fold1": FOLD1, "fold2": FOLD2})
    text = compare_experiments([exp], tmp_path / "cmp.md", options=CompareOptions(n_boot=0))
    assert "SYNTHETIC" not in text and "provenance" not in text
    assert (
        "| **iemocap_run** | **2** | **70.8 ± 5.9** | **70.8 ± 5.9** | **66.7** | **70.0** | **—** | **—** |"
        in text
    )


# --- plots for the report -------------------------------------------------------------------------------


def test_learning_curves_read_every_fold_and_say_when_there_is_no_validation(tmp_path):
    no_valid = METRICS_CSV + "1,1.2,0.4,,,,0.001,2.0\n2,1.0,0.5,,,,0.001,2.0\n"
    comp = build_comparison(
        [make_exp(tmp_path, "R", R, metrics_csv=no_valid)], options=CompareOptions(n_boot=0)
    )
    curves = comp.systems[0].learning_curves()
    assert list(curves) == list(R)
    assert curves["fold3"]["train_loss"].tolist() == [1.2, 1.0]
    assert np.isnan(curves["fold3"]["valid_ua"]).all()
    fig = learning_curves_figure(curves, "t")
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["no validation set"]
    curves["fold1"]["valid_ua"] = np.array([0.4, 0.5])
    assert [t.get_text() for ax in learning_curves_figure(curves, "t").axes for t in ax.texts] == []


def test_recall_bars_heights_and_intervals():
    fig = recall_bars_figure(
        [
            ("a", np.array([0.5, np.nan]), np.array([[0.4, np.nan], [0.7, np.nan]])),
            ("b", np.array([0.25, 1.0]), None),
        ],
        ["neu", "ang"],
        "t",
    )
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([50, 0, 25, 100])
    # a's error bar on neu runs from 40 to 70.
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert bars[1].errorbar is None
    segments = bars[0].errorbar.lines[2][0].get_segments()
    assert segments[0][:, 1] == pytest.approx([40, 70])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


# --- the HTML report ------------------------------------------------------------------------------------

PNG_DATA = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _report(tmp_path: Path) -> tuple[Path, list[str]]:
    no_valid = METRICS_CSV + "1,1.2,0.4,,,,0.001,2.0\n2,1.0,0.5,,,,0.001,2.0\n"  # no validation set
    exps = [
        make_exp(tmp_path, "R", R),
        make_exp(tmp_path, "S & <co>", S, metrics_csv=no_valid),
        make_exp(tmp_path, "T", T, synthetic=None),
    ]
    html = tmp_path / "out" / "report.html"
    compare_experiments(exps, tmp_path / "out" / "table.md", html=html, options=CompareOptions(n_boot=200))
    return html, ["R", "S & <co>", "T"]


def test_html_report_is_self_contained(tmp_path):
    html_path, names = _report(tmp_path)
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for name in names:
        assert name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    assert "S & <co>" not in page  # escaped, never raw markup
    # One recall plot, then a confusion matrix and learning curves per system, each a real PNG.
    images = PNG_DATA.findall(page)
    assert len(images) == 1 + 2 * len(names) == page.count("<img")
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # Decoded in full: a browser shows a truncated PNG without complaint.
        assert matplotlib.image.imread(io.BytesIO(png), format="png").shape[0] > 100
    # Offline: no script, no stylesheet link, no URL outside data: URIs.
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "http://" not in page and "https://" not in page
    assert 'class="banner synthetic"' in page and 'class="banner unknown"' in page
    # Mixed provenance: every row says which data it is.
    assert '<tr class="best"><td>S &amp; &lt;co&gt; (synthetic)</td>' in page
    assert "<td>T (provenance unknown)</td>" in page
    assert "Paired tests against S &amp; &lt;co&gt; (the best mean UA)" in page


def test_html_report_in_a_real_browser(tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip(
            "chromium not found: `bash tools/install.sh --dev` installs it with apt-get when run as root "
            "(or: apt-get install chromium)"
        )
    html_path, names = _report(tmp_path)
    seen = render(html_path, browser)
    assert seen.errors == []
    for name in names:
        assert name in seen.text
    assert "SYNTHETIC data" in seen.text and "data provenance unknown" in seen.text
    assert len(seen.images) == 7
    assert all(image["complete"] and image["width"] > 100 and image["height"] > 100 for image in seen.images)


def test_browser_check_catches_console_errors_and_broken_images(tmp_path):
    """The browser test can fail: a page with a console error, a thrown error, a broken image and an
    external URL is reported as such."""
    browser = find_browser()
    if browser is None:
        pytest.skip("chromium not found (see test_html_report_in_a_real_browser)")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>bad</title>'
        '<link rel="stylesheet" href="https://cdn.example.org/x.css"></head><body><p>visible</p>'
        '<p style="display:none">hidden</p><img alt="broken" src="data:image/png;base64,AAAA">'
        '<script>console.error("planted"); throw new Error("thrown");</script></body></html>'
    )
    seen = render(page, browser)
    assert "visible" in seen.text and "hidden" not in seen.text
    assert any("planted" in e for e in seen.errors)
    assert any("thrown" in e for e in seen.errors)
    assert any(e.startswith("log:") for e in seen.errors)  # the stylesheet that could not load
    assert seen.images == [{"alt": "broken", "complete": True, "width": 0, "height": 0}]


def test_cli_compare_writes_markdown_and_html(tmp_path):
    r, s = make_exp(tmp_path, "R", R), make_exp(tmp_path, "S", S)
    for exp in (r, s):
        compare_module.load_results(exp)  # score here, so the subprocess only compares
    out = sertk(
        "compare", str(r), str(s), "--out", str(tmp_path / "t.md"), "--html", str(tmp_path / "r.html"),
        "--baseline", str(r), "--bootstrap", "100", "--seed", "1", "--test", "sign-flip",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "t.md").read_text()
    assert row(text, "S")[-1] == "n.s." and "B = 100 resamples (seed 1)" in text
    assert (tmp_path / "r.html").is_file() and (tmp_path / "t_confusions.png").is_file()
    out = sertk("compare", str(r), "--out", str(tmp_path))
    assert out.returncode == 1
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        f"error: {tmp_path}: --out is a directory, expected a file name"
    ]
