"""Folds: every protocol's parts as its paper defines them, on small hand-made and full-size IEMOCAP plans."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sertk.corpora.synthetic import plan_corpus
from sertk.data import DataDir, write_data_dir
from sertk.data.folds import (
    PROTOCOLS,
    FoldOptions,
    folds_record,
    make_folds,
    read_folds,
    select_folds,
    write_folds,
)
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


@pytest.fixture(scope="module")
def full_plan(tmp_path_factory) -> dict[str, DataDir]:
    """Data dirs of the full-size synthetic label plan (IEMOCAP's published counts), without audio."""
    plans = plan_corpus("full", seed=0)
    out = {}
    for name, style, class_map in (
        ("hapexc", "all", {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}),
        ("impro", "impro", {"neu": "neu", "hap": "hap", "ang": "ang", "sad": "sad"}),
    ):
        kept = [p for p in plans if p.label in class_map and (style == "all" or p.style == style)]
        tables = {
            "wav.scp": {p.utt: f"/x/{p.utt}.wav" for p in kept},
            "utt2spk": {p.utt: p.speaker for p in kept},
            "utt2emo": {p.utt: class_map[p.label] for p in kept},
            "utt2session": {p.utt: f"Session{p.session}" for p in kept},
        }
        root = tmp_path_factory.mktemp(name)
        out[name] = write_data_dir(root / "data", tables, {"classes": CLASSES})
    return out


def parts_of(fold: dict) -> list[set[str]]:
    return [set(fold[p]) for p in ("train", "valid", "test")]


def speakers(data: DataDir, utts) -> set[str]:
    return {data["utt2spk"][u] for u in utts}


def sessions(data: DataDir, utts) -> set[str]:
    return {data["utt2session"][u] for u in utts}


def assert_partition_of_each_fold(folds: dict, data: DataDir) -> None:
    for fold in folds["folds"]:
        parts = parts_of(fold)
        assert sum(map(len, parts)) == len(set.union(*parts)) == len(data.utts)


def test_every_protocol_has_a_help_line():
    assert set(PROTOCOLS) == {
        "loso-session",
        "loso-session-nextval",
        "loso-speaker",
        "loso-speaker-noval",
        "loso-speaker-nextval",
        "speaker-kfold",
        "kfold",
        "random",
        "official",
    }
    assert all(line for _, line, _ in PROTOCOLS.values())


def test_loso_session_trains_on_all_four_other_sessions(full_plan):
    data = full_plan["hapexc"]
    folds = make_folds(data, "loso-session")
    assert folds["protocol"] == "loso-session" and folds["valid_ratio"] == 0.1
    assert [f["name"] for f in folds["folds"]] == [f"fold{i}" for i in range(1, 6)]
    per_session = Counter(data["utt2session"].values())
    assert [len(f["test"]) for f in folds["folds"]] == [per_session[f"Session{k}"] for k in range(1, 6)]
    assert len(data.utts) == 5531
    for k, fold in enumerate(folds["folds"], 1):
        train, valid, test = parts_of(fold)
        assert sessions(data, test) == {f"Session{k}"}
        assert (
            sessions(data, train)
            == sessions(data, valid)
            == {f"Session{s}" for s in range(1, 6)} - {f"Session{k}"}
        )
        assert len(speakers(data, train)) == 8 and not speakers(data, test) & speakers(data, train | valid)
        rest = 5531 - len(test)
        assert abs(len(valid) - 0.1 * rest) <= 4  # class-stratified rounding
        emo = data["utt2emo"]
        share = Counter(emo[u] for u in valid)
        full = Counter(emo[u] for u in train | valid)
        assert all(abs(share[c] - round(0.1 * full[c])) <= 1 for c in CLASSES)
    assert_partition_of_each_fold(folds, data)
    assert Counter(u for f in folds["folds"] for u in f["test"]) == Counter(data.utts)


def test_loso_session_nextval_validates_on_the_next_session(full_plan):
    data = full_plan["hapexc"]
    folds = make_folds(data, "loso-session-nextval")
    for k, fold in enumerate(folds["folds"], 1):
        train, valid, test = parts_of(fold)
        assert sessions(data, valid) == {f"Session{k % 5 + 1}"} and len(sessions(data, train)) == 3
        assert len(speakers(data, train)) == 6
    assert folds["folds"][4]["valid_speakers"] == ["Ses01F", "Ses01M"]


def test_loso_speaker_noval_trains_nine_speakers_tests_one(full_plan):
    data = full_plan["impro"]
    assert len(data.utts) == 2280
    folds = make_folds(data, "loso-speaker-noval")
    assert len(folds["folds"]) == 10
    for fold in folds["folds"]:
        train, valid, test = parts_of(fold)
        assert not valid and len(speakers(data, test)) == 1 and len(speakers(data, train)) == 9
        assert fold["test_speakers"] == sorted(speakers(data, test))
    assert [f["test_speakers"] for f in folds["folds"]][:3] == [["Ses01F"], ["Ses01M"], ["Ses02F"]]
    assert Counter(u for f in folds["folds"] for u in f["test"]) == Counter(data.utts)


def test_loso_speaker_validates_on_the_session_partner(full_plan):
    data = full_plan["impro"]
    folds = make_folds(data, "loso-speaker")
    for fold in folds["folds"]:
        train, valid, test = parts_of(fold)
        (test_spk,) = speakers(data, test)
        (valid_spk,) = speakers(data, valid)
        assert test_spk[:5] == valid_spk[:5] and test_spk != valid_spk and len(speakers(data, train)) == 8


@pytest.mark.parametrize("ratios, k", [((0.55, 0.25, 0.2), 5), ((0.8, 0.1, 0.1), 10)])
def test_kfold_is_a_stratified_partition(full_plan, ratios, k):
    data = full_plan["hapexc"]
    folds = make_folds(data, "kfold", FoldOptions(ratios=ratios, repeats=k))
    assert len(folds["folds"]) == k and folds["ratios"] == list(ratios)
    tests = [set(f["test"]) for f in folds["folds"]]
    assert Counter(u for t in tests for u in t) == Counter(data.utts)  # disjoint, covering the corpus once
    emo = data["utt2emo"]
    total = Counter(emo.values())
    for fold in folds["folds"]:
        train, valid, test = parts_of(fold)
        for c in CLASSES:
            assert abs(sum(emo[u] == c for u in test) - total[c] / k) <= 1
            assert abs(sum(emo[u] == c for u in valid) - ratios[1] * total[c]) <= 2
        assert abs(len(train) - ratios[0] * 5531) <= 10
    assert_partition_of_each_fold(folds, data)


def test_kfold_needs_matching_ratio_and_fold_count(tmp_path):
    with pytest.raises(SertkError, match="test ratio of 1/4"):
        make_folds(make_data(tmp_path), "kfold", FoldOptions(ratios=(0.55, 0.25, 0.2), repeats=4))


def test_random_splits_overlap_and_are_stratified(tmp_path: Path) -> None:
    data = make_data(tmp_path, per_speaker=20)  # 200 utterances, 50 per class
    folds = make_folds(data, "random", FoldOptions(ratios=(0.8, 0.1, 0.1), repeats=3, seed=7))
    assert (folds["seed"], folds["ratios"], folds["repeats"]) == (7, [0.8, 0.1, 0.1], 3)
    emo = data["utt2emo"]
    for fold in folds["folds"]:
        for part, n in (("train", 40), ("valid", 5), ("test", 5)):
            assert Counter(emo[u] for u in fold[part]) == {c: n for c in CLASSES}
    tests = [set(f["test"]) for f in folds["folds"]]
    assert tests[0] != tests[1] != tests[2]
    assert make_folds(data, "random", FoldOptions((0.8, 0.1, 0.1), 3, seed=7)) == folds


def test_tiny_synthetic_corpus_has_every_fold_of_every_protocol(tmp_path):
    plans = plan_corpus("tiny", seed=0)
    class_map = {"neu": "neu", "hap": "hap", "ang": "ang", "sad": "sad"}
    kept = [p for p in plans if p.label in class_map and p.style == "impro"]
    tables = {
        "wav.scp": {p.utt: "/x" for p in kept},
        "utt2spk": {p.utt: p.speaker for p in kept},
        "utt2emo": {p.utt: class_map[p.label] for p in kept},
        "utt2session": {p.utt: f"Session{p.session}" for p in kept},
    }
    data = write_data_dir(tmp_path / "tiny", tables, {"classes": CLASSES})
    assert len(make_folds(data, "loso-speaker-noval")["folds"]) == 10
    assert len(make_folds(data, "loso-speaker")["folds"]) == 10
    assert len(make_folds(data, "loso-session")["folds"]) == 5


def test_subset_gives_folds_for_what_exists(tmp_path: Path) -> None:
    data = make_data(tmp_path, sessions=(1, 2, 4, 5))
    folds = make_folds(data, "loso-session-nextval")
    assert [f["name"] for f in folds["folds"]] == ["fold1", "fold2", "fold4", "fold5"]
    assert folds["folds"][1]["valid_speakers"] == ["Ses04F", "Ses04M"]
    assert "4 folds" in folds["notes"][0]
    tables = {
        k: {u: v for u, v in t.items() if not u.startswith("Ses04F_impro01_M")}
        for k, t in data.tables.items()
    }
    subset = write_data_dir(tmp_path / "sub", tables, data.meta)
    folds = make_folds(subset, "loso-speaker")
    assert len(folds["folds"]) == 6
    assert any("Ses04F has no session partner" in n for n in folds["notes"])
    with pytest.raises(SertkError, match="at least 3 sessions"):
        make_folds(make_data(tmp_path / "two", sessions=(1, 2)), "loso-session")


def test_bad_options(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    with pytest.raises(SertkError, match="expected one of loso-session, loso-session-nextval"):
        make_folds(data, "loso")
    with pytest.raises(SertkError, match="summing to 1"):
        make_folds(data, "random", FoldOptions(ratios=(0.5, 0.25, 0.2)))
    with pytest.raises(SertkError, match="--repeats 0"):
        make_folds(data, "random", FoldOptions(repeats=0))
    no_sessions = write_data_dir(
        tmp_path / "nosess", {k: v for k, v in data.tables.items() if k != "utt2session"}, data.meta
    )
    with pytest.raises(SertkError, match="no utt2session"):
        make_folds(no_sessions, "loso-session")


def test_random_split_rounds_each_class_s_cumulative_cuts(tmp_path: Path) -> None:
    # 8 neu, 8 hap, 6 ang, 6 sad; ratios 0.55 / 0.25 / 0.2 cut a class of n at round(0.55 n) and
    # round(0.8 n): n = 8 -> 4.4, 6.4 -> 4 / 2 / 2; n = 6 -> 3.3, 4.8 -> 3 / 2 / 1 (floor would give 3 / 1 / 2).
    data = make_data(tmp_path, sessions=(1,), per_speaker=14)
    folds = make_folds(data, "random", FoldOptions(ratios=(0.55, 0.25, 0.2), repeats=2, seed=3))
    emo = data["utt2emo"]
    expected = {"train": (4, 4, 3, 3), "valid": (2, 2, 2, 2), "test": (2, 2, 1, 1)}
    for fold in folds["folds"]:
        for part, counts in expected.items():
            assert Counter(emo[u] for u in fold[part]) == dict(zip(CLASSES, counts, strict=True)), part


def test_the_folds_record_covers_every_option(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    base = FoldOptions(ratios=(0.8, 0.1, 0.1), repeats=5, seed=0)
    key = folds_record(data, "random", base).key
    changed = [
        ("kfold", base),
        ("random", FoldOptions(ratios=(0.7, 0.2, 0.1), repeats=5, seed=0)),
        ("random", FoldOptions(ratios=(0.8, 0.1, 0.1), repeats=4, seed=0)),
        ("random", FoldOptions(ratios=(0.8, 0.1, 0.1), repeats=5, seed=1)),
        ("random", FoldOptions(ratios=(0.8, 0.1, 0.1), repeats=5, seed=0, valid_ratio=0.3)),
        ("random", FoldOptions(ratios=(0.8, 0.1, 0.1), repeats=5, seed=0, test_partitions=("Test2",))),
    ]
    assert all(folds_record(data, protocol, opts).key != key for protocol, opts in changed)


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
    mixed["folds"][0]["train"].append(mixed["folds"][0]["test"].pop())
    with pytest.raises(SertkError, match="test speaker Ses01F is also in train"):
        write_folds(tmp_path / "bad.json", mixed, data)
    in_valid = json.loads(json.dumps(folds))
    in_valid["folds"][0]["valid"].append(in_valid["folds"][0]["test"].pop())
    with pytest.raises(SertkError, match="test speaker Ses01F is also in valid"):
        write_folds(tmp_path / "bad.json", in_valid, data)
    unknown = json.loads(json.dumps(folds))
    unknown["folds"][0]["test"].append("Ses09F_x_F000")
    with pytest.raises(SertkError, match="1 ids not in"):
        write_folds(tmp_path / "bad.json", unknown, data)
    (tmp_path / "adir").mkdir()
    with pytest.raises(SertkError, match="is a directory"):
        write_folds(tmp_path / "adir", folds, data)


def test_read_folds_bad_files(tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="cannot read folds"):
        read_folds(tmp_path / "missing.json")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(SertkError, match="a.json: invalid JSON"):
        read_folds(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"folds": []}')
    with pytest.raises(SertkError, match="no protocol name"):
        read_folds(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"protocol": "random", "folds": [{"name": "fold1", "train": ["a"]}]}')
    with pytest.raises(SertkError, match="fold1.valid must be a list"):
        read_folds(tmp_path / "c.json")
    with pytest.raises(SertkError, match="is a directory"):
        read_folds(tmp_path)


def test_select_folds(tmp_path: Path) -> None:
    folds = make_folds(make_data(tmp_path), "loso-session")
    assert [f["name"] for f in select_folds(folds, "all")] == [f"fold{i}" for i in range(1, 6)]
    assert [f["name"] for f in select_folds(folds, "1 3")] == ["fold1", "fold3"]
    assert [f["name"] for f in select_folds(folds, "fold2,4")] == ["fold2", "fold4"]
    with pytest.raises(SertkError, match="no fold fold7 .available: fold1 fold2 fold3 fold4 fold5"):
        select_folds(folds, "7")


def test_cli_protocol_choices_are_the_registered_protocols():
    import typing

    from sertk.cli import Protocol

    assert set(typing.get_args(Protocol)) == set(PROTOCOLS)


def test_corpus_protocols_through_make_folds(tmp_path):
    """EmoDB-like speakers without sessions: leave one speaker out with the next as validation; groups."""
    tables: dict[str, dict[str, str]] = {n: {} for n in ("wav.scp", "utt2spk", "utt2emo", "utt2gender")}
    for k in range(6):
        for i in range(8):
            utt = f"emodb{k:02d}-{i:03d}"
            tables["wav.scp"][utt] = "/x"
            tables["utt2spk"][utt] = f"emodb{k:02d}"
            tables["utt2emo"][utt] = CLASSES[i % 4]
            tables["utt2gender"][utt] = "FM"[k % 2]
    data = write_data_dir(tmp_path / "emodb", tables, {"classes": CLASSES, "corpus": "EmoDB"})
    folds = make_folds(data, "loso-speaker-nextval")
    assert len(folds["folds"]) == 6
    for k, fold in enumerate(folds["folds"]):
        train, valid, test = parts_of(fold)
        assert speakers(data, test) == {f"emodb{k:02d}"} and speakers(data, valid) == {
            f"emodb{(k + 1) % 6:02d}"
        }
    groups = make_folds(data, "speaker-kfold", FoldOptions(repeats=3))
    assert Counter(u for f in groups["folds"] for u in f["test"]) == Counter(data.utts)
    for fold in groups["folds"]:
        train, valid, test = parts_of(fold)
        assert len(speakers(data, test)) == 2 and not speakers(data, test) & speakers(data, train | valid)
    with pytest.raises(SertkError, match="no utt2session"):
        make_folds(data, "loso-session")


def test_loso_session_validation_is_a_rounded_per_class_share_drawn_from_the_seed(tmp_path: Path) -> None:
    # 7 utterances per speaker, classes cycling: per session neu 4, hap 4, ang 4, sad 2; the 4 training
    # sessions hold 16, 16, 16, 8, so a 0.1 share rounds per class to 2, 2, 2, 1 (truncating: 1, 1, 1, 0).
    data = make_data(tmp_path, per_speaker=7)
    folds = make_folds(data, "loso-session", FoldOptions(valid_ratio=0.1, seed=0))["folds"]
    for fold in folds:
        assert sorted(Counter(data["utt2emo"][u] for u in fold["valid"]).values()) == [1, 2, 2, 2]

    def valid_parts(seed):
        return [f["valid"] for f in make_folds(data, "loso-session", FoldOptions(seed=seed))["folds"]]

    assert valid_parts(0) == valid_parts(0) != valid_parts(1)


def _table_data(tmp_path: Path, rows: list[tuple[str, str, str]]) -> DataDir:
    """A data dir from (utt, speaker, session) rows, classes cycling over CLASSES."""
    tables: dict[str, dict[str, str]] = {n: {} for n in ("wav.scp", "utt2spk", "utt2emo", "utt2session")}
    for i, (utt, spk, session) in enumerate(rows):
        tables["wav.scp"][utt] = "/x"
        tables["utt2spk"][utt] = spk
        tables["utt2emo"][utt] = CLASSES[i % 4]
        tables["utt2session"][utt] = session
    return write_data_dir(tmp_path / "data", tables, {"classes": CLASSES})


def test_sessions_are_ordered_by_number_so_session10_follows_session3(tmp_path: Path) -> None:
    # Natural order 1, 2, 3, 10 (byte order would be 1, 10, 2, 3): the next session of Session1 is Session2
    # and Session10's next wraps round to Session1.
    rows = [
        (f"s{n:02d}{g}{i}", f"spk{n}{g}", f"Session{n}")
        for n in (1, 2, 3, 10)
        for g in "FM"
        for i in range(4)
    ]
    folds = make_folds(_table_data(tmp_path, rows), "loso-session-nextval")["folds"]
    assert [f["name"] for f in folds] == ["fold1", "fold2", "fold3", "fold10"]
    assert [f["valid_speakers"] for f in folds] == [
        ["spk2F", "spk2M"],
        ["spk3F", "spk3M"],
        ["spk10F", "spk10M"],
        ["spk1F", "spk1M"],
    ]


def test_speaker_folds_are_numbered_by_session_then_speaker(tmp_path: Path) -> None:
    # Speaker ids that do not sort with their sessions: zed is in Session1, amy in Session2.
    rows = [
        (f"u{spk}{i}", spk, session)
        for spk, session in (("zed", "Session1"), ("amy", "Session2"))
        for i in range(4)
    ]
    rows += [(f"ubob{i}", "bob", "Session3") for i in range(4)]
    folds = make_folds(_table_data(tmp_path, rows), "loso-speaker-noval")["folds"]
    assert [f["test_speakers"] for f in folds] == [["zed"], ["amy"], ["bob"]]


def test_kfold_rotates_which_part_gets_a_class_remainder(tmp_path: Path) -> None:
    # 3 sessions x 2 speakers x 4 utterances: 6 utterances of each class for k = 5, one over 5 per class.
    # Dealing every class from part 1 would give fold1 all four remainders (8 tests, the others 4).
    data = make_data(tmp_path, sessions=(1, 2, 3), per_speaker=4)
    fold1_sizes = set()
    for seed in range(4):
        folds = make_folds(data, "kfold", FoldOptions(ratios=(0.6, 0.2, 0.2), repeats=5, seed=seed))["folds"]
        sizes = [len(f["test"]) for f in folds]
        assert sum(sizes) == 24 and min(sizes) >= 4
        fold1_sizes.add(sizes[0])
    assert fold1_sizes != {8}


def test_random_splits_give_valid_and_test_their_own_ratios(tmp_path: Path) -> None:
    data = make_data(tmp_path, per_speaker=20)  # 50 utterances per class
    (fold,) = make_folds(data, "random", FoldOptions(ratios=(0.5, 0.3, 0.2), repeats=1))["folds"]
    emo = data["utt2emo"]
    for part, n in (("train", 25), ("valid", 15), ("test", 10)):
        assert Counter(emo[u] for u in fold[part]) == {c: n for c in CLASSES}


def test_a_zero_test_ratio_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="train and test ratios must be > 0"):
        make_folds(make_data(tmp_path), "random", FoldOptions(ratios=(0.9, 0.1, 0.0)))


def test_a_fold_with_an_empty_test_part_is_refused(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    folds = make_folds(data, "loso-session")
    folds["folds"][0]["train"] += folds["folds"][0]["test"]
    folds["folds"][0]["test"] = []
    with pytest.raises(SertkError, match="fold1.test is empty"):
        write_folds(tmp_path / "f.json", folds, data)


def test_rewriting_folds_withdraws_their_old_record(tmp_path: Path) -> None:
    from sertk.provenance import record_path

    data = make_data(tmp_path)
    path = tmp_path / "folds.json"
    write_folds(
        path, make_folds(data, "loso-session"), data, folds_record(data, "loso-session", FoldOptions())
    )
    assert record_path(path).is_file()
    write_folds(path, make_folds(data, "loso-session-nextval"), data)
    assert not record_path(path).exists()


def test_select_folds_names_each_fold_once(tmp_path: Path) -> None:
    folds = make_folds(make_data(tmp_path), "loso-session")
    assert [f["name"] for f in select_folds(folds, "2 fold2,2 1")] == ["fold2", "fold1"]
