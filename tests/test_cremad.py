"""CREMA-D prep on a hand-written tree: names, demographics, voice-only votes, git-lfs stubs."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import CREMAD_BAD, make_cremad

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
