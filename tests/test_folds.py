"""Folds: the invariants of every protocol, the file format, selection and bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sertk.data import DataDir, write_data_dir
from sertk.data.folds import make_folds, read_folds, select_folds, write_folds
from sertk.errors import SertkError

CLASSES = ["neu", "hap", "ang", "sad"]


def make_data(tmp_path: Path, sessions=(1, 2, 3, 4, 5), per_speaker: int = 8) -> DataDir:
    """A data dir with 2 speakers per session and ``per_speaker`` utterances each, classes cycling."""
    tables: dict[str, dict[str, str]] = {n: {} for n in ("wav.scp", "utt2spk", "utt2emo", "utt2session")}
    for s in sessions:
        for gender in "FM":
            for i in range(per_speaker):
                utt = f"Ses0{s}F_impro01_{gender}{i:03d}"
                tables["wav.scp"][utt] = f"/x/{utt}.wav"
                tables["utt2spk"][utt] = f"Ses0{s}{gender}"
                tables["utt2emo"][utt] = CLASSES[i % 4]
                tables["utt2session"][utt] = f"Session{s}"
    return write_data_dir(tmp_path / "data", tables, {"classes": CLASSES})


def assert_disjoint(folds: dict, data: DataDir, by_speaker: bool) -> None:
    spk = data["utt2spk"]
    for fold in folds["folds"]:
        parts = [set(fold[p]) for p in ("train", "valid", "test")]
        assert sum(map(len, parts)) == len(set.union(*parts)) == len(data.utts)
        if by_speaker:
            speakers = [{spk[u] for u in part} for part in parts]
            assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])


def test_loso_session(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    folds = make_folds(data, "loso-session")
    assert folds["protocol"] == "loso-session" and [f["name"] for f in folds["folds"]] == [
        f"fold{i}" for i in range(1, 6)
    ]
    assert_disjoint(folds, data, by_speaker=True)
    fold5 = folds["folds"][4]
    assert fold5["test_speakers"] == ["Ses05F", "Ses05M"] and fold5["valid_speakers"] == ["Ses01F", "Ses01M"]
    assert len(fold5["test"]) == 16 and len(fold5["valid"]) == 16 and len(fold5["train"]) == 48
    # Every utterance is tested exactly once across the folds.
    assert Counter(u for f in folds["folds"] for u in f["test"]) == Counter(data.utts)
    assert "notes" not in folds


def test_loso_speaker(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    folds = make_folds(data, "loso-speaker")
    assert [f["test_speakers"] for f in folds["folds"]][:3] == [["Ses01F"], ["Ses01M"], ["Ses02F"]]
    assert [f["name"] for f in folds["folds"]] == [f"fold{i}" for i in range(1, 11)]
    assert folds["folds"][3]["valid_speakers"] == ["Ses02F"]
    assert_disjoint(folds, data, by_speaker=True)
    assert {len(f["test"]) for f in folds["folds"]} == {8}


def test_subset_gives_folds_for_what_exists(tmp_path: Path) -> None:
    data = make_data(tmp_path, sessions=(1, 2, 4, 5))
    folds = make_folds(data, "loso-session")
    assert [f["name"] for f in folds["folds"]] == ["fold1", "fold2", "fold4", "fold5"]
    assert folds["folds"][1]["valid_speakers"] == ["Ses04F", "Ses04M"]
    assert "4 folds" in folds["notes"][0]
    # Drop Ses04M: Ses04F has no session partner, so no fold tests it.
    tables = {
        k: {u: v for u, v in t.items() if not u.startswith("Ses04F_impro01_M")}
        for k, t in data.tables.items()
    }
    subset = write_data_dir(tmp_path / "sub", tables, data.meta)
    folds = make_folds(subset, "loso-speaker")
    assert [f["name"] for f in folds["folds"]] == ["fold1", "fold2", "fold3", "fold4", "fold9", "fold10"]
    assert any("Ses04F has no session partner" in n for n in folds["notes"])
    write_folds(tmp_path / "f.json", folds, subset)
    with pytest.raises(SertkError, match="at least 3 sessions"):
        make_folds(make_data(tmp_path / "two", sessions=(1, 2)), "loso-session")


def test_random_stratified(tmp_path: Path) -> None:
    data = make_data(tmp_path, per_speaker=20)  # 200 utterances, 50 per class
    folds = make_folds(data, "random", ratios=(0.8, 0.1, 0.1), repeats=3, seed=7)
    assert (folds["seed"], folds["ratios"], folds["repeats"]) == (7, [0.8, 0.1, 0.1], 3)
    assert_disjoint(folds, data, by_speaker=False)
    emo = data["utt2emo"]
    for fold in folds["folds"]:
        for part, n in (("train", 40), ("valid", 5), ("test", 5)):
            assert Counter(emo[u] for u in fold[part]) == {c: n for c in CLASSES}
    tests = [set(f["test"]) for f in folds["folds"]]
    assert tests[0] != tests[1] != tests[2]
    # Same seed, same folds; fold k of a run with seed s is fold 1 of a run with seed s+k-1.
    assert make_folds(data, "random", (0.8, 0.1, 0.1), 3, 7) == folds
    assert make_folds(data, "random", (0.8, 0.1, 0.1), 1, 8)["folds"][0]["test"] == folds["folds"][1]["test"]


def test_bad_options(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    with pytest.raises(SertkError, match="expected one of loso-session, loso-speaker, random"):
        make_folds(data, "loso")
    with pytest.raises(SertkError, match="summing to 1"):
        make_folds(data, "random", ratios=(0.5, 0.25, 0.2))
    with pytest.raises(SertkError, match="--repeats 0"):
        make_folds(data, "random", repeats=0)


def test_write_read_round_trip_and_invariants(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    folds = make_folds(data, "loso-speaker")
    path = tmp_path / "folds.json"
    write_folds(path, folds, data)
    assert read_folds(path, data) == folds == json.loads(path.read_text())
    leaky = json.loads(json.dumps(folds))
    leaky["folds"][0]["valid"].append(leaky["folds"][0]["test"][0])
    with pytest.raises(SertkError, match="fold1: utterance Ses01F_impro01_F000 is in both valid and test"):
        write_folds(tmp_path / "bad.json", leaky, data)
    assert not (tmp_path / "bad.json").exists()
    mixed = json.loads(json.dumps(folds))
    moved = mixed["folds"][0]["test"].pop()
    mixed["folds"][0]["train"].append(moved)
    with pytest.raises(SertkError, match="speaker Ses01F is in both"):
        write_folds(tmp_path / "bad.json", mixed, data)
    unknown = json.loads(json.dumps(folds))
    unknown["folds"][0]["test"].append("Ses09F_x_F000")
    with pytest.raises(SertkError, match="1 ids not in"):
        write_folds(tmp_path / "bad.json", unknown, data)


def test_read_folds_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="cannot read folds"):
        read_folds(tmp_path / "missing.json")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(SertkError, match="a.json: invalid JSON"):
        read_folds(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"protocol": "kfold", "folds": []}')
    with pytest.raises(SertkError, match="unknown protocol 'kfold'"):
        read_folds(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"protocol": "random", "folds": [{"name": "fold1", "train": ["a"]}]}')
    with pytest.raises(SertkError, match="fold1.valid must be a list"):
        read_folds(tmp_path / "c.json")


def test_select_folds(tmp_path: Path) -> None:
    folds = make_folds(make_data(tmp_path), "loso-session")
    assert [f["name"] for f in select_folds(folds, "all")] == [f"fold{i}" for i in range(1, 6)]
    assert [f["name"] for f in select_folds(folds, "1 3")] == ["fold1", "fold3"]
    assert [f["name"] for f in select_folds(folds, "fold2,4")] == ["fold2", "fold4"]
    with pytest.raises(SertkError, match="no fold fold7 .available: fold1 fold2 fold3 fold4 fold5"):
        select_folds(folds, "7")
