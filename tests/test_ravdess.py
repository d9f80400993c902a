"""RAVDESS prep on a hand-written tree: the seven name fields, calm, song, video and actor checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import make_ravdess, write_wav

from sertk.corpora import prepare
from sertk.corpora.ravdess import parse_name, prepare_ravdess
from sertk.data import read_data_dir
from sertk.errors import SertkError
from sertk.provenance import read_record, record_path


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


def test_fields_outside_the_documented_codes_are_not_ravdess() -> None:
    # Modality 01-03, channel 01-02, intensity 01-02, statement 01-02, repetition 01-02.
    for stem in (
        "04-01-05-01-02-01-12",
        "03-03-05-01-02-01-12",
        "03-01-05-03-02-01-12",
        "03-01-05-01-03-01-12",
        "03-01-05-01-02-03-12",
        "03-01-05-01-02-01-12-copy",
    ):
        fields, reason = parse_name(Path(f"Actor_12/{stem}.wav"))
        assert fields is None and reason.startswith("file name is not RAVDESS's"), stem


def test_every_emotion_code_has_its_documented_label(tmp_path: Path) -> None:
    # Livingstone and Russo (2018): 01 neutral ... 08 surprised.
    documented = ["neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur"]
    for n in range(1, 9):
        write_wav(tmp_path / "rav" / "Actor_03" / f"03-01-{n:02d}-01-01-01-03.wav")
    prepare_ravdess(tmp_path / "rav", tmp_path / "d", classes=",".join(documented))
    emo = read_data_dir(tmp_path / "d")["utt2emo"]
    assert emo == {f"ravdess03-03-01-{n:02d}-01-01-01-03": documented[n - 1] for n in range(1, 9)}


def test_only_audio_only_wavs_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "rav"
    # Video-only (02) and audio-visual (01) as wavs, an upper-case .WAV, a subfolder, a look-alike folder.
    for name in ("03-01-01-01-01-01-05.wav", "02-01-01-01-01-02-05.wav", "01-01-01-01-02-01-05.wav"):
        write_wav(root / "Actor_05" / name)
    write_wav(root / "Actor_05" / "03-01-03-01-01-01-05.WAV")
    (root / "Actor_05" / "notes").mkdir()
    write_wav(root / "Actor_05_old" / "03-01-01-01-01-01-05.wav")
    report = prepare_ravdess(root, tmp_path / "d")
    # 4 wavs (Actor_05_old is not an actor folder): 2 kept, the 2 modality-01/02 wavs filtered.
    assert (report.total, report.kept, report.filtered, report.skipped) == (4, 2, 2, 0)
    assert (
        "2 utterances filtered by modality 01/02 (audio-visual or video-only; RAVDESS's audio is modality 03)"
        in report.notes
    )
    assert not any("non-wav" in n for n in report.notes)
    assert read_data_dir(tmp_path / "d").utts == [
        "ravdess05-03-01-01-01-01-01-05",
        "ravdess05-03-01-03-01-01-01-05",
    ]


def test_include_song_must_be_a_boolean(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="--include-song 'yes': expected one of False, True"):
        prepare_ravdess(tree, tmp_path / "d", include_song="yes")
    assert not (tmp_path / "d").exists()


def test_the_default_option_is_the_same_prep_as_spelled_out(tree: Path, tmp_path: Path) -> None:
    # The record holds every option with its default filled in: leaving include_song out is include_song=False.
    out = tmp_path / "d"
    prepare("ravdess", tree, out)
    assert read_record(record_path(out, "prep")).options["include_song"] is False
    assert prepare_ravdess(tree, out, include_song=False).up_to_date
    assert not prepare_ravdess(tree, out, include_song=True).up_to_date
