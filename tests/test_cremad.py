"""CREMA-D prep on a hand-written tree: names, demographics, voice-only votes, git-lfs stubs."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import CREMAD_BAD, make_cremad, write_votes, write_wav

from sertk.corpora.common import MAX_CONSOLE_PROBLEMS, Candidate, PrepReport, build_tables, print_outcome
from sertk.corpora.cremad import parse_name, prepare_cremad
from sertk.data import read_data_dir, validate_data_dir


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_cremad(tmp_path / "CREMA-D")


def test_file_name_fields() -> None:
    fields, _ = parse_name(Path("AudioWAV/1001_DFA_ANG_XX.wav"))
    assert fields == {"actor": "1001", "sentence": "DFA", "emotion": "ANG", "level": "XX"}
    for stem, why in CREMAD_BAD.items():
        assert why in parse_name(Path(f"{stem}.wav"))[1]


def test_prep_counts_sex_text_and_votes(tree: Path, tmp_path: Path) -> None:
    report = prepare_cremad(tree, tmp_path / "d")
    # 10 wavs: 4 kept, dis and fea filtered, 3 bad names, 1 git-lfs stub.
    assert (report.total, report.kept, report.filtered, report.skipped) == (10, 4, 2, 4)
    assert report.class_counts == {"neu": 1, "hap": 1, "ang": 1, "sad": 1}
    assert any(
        "1002_IEO_ANG_HI.wav: cremad1002-1002_IEO_ANG_HI: wav is a git-lfs pointer" in p
        for p in report.problems
    )
    data = read_data_dir(tmp_path / "d")
    assert data["utt2spk"]["cremad1001-1001_DFA_ANG_XX"] == "cremad1001"
    assert data["utt2gender"] == {
        "cremad1001-1001_DFA_ANG_XX": "M",
        "cremad1001-1001_IEO_HAP_HI": "M",
        "cremad1002-1002_MTI_SAD_LO": "F",
        "cremad1002-1002_TIE_NEU_XX": "F",
    }
    assert data["text"]["cremad1002-1002_TIE_NEU_XX"] == "That is exactly what happened"
    assert data["text"]["cremad1001-1001_DFA_ANG_XX"] == "Don't forget a jacket"
    # Voice-only rows only (index 1xxxxx): the face and audio-visual rows of the same clips differ.
    assert data["utt2votes"]["cremad1001-1001_DFA_ANG_XX"] == "ang ang ang ang ang dis neu neu"
    assert data["utt2votes"]["cremad1001-1001_IEO_HAP_HI"] == "hap hap hap neu neu"
    assert data["utt2votes"]["cremad1002-1002_MTI_SAD_LO"] == "neu sad sad sad sad"
    assert data["utt2votes"]["cremad1002-1002_TIE_NEU_XX"] == ""
    assert "1 kept clips have no voice-only row in tabulatedVotes.csv (empty utt2votes)" in report.notes
    validate_data_dir(tmp_path / "d")


def test_all_six_emotions_and_missing_demographics(tree: Path, tmp_path: Path) -> None:
    (tree / "VideoDemographics.csv").unlink()
    (tree / "processedResults" / "tabulatedVotes.csv").unlink()
    report = prepare_cremad(tree, tmp_path / "d", classes="neu,hap,ang,sad,dis,fea")
    assert report.class_counts == {"neu": 1, "hap": 1, "ang": 1, "sad": 1, "dis": 1, "fea": 1}
    data = read_data_dir(tmp_path / "d")
    assert set(data["utt2gender"].values()) == {"U"} and "utt2votes" not in data.tables
    assert data["utt2emo"]["cremad1091-1091_WSI_FEA_XX"] == "fea"
    assert "4 actors have no sex in VideoDemographics.csv (utt2gender U)" in report.notes


def test_a_name_must_be_the_whole_naming() -> None:
    # Four-digit actor, a level among LO MD HI XX, nothing after it.
    for stem in ("101_DFA_ANG_XX", "10011_DFA_ANG_XX", "1001_DFA_ANG_ZZ", "1001_DFA_ANG_XX_copy"):
        fields, reason = parse_name(Path(f"AudioWAV/{stem}.wav"))
        assert fields is None and reason.startswith("file name is not CREMA-D's"), stem


def test_every_sentence_has_its_documented_text(tmp_path: Path) -> None:
    # The 12 sentences of the CREMA-D documentation.
    documented = {
        "IEO": "It's eleven o'clock",
        "TIE": "That is exactly what happened",
        "IOM": "I'm on my way to the meeting",
        "IWW": "I wonder what this is about",
        "TAI": "The airplane is almost full",
        "MTI": "Maybe tomorrow it will be cold",
        "IWL": "I would like a new alarm clock",
        "ITH": "I think I have a doctor's appointment",
        "DFA": "Don't forget a jacket",
        "ITS": "I think I've seen this before",
        "TSI": "The surface is slick",
        "WSI": "We'll stop in a couple of minutes",
    }
    for code in documented:
        write_wav(tmp_path / "cremad" / "AudioWAV" / f"1001_{code}_NEU_XX.wav")
    prepare_cremad(tmp_path / "cremad", tmp_path / "d")
    text = read_data_dir(tmp_path / "d")["text"]
    assert text == {f"cremad1001-1001_{code}_NEU_XX": sentence for code, sentence in documented.items()}


def test_votes_take_the_first_voice_only_row_and_note_bad_rows(tree: Path, tmp_path: Path) -> None:
    rows = (
        (100001, (5, 1, 0, 0, 2, 0), "1001_DFA_ANG_XX"),
        (100001, (0, 0, 0, 0, 9, 0), "1001_DFA_ANG_XX"),  # the same clip again: the first row counts
        (100002, (0, 0, 0, 3, 2, 0), "1001_IEO_HAP_HI"),
    )
    votes = tree / "processedResults" / "tabulatedVotes.csv"
    write_votes(votes, rows)
    # Line 5 (header, 3 rows, then this): a count that is not an integer; the row is ignored.
    with open(votes, "a") as f:
        f.write(f'"100004",0,0,0,0,1,x,"1002_MTI_SAD_LO",5,0.8,"S",{",".join(["50"] * 16)}\n')
    report = prepare_cremad(tree, tmp_path / "d")
    data = read_data_dir(tmp_path / "d")
    assert data["utt2votes"]["cremad1001-1001_DFA_ANG_XX"] == "ang ang ang ang ang dis neu neu"
    assert data["utt2votes"]["cremad1002-1002_MTI_SAD_LO"] == ""
    assert (
        f"1 rows of tabulatedVotes.csv have no row index or non-integer counts, ignored (first {votes}:5)"
        in report.notes
    )
    # Kept without a voice-only row: 1002_TIE_NEU_XX and 1002_MTI_SAD_LO.
    assert "2 kept clips have no voice-only row in tabulatedVotes.csv (empty utt2votes)" in report.notes


def test_votes_without_any_voice_only_row_are_an_empty_table(tree: Path, tmp_path: Path) -> None:
    # Face-only (2xxxxx) and audio-visual (3xxxxx) rows: not what the models hear.
    write_votes(
        tree / "processedResults" / "tabulatedVotes.csv",
        ((200001, (9, 0, 0, 0, 0, 0), "1001_DFA_ANG_XX"), (300002, (0, 0, 0, 5, 0, 0), "1001_IEO_HAP_HI")),
    )
    report = prepare_cremad(tree, tmp_path / "d")
    data = read_data_dir(tmp_path / "d")
    assert data["utt2votes"] == dict.fromkeys(data.utts, "")
    assert "4 kept clips have no voice-only row in tabulatedVotes.csv (empty utt2votes)" in report.notes


def test_a_changed_votes_file_redoes_the_prep(tree: Path, tmp_path: Path) -> None:
    prepare_cremad(tree, tmp_path / "d")
    write_votes(
        tree / "processedResults" / "tabulatedVotes.csv", ((100001, (0, 0, 0, 0, 8, 0), "1001_DFA_ANG_XX"),)
    )
    report = prepare_cremad(tree, tmp_path / "d")
    assert not report.up_to_date
    assert read_data_dir(tmp_path / "d")["utt2votes"]["cremad1001-1001_DFA_ANG_XX"] == " ".join(["neu"] * 8)


def test_build_tables_reports_duplicate_ids_and_fills_optional_tables(tmp_path: Path) -> None:
    first, stereo, again = (tmp_path / f"{n}.wav" for n in ("first", "stereo", "again"))
    write_wav(first)
    write_wav(stereo, channels=2)
    write_wav(again)
    candidates = [
        Candidate("s1-a", first, "s1", "M", "neu", where="labels:2", text="hello"),
        Candidate("s1-b", stereo, "s1", "M", "hap", where="labels:3"),
        Candidate("s1-a", again, "s1", "M", "neu", where="labels:4", text="again"),
    ]
    report = PrepReport(out=tmp_path / "d", total=3)
    tables = build_tables(report, candidates, {"neu": "neu", "hap": "hap"})
    # The second s1-a is one problem; the first one's wav is kept.
    assert report.problems == ["labels:4: s1-a: duplicate utterance id (first in labels:2)"]
    assert report.skipped == 1 and tables["wav.scp"] == {"s1-a": str(first), "s1-b": str(stereo)}
    # One kept candidate has a text, so the table is written, the other's empty; nobody has votes.
    assert tables["text"] == {"s1-a": "hello", "s1-b": ""} and "utt2votes" not in tables
    # 16 kHz but two channels: still a wav later stages must downmix.
    assert report.notes == ["1 wavs are stereo or not 16 kHz: later stages downmix/resample"]


@pytest.mark.parametrize("count", [MAX_CONSOLE_PROBLEMS, MAX_CONSOLE_PROBLEMS + 1])
def test_the_first_problems_are_printed_then_a_count(count: int, tmp_path: Path, capsys) -> None:
    report = PrepReport(out=tmp_path)
    for n in range(count):
        report.problem(f"problem {n}")
    print_outcome(report)
    lines = capsys.readouterr().err.splitlines()
    # Exactly MAX_CONSOLE_PROBLEMS (200) printed; the 201st only counted.
    shown = [f"problem {n}" for n in range(MAX_CONSOLE_PROBLEMS)]
    more = ["... and 1 more problems"] if count > MAX_CONSOLE_PROBLEMS else []
    assert lines == shown + more and report.skipped == count


def test_a_sex_that_is_neither_male_nor_female_is_unknown(tree: Path, tmp_path: Path) -> None:
    demographics = tree / "VideoDemographics.csv"
    demographics.write_text(demographics.read_text().replace('1002,21,"Female"', '1002,21,""'))
    report = prepare_cremad(tree, tmp_path / "d")
    gender = read_data_dir(tmp_path / "d")["utt2gender"]
    assert gender["cremad1002-1002_TIE_NEU_XX"] == "U" and gender["cremad1001-1001_DFA_ANG_XX"] == "M"
    assert "1 actors have no sex in VideoDemographics.csv (utt2gender U)" in report.notes
