"""RAVDESS prep on a hand-written tree: the seven name fields, calm, song, video and actor checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import make_ravdess

from sertk.corpora.ravdess import parse_name, prepare_ravdess
from sertk.data import read_data_dir
from sertk.errors import SertkError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_ravdess(tmp_path / "ravdess")


def test_file_name_fields() -> None:
    fields, _ = parse_name(Path("Actor_12/03-01-05-01-02-01-12.wav"))
    assert fields == {
        "modality": "03",
        "channel": "01",
        "emotion": "05",
        "intensity": "01",
        "statement": "02",
        "repetition": "01",
        "actor": "12",
    }
    assert "not the folder's (Actor_12)" in parse_name(Path("Actor_12/03-01-05-01-02-01-11.wav"))[1]


def test_prep_keeps_audio_only_speech(tree: Path, tmp_path: Path) -> None:
    report = prepare_ravdess(tree, tmp_path / "d")
    # 10 wavs: 5 kept; calm (class), song and audio-visual (options) filtered; 2 bad names.
    assert (report.total, report.kept, report.filtered, report.skipped) == (10, 5, 3, 2)
    assert report.class_counts == {"neu": 1, "hap": 1, "ang": 2, "sad": 1}
    assert "1 non-wav files (video clips) in the Actor_XX folders were ignored" in report.notes
    assert any("song; --include-song keeps it" in n for n in report.notes)
    assert "5 wavs are stereo or not 16 kHz: later stages downmix/resample" in report.notes
    data = read_data_dir(tmp_path / "d")
    assert data.utts == [
        "ravdess01-03-01-01-01-01-01-01",
        "ravdess01-03-01-05-02-02-01-01",
        "ravdess02-03-01-03-01-01-02-02",
        "ravdess02-03-01-04-02-01-01-02",
        "ravdess12-03-01-05-01-02-01-12",
    ]
    assert data["utt2emo"]["ravdess02-03-01-04-02-01-01-02"] == "sad"
    assert data["utt2gender"] == {u: "M" if u.startswith("ravdess01") else "F" for u in data.utts}
    assert data["utt2spk"]["ravdess12-03-01-05-01-02-01-12"] == "ravdess12"
    assert data["text"]["ravdess01-03-01-05-02-02-01-01"] == "Dogs are sitting by the door"
    assert data["text"]["ravdess01-03-01-01-01-01-01-01"] == "Kids are talking by the door"
    assert set(data["utt2style"].values()) == {"speech"}


def test_calm_is_not_neutral_and_song_is_optional(tree: Path, tmp_path: Path) -> None:
    report = prepare_ravdess(tree, tmp_path / "d", classes="neu,cal,hap,ang,sad", include_song=True)
    assert report.class_counts == {"neu": 1, "cal": 1, "hap": 2, "ang": 2, "sad": 1}
    data = read_data_dir(tmp_path / "d")
    assert data["utt2emo"]["ravdess01-03-01-02-01-01-01-01"] == "cal"
    assert data["utt2style"]["ravdess02-03-02-03-01-01-01-02"] == "song"
    assert data.meta["include_song"] is True
    merged = prepare_ravdess(tree, tmp_path / "m", classes="neu+cal,hap,ang,sad")
    assert merged.class_counts["neu"] == 2


def test_not_a_ravdess_tree(tmp_path: Path) -> None:
    make_ravdess(tmp_path / "zip" / "Audio_Speech_Actors_01-24")
    with pytest.raises(
        SertkError, match="no Actor_01 ... Actor_24 folders .did you mean .*Audio_Speech_Actors"
    ):
        prepare_ravdess(tmp_path / "zip", tmp_path / "d")
    with pytest.raises(SertkError, match="RAVDESS root not found"):
        prepare_ravdess(tmp_path / "nope", tmp_path / "d")
