"""EmoDB prep on a hand-written tree in the real naming: label letters, speakers, texts, bad names."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import EMODB_BAD, make_emodb

from sertk.corpora.emodb import parse_name, prepare_emodb
from sertk.data import read_data_dir, validate_data_dir
from sertk.errors import SertkError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_emodb(tmp_path / "emodb")


def test_file_name_fields() -> None:
    fields, reason = parse_name(Path("wav/03a01Fa.wav"))
    assert reason is None
    assert fields == {"speaker": "03", "text": "a01", "emotion": "F", "version": "a"}
    assert parse_name(Path("16b10Le.wav"))[0]["emotion"] == "L"
    for stem, why in EMODB_BAD.items():
        fields, reason = parse_name(Path(f"{stem}.wav"))
        assert fields is None and why in reason


def test_prep_counts_labels_and_ids(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    report = prepare_emodb(tree, out)
    # 13 wavs (the dot file is not one): 8 good, 4 bad names, 1 empty; bor, dis, fea are filtered.
    assert (report.total, report.kept, report.filtered, report.skipped) == (13, 5, 3, 5)
    assert report.class_counts == {"neu": 2, "hap": 1, "ang": 1, "sad": 1}
    assert report.speakers == 3 and report.corpus == "EmoDB"
    assert any("12a01Fa.wav: emodb12-12a01Fa: wav is empty" in p for p in report.problems)
    data = read_data_dir(out)
    assert data.utts == [
        "emodb03-03a01Fa",
        "emodb03-03a01Nc",
        "emodb03-03a02Wb",
        "emodb08-08a01Na",
        "emodb16-16b03Tb",
    ]
    assert data["utt2emo"] == {
        "emodb03-03a01Fa": "hap",
        "emodb03-03a01Nc": "neu",
        "emodb03-03a02Wb": "ang",
        "emodb08-08a01Na": "neu",
        "emodb16-16b03Tb": "sad",
    }
    assert data["utt2spk"]["emodb16-16b03Tb"] == "emodb16"
    assert data["utt2gender"] == dict.fromkeys(data.utts, "M") | {
        "emodb08-08a01Na": "F",
        "emodb16-16b03Tb": "F",
    }
    assert data["text"]["emodb03-03a02Wb"] == "Das will sie am Mittwoch abgeben."
    assert data["text"]["emodb16-16b03Tb"].startswith("An den Wochenenden bin ich")
    assert data["utt2dur"]["emodb03-03a01Fa"] == "0.2500"
    assert Path(data["wav.scp"]["emodb08-08a01Na"]) == tree / "wav" / "08a01Na.wav"
    assert "utt2session" not in data.tables and "utt2votes" not in data.tables
    assert data.meta["corpus"] == "EmoDB" and data.meta["classes"] == ["neu", "hap", "ang", "sad"]
    assert validate_data_dir(out).endswith("3 speakers, neu 2 hap 1 ang 1 sad 1")


def test_every_emotion_has_its_own_code(tree: Path, tmp_path: Path) -> None:
    report = prepare_emodb(tree, tmp_path / "d", classes="neu,hap,ang,sad,bor,dis,fea")
    assert report.class_counts == {"neu": 2, "hap": 1, "ang": 1, "sad": 1, "bor": 1, "dis": 1, "fea": 1}
    emo = read_data_dir(tmp_path / "d")["utt2emo"]
    assert (emo["emodb09-09a05Lc"], emo["emodb10-10b09Ea"], emo["emodb11-11a07Ab"]) == ("bor", "dis", "fea")
    merged = prepare_emodb(tree, tmp_path / "m", classes="neu+bor,hap,ang,sad")
    assert merged.class_counts["neu"] == 3
    with pytest.raises(SertkError, match="unknown label 'exc'"):
        prepare_emodb(tree, tmp_path / "e", classes="neu,hap+exc,ang,sad")


def test_not_an_emodb_tree(tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="EmoDB root not found"):
        prepare_emodb(tmp_path / "nope", tmp_path / "d")
    (tmp_path / "flat").mkdir()
    with pytest.raises(SertkError, match="not a EmoDB tree: wav/ is missing"):
        prepare_emodb(tmp_path / "flat", tmp_path / "d")
    assert not (tmp_path / "d").exists()
