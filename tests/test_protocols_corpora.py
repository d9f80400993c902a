"""Fold protocols of the new corpora: hand-checked small cases and the full-size speaker layouts."""

from __future__ import annotations

from collections import Counter

import pytest

from sertk.corpora.emodb import SPEAKER_SEX
from sertk.data.protocols_corpora import (
    classes_missing_from_train,
    leave_one_speaker_out,
    official_partitions,
    speaker_group_kfold,
    speaker_groups,
)
from sertk.errors import SertkError

# EmoDB's utterances per speaker (535 in all), as the corpus has them.
EMODB_COUNTS = {
    "03": 49,
    "08": 58,
    "09": 43,
    "10": 38,
    "11": 55,
    "12": 35,
    "13": 61,
    "14": 69,
    "15": 56,
    "16": 71,
}


def utts_of(counts: dict[str, int]) -> dict[str, str]:
    """utt -> speaker for ``counts[speaker]`` utterances each (ids ``<speaker>-<n>``)."""
    return {f"{spk}-{n:03d}": spk for spk, count in counts.items() for n in range(count)}


def assert_cross_validation(folds: list[dict], utt2spk: dict[str, str]) -> None:
    """Every utterance tested exactly once; no speaker in two parts of a fold; parts cover the data."""
    tested = Counter(u for fold in folds for u in fold["test"])
    assert set(tested) == set(utt2spk) and set(tested.values()) == {1}
    for fold in folds:
        owners = [{utt2spk[u] for u in fold[p]} for p in ("train", "valid", "test")]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
        assert sorted(fold["train"] + fold["valid"] + fold["test"]) == sorted(utt2spk)
        assert owners[2] == set(fold["test_speakers"]) and owners[1] == set(fold["valid_speakers"])


def test_leave_one_speaker_out_on_emodb() -> None:
    utt2spk = utts_of({f"emodb{s}": n for s, n in EMODB_COUNTS.items()})
    folds = leave_one_speaker_out(utt2spk)
    assert [f["name"] for f in folds] == [f"fold{i}" for i in range(1, 11)]
    assert_cross_validation(folds, utt2spk)
    first, last = folds[0], folds[-1]
    assert (first["test_speakers"], first["valid_speakers"]) == (["emodb03"], ["emodb08"])
    assert (len(first["train"]), len(first["valid"]), len(first["test"])) == (535 - 49 - 58, 58, 49)
    # The last speaker validates on the first one.
    assert (last["test_speakers"], last["valid_speakers"]) == (["emodb16"], ["emodb03"])
    none = leave_one_speaker_out(utt2spk, valid="none")
    assert all(not f["valid"] and len(f["train"]) + len(f["test"]) == 535 for f in none)


def test_speaker_groups_are_balanced_by_sex() -> None:
    ravdess = {f"ravdess{a:02d}": "M" if a % 2 else "F" for a in range(1, 25)}
    groups = speaker_groups(ravdess, 6)
    assert groups[0] == ["ravdess01", "ravdess02", "ravdess13", "ravdess14"]
    assert all(sorted(ravdess[s] for s in g) == ["F", "F", "M", "M"] for g in groups)
    # CREMA-D's 91 actors (43 female, 48 male) in 5 groups: sizes and sex counts within one.
    cremad = {f"cremad{1001 + i}": "F" if i < 43 else "M" for i in range(91)}
    sizes = [(len(g), sum(cremad[s] == "F" for s in g)) for g in speaker_groups(cremad, 5)]
    assert sizes == [(19, 9), (18, 9), (18, 9), (18, 8), (18, 8)]


def test_speaker_group_kfold_on_ravdess() -> None:
    utt2spk = utts_of({f"ravdess{a:02d}": 60 for a in range(1, 25)})
    utt2gender = {u: "M" if int(s[-2:]) % 2 else "F" for u, s in utt2spk.items()}
    folds = speaker_group_kfold(utt2spk, utt2gender, k=6)
    assert_cross_validation(folds, utt2spk)
    assert [(len(f["train"]), len(f["valid"]), len(f["test"])) for f in folds] == [(960, 240, 240)] * 6
    assert folds[5]["valid_speakers"] == folds[0]["test_speakers"]
    with pytest.raises(SertkError, match="k=25 needs 3 <= k <= 24"):
        speaker_group_kfold(utt2spk, utt2gender, k=25)


def test_official_partitions() -> None:
    utt2part = {"a": "Train", "b": "Train", "c": "Development", "d": "Test1", "e": "Test2", "f": "Test3"}
    (fold,) = official_partitions(utt2part)
    assert {k: fold[k] for k in ("name", "train", "valid", "test")} == {
        "name": "fold1",
        "train": ["a", "b"],
        "valid": ["c"],
        "test": ["d"],
    }
    both = official_partitions(utt2part, tests=("Test1", "Test2"))
    assert [(f["name"], f["test"]) for f in both] == [("fold1", ["d"]), ("fold2", ["e"])]
    with pytest.raises(SertkError, match="no utterance in partition 'Test4' .have: Development, Test1"):
        official_partitions(utt2part, tests=("Test4",))


def test_missing_classes_and_bad_options() -> None:
    utt2spk = {"u1": "s1", "u2": "s2", "u3": "s3", "u4": "s3"}
    labels = {"u1": "neu", "u2": "ang", "u3": "ang", "u4": "neu"}
    folds = leave_one_speaker_out(utt2spk)
    # fold2 tests s2 and validates on s3: only s1 (neu) trains; fold3 (s3, s1) trains on s2 (ang).
    assert classes_missing_from_train(folds, labels, ["neu", "ang"]) == [
        "fold2: no training utterance of ang",
        "fold3: no training utterance of neu",
    ]
    with pytest.raises(SertkError, match="validation 'last'"):
        leave_one_speaker_out(utt2spk, valid="last")
    with pytest.raises(SertkError, match="at least 3 speakers"):
        leave_one_speaker_out({"u1": "s1", "u2": "s2"})


def test_emodb_speaker_table_is_the_protocol_input() -> None:
    assert sorted(SPEAKER_SEX) == sorted(EMODB_COUNTS) and Counter(SPEAKER_SEX.values()) == {"M": 5, "F": 5}


def test_an_official_fold_is_named_after_its_test_partition() -> None:
    utt2part = {"a": "Train", "b": "Development", "c": "Test1", "d": "Test2"}
    (fold,) = official_partitions(utt2part, tests=("Test2",))
    assert (fold["name"], fold["test"]) == ("fold2", ["d"])


def test_a_speakers_sex_is_that_of_most_of_its_utterances() -> None:
    from sertk.data.protocols_corpora import speaker_genders

    utt2spk = {"u1": "s1", "u2": "s1", "u3": "s1", "u4": "s2"}
    assert speaker_genders(utt2spk, {"u1": "M", "u2": "M", "u3": "F", "u4": "M"}) == {"s1": "M", "s2": "M"}
    assert speaker_genders(utt2spk, None) == {"s1": "U", "s2": "U"}
