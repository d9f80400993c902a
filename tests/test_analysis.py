"""Table 2 / Table 6 analysis (cnn_blstm_vtlp.txt) on a hand-made two-fold experiment with hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_inputs import TABLE5

from sertk.data.datadir import write_data_dir
from sertk.data.labels import agreement
from sertk.errors import SertkError
from sertk.evaluate.analysis import analyze_experiment, second_choice

CLASSES = ["neu", "hap", "sad", "ang"]
# utt: (speaker, label, votes or None, posteriors over CLASSES)
UTTS = {
    "Ses01F_u1": ("Ses01F", "neu", "neu neu neu", [0.7, 0.2, 0.1, 0.0]),  # una, right, 2nd hap
    "Ses01F_u2": ("Ses01F", "hap", "hap hap neu", [0.5, 0.4, 0.1, 0.0]),  # amb, wrong, 2nd right
    "Ses01F_u3": ("Ses01F", "sad", "sad,ang sad sad", [0.1, 0.0, 0.2, 0.7]),  # una, wrong, 2nd right
    "Ses01F_u4": ("Ses01F", "ang", "ang oth,ang oth", [0.0, 0.0, 0.0, 1.0]),  # amb, right, 2nd neu
    "Ses01M_u5": ("Ses01M", "neu", None, [0.2, 0.6, 0.1, 0.1]),  # no votes, wrong, 2nd right
    "Ses01M_u6": ("Ses01M", "sad", "sad sad sad", [0.0, 0.0, 1.0, 0.0]),  # una, right, 2nd neu
    "Ses01M_u7": ("Ses01M", "ang", "ang ang ang", [0.3, 0.0, 0.0, 0.7]),  # una, right, 2nd neu
}


def make_experiment(root, with_votes=True, with_sessions=True, synthetic=True):
    utts = sorted(UTTS)
    tables = {
        "wav.scp": {u: f"/nonexistent/{u}.wav" for u in utts},
        "utt2spk": {u: UTTS[u][0] for u in utts},
        "utt2emo": {u: UTTS[u][1] for u in utts},
        "utt2gender": {u: UTTS[u][0][-1] for u in utts},
    }
    if with_sessions:
        tables["utt2session"] = {u: "Session1" for u in utts}
    if with_votes:
        tables["utt2votes"] = {u: UTTS[u][2] for u in utts if UTTS[u][2]}
    data = root / "data"
    write_data_dir(data, tables, {"classes": CLASSES, "class_map": {c: c for c in CLASSES}})
    exp = root / "exp"
    for fold, speaker in (("fold1", "Ses01F"), ("fold2", "Ses01M")):
        (exp / fold).mkdir(parents=True)
        lines = ["\t".join(["utt", "label", "pred", *CLASSES])]
        for u in (u for u in utts if UTTS[u][0] == speaker):
            post = UTTS[u][3]
            lines.append("\t".join([u, UTTS[u][1], CLASSES[int(np.argmax(post))], *map(str, post)]))
        (exp / fold / "posteriors.tsv").write_text("\n".join(lines) + "\n")
    info = {"system": "toy", "data": str(data)}
    if synthetic is not None:
        info["synthetic"] = synthetic
    (exp / "experiment.json").write_text(json.dumps(info))
    return exp


def test_unanimous_and_ambiguous_follow_table5():
    votes = [row[0] for row in TABLE5]
    labels = np.array([CLASSES.index(row[1]) for row in TABLE5])
    # Table 5's "Subset" column: amb, amb, una, amb; no votes: -1.
    assert agreement(votes, labels, CLASSES, {}).tolist() == [0, 0, 1, 0]
    assert agreement(["", "exc hap"], np.array([0, 1]), CLASSES, {"exc": "hap"}).tolist() == [-1, 1]


def test_second_choice_skips_the_prediction():
    post = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert second_choice(post, post.argmax(axis=1)).tolist() == [2, 1, 0]


def test_second_choice_is_never_the_prediction_even_when_the_rest_is_zero():
    # A one-hot posterior on class 0: every other class ties at 0, the lowest of them (1) is second.
    post = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert second_choice(post, np.array([0, 2])).tolist() == [1, 0]


def test_per_fold_and_agreement_tables(tmp_path):
    exp = make_experiment(tmp_path)
    result = analyze_experiment(exp)
    f1, f2 = result["folds"]
    assert (f1["name"], f1["session"], f1["gender"], f1["speakers"], f1["n"]) == (
        "fold1",
        "1",
        "F",
        ["Ses01F"],
        4,
    )
    assert (f1["wa"], f1["ua"]) == (0.5, 0.5)  # recalls neu 1, hap 0, sad 0, ang 1
    assert (f2["gender"], f2["wa"], f2["ua"]) == ("M", pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert result["mean"] == {"wa": pytest.approx(7 / 12), "ua": pytest.approx(7 / 12)}

    every = result["subsets"]["all"]
    assert [every["classes"][c]["first"] for c in CLASSES] == [0.5, 0.0, 0.5, 1.0]
    assert [every["classes"][c]["second"] for c in CLASSES] == [0.5, 1.0, 0.5, 0.0]
    assert every["weighted"] == {"first": pytest.approx(4 / 7), "second": pytest.approx(3 / 7)}
    assert every["unweighted"] == {"first": 0.5, "second": 0.5}
    una = result["subsets"]["unanimous"]
    assert una["n"] == 4 and una["classes"]["hap"] == {"n": 0, "first": None, "second": None}
    assert una["weighted"] == {"first": 0.75, "second": 0.25}
    assert una["unweighted"] == {"first": pytest.approx(5 / 6), "second": pytest.approx(1 / 6)}
    amb = result["subsets"]["ambiguous"]
    assert amb["n"] == 2 and amb["weighted"] == {"first": 0.5, "second": 0.5}
    assert result["no_votes"] == 1

    md = (exp / "ANALYSIS.md").read_text()
    assert "| fold1 | 1 | F | Ses01F | 4 | 50.0 | 50.0 |" in md
    assert "| Total (mean) | | | | | 58.3 | 58.3 |" in md
    assert "| hap | 1 | 0.0 | 100.0 | 0 | – | – | 1 | 0.0 | 100.0 |" in md
    assert "SYNTHETIC" in md and json.loads((exp / "analysis.json").read_text())["mean"][
        "wa"
    ] == pytest.approx(7 / 12)


def test_without_votes_only_all_and_errors(tmp_path):
    exp = make_experiment(tmp_path / "a", with_votes=False)
    result = analyze_experiment(exp)
    assert set(result["subsets"]) == {"all"} and "No utt2votes" in (exp / "ANALYSIS.md").read_text()
    (exp / "fold2" / "posteriors.tsv").write_text("utt label pred neu hap sad ang\nx neu neu 1 0 0\n")
    with pytest.raises(SertkError, match=r"fold2/posteriors.tsv: line 2"):
        analyze_experiment(exp)
    with pytest.raises(SertkError, match="experiment.json: not found"):
        analyze_experiment(tmp_path / "missing")


def test_second_choice_ranks_by_the_mean_softmax_when_predictions_were_votes(tmp_path):
    """With VTLP voting, Table 6's 2nd choice comes from the copies' mean softmax, not from vote counts."""
    exp = make_experiment(tmp_path)
    path = exp / "fold1" / "posteriors.tsv"
    header = "\t".join(["utt", "label", "pred", *CLASSES, *(f"softmax_{c}" for c in CLASSES)])
    # Ses01F_u1 (neu): votes put hap second, the softmax puts sad second; true label neu is 1st either way.
    # Ses01F_u2 (hap): votes 6 neu / 5 hap -> 2nd choice hap by votes; softmax puts ang second -> wrong.
    rows = [
        "Ses01F_u1\tneu\tneu\t0.7272\t0.2727\t0.0\t0.0\t0.5\t0.1\t0.3\t0.1",
        "Ses01F_u2\thap\tneu\t0.5454\t0.4545\t0.0\t0.0\t0.5\t0.1\t0.1\t0.3",
        "Ses01F_u3\tsad\tang\t0.0\t0.0\t0.0\t1.0\t0.1\t0.0\t0.2\t0.7",
        "Ses01F_u4\tang\tang\t0.0\t0.0\t0.0\t1.0\t0.0\t0.0\t0.0\t1.0",
    ]
    path.write_text("\n".join([header, *rows]) + "\n")
    result = analyze_experiment(exp)
    hap = result["subsets"]["all"]["classes"]["hap"]
    assert hap["first"] == 0.0 and hap["second"] == 0.0  # by votes it would have been 1.0


def test_fold_rows_keep_wa_and_ua_apart(tmp_path, monkeypatch):
    # A second right sad utterance in fold2: neu 0/1, sad 2/2, ang 1/1 -> WA 3/4, UA (0 + 1 + 1) / 3 = 2/3.
    monkeypatch.setitem(UTTS, "Ses01M_u8", ("Ses01M", "sad", "sad sad sad", [0.0, 0.0, 1.0, 0.0]))
    result = analyze_experiment(make_experiment(tmp_path))
    fold2 = result["folds"][1]
    assert (fold2["n"], fold2["wa"], fold2["ua"]) == (4, pytest.approx(3 / 4), pytest.approx(2 / 3))
    # Total is the mean over folds (fold1: WA = UA = 1/2).
    assert result["mean"] == {
        "wa": pytest.approx((1 / 2 + 3 / 4) / 2),
        "ua": pytest.approx((1 / 2 + 2 / 3) / 2),
    }


def test_folds_are_listed_in_natural_order(tmp_path):
    exp = make_experiment(tmp_path)
    (exp / "fold1").rename(exp / "fold9")
    (exp / "fold2").rename(exp / "fold10")
    folds = analyze_experiment(exp)["folds"]
    assert [(f["name"], f["speakers"]) for f in folds] == [("fold9", ["Ses01F"]), ("fold10", ["Ses01M"])]


def test_fold_ua_is_the_mean_recall_of_the_true_classes(tmp_path, monkeypatch):
    # fold2 gains sad -> sad and neu -> sad: true neu {hap, sad}, sad {sad, sad}, ang {ang}.
    # Recall per true class: neu 0/2, sad 2/2, ang 1/1 -> UA 2/3; WA 3/5. Scoring the predictions as if they
    # were the labels would give (hap 0/1, sad 2/3, ang 1/1) / 3 = 5/9 instead.
    monkeypatch.setitem(UTTS, "Ses01M_u8", ("Ses01M", "sad", "sad sad sad", [0.0, 0.0, 1.0, 0.0]))
    monkeypatch.setitem(UTTS, "Ses01M_u9", ("Ses01M", "neu", "neu neu neu", [0.1, 0.0, 0.8, 0.1]))
    fold2 = analyze_experiment(make_experiment(tmp_path))["folds"][1]
    assert (fold2["n"], fold2["wa"], fold2["ua"]) == (5, pytest.approx(3 / 5), pytest.approx(2 / 3))


def test_session_falls_back_to_the_speaker_id_without_utt2session(tmp_path, monkeypatch):
    # "Ses01F" -> session 1 (leading zeros dropped, as utt2session's "Session1" gives); an id without the
    # IEMOCAP pattern -> "?".
    monkeypatch.setitem(UTTS, "Ses01M_u5", ("spkX", "neu", None, [0.2, 0.6, 0.1, 0.1]))
    exp = make_experiment(tmp_path, with_sessions=False)
    # make_experiment puts the utterances of speaker Ses01M in fold2: add spkX's there by hand.
    with (exp / "fold2" / "posteriors.tsv").open("a") as tsv:
        tsv.write("\t".join(["Ses01M_u5", "neu", "hap", "0.2", "0.6", "0.1", "0.1"]) + "\n")
    f1, f2 = analyze_experiment(exp)["folds"]
    assert f1["session"] == "1"
    assert f2["session"] == "1+?" and f2["speakers"] == ["Ses01M", "spkX"]


def test_average_rows_and_the_no_votes_note_in_analysis_md(tmp_path):
    exp = make_experiment(tmp_path)
    analyze_experiment(exp)
    md = (exp / "ANALYSIS.md").read_text()
    # From test_per_fold_and_agreement_tables' hand counts: all 7 utts 4/7 right, 3/7 2nd right; unanimous
    # 4 (3/4, 1/4, per class 5/6, 1/6); ambiguous 2 (1/2, 1/2 both ways). N only in the weighted row.
    assert "| Weighted | 7 | 57.1 | 42.9 | 4 | 75.0 | 25.0 | 2 | 50.0 | 50.0 |" in md
    assert "| Unweighted |  | 50.0 | 50.0 |  | 83.3 | 16.7 |  | 50.0 | 50.0 |" in md
    assert "1 test utterances have no votes and are in neither subset." in md


def test_banner_says_synthetic_unknown_or_nothing(tmp_path):
    def banner(synthetic):
        exp = make_experiment(tmp_path / str(synthetic), synthetic=synthetic)
        analyze_experiment(exp)
        md = (exp / "ANALYSIS.md").read_text()
        return "SYNTHETIC" in md, "provenance unknown" in md

    # experiment.json's flag wins; without one the data dir's meta (here none) leaves the provenance unknown.
    assert banner(True) == (True, False)
    assert banner(False) == (False, False)
    assert banner(None) == (False, True)


def test_an_experiment_without_posteriors_is_an_error(tmp_path):
    exp = make_experiment(tmp_path)
    for fold in ("fold1", "fold2"):
        (exp / fold / "posteriors.tsv").unlink()
    with pytest.raises(SertkError, match=r"no fold has a posteriors.tsv \(run stage 6"):
        analyze_experiment(exp)
