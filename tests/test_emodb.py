"""EmoDB prep on a hand-written tree in the real naming: label letters, speakers, texts, bad names."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from corpus_samples import EMODB_BAD, make_emodb, write_wav

from sertk.corpora.common import check_wav, parse_class_spec
from sertk.corpora.emodb import LABEL_CODES, SPEAKER_SEX, parse_name, prepare_emodb
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


def test_a_name_with_trailing_text_is_not_emodb() -> None:
    # The whole stem must be the naming: a copy ("03a01Fa_copy") or a missing version letter is not a take.
    for stem in ("03a01Fa_copy", "03a01Fab", "03a01F", "03a1Fa"):
        fields, reason = parse_name(Path(f"{stem}.wav"))
        assert fields is None and reason.startswith("file name is not EmoDB's"), stem


def test_every_speaker_has_the_documented_sex(tmp_path: Path) -> None:
    # Burkhardt et al. (2005): male 03 10 11 12 15, female 08 09 13 14 16.
    for speaker in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"):
        write_wav(tmp_path / "emodb" / "wav" / f"{speaker}a01Na.wav")
    prepare_emodb(tmp_path / "emodb", tmp_path / "d")
    gender = read_data_dir(tmp_path / "d")["utt2gender"]
    males = {"03", "10", "11", "12", "15"}
    assert gender == {f"emodb{s}-{s}a01Na": "M" if s in males else "F" for s in SPEAKER_SEX}


def test_every_text_is_the_documented_sentence(tmp_path: Path) -> None:
    # The ten German texts of the EmoDB documentation, by code.
    documented = {
        "a01": "Der Lappen liegt auf dem Eisschrank.",
        "a02": "Das will sie am Mittwoch abgeben.",
        "a04": "Heute Abend könnte ich es ihm sagen.",
        "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
        "a07": "In sieben Stunden wird es soweit sein.",
        "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
        "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
        "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
        "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
        "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
    }
    for code in documented:
        write_wav(tmp_path / "emodb" / "wav" / f"03{code}Na.wav")
    prepare_emodb(tmp_path / "emodb", tmp_path / "d")
    text = read_data_dir(tmp_path / "d")["text"]
    assert text == {f"emodb03-03{code}Na": sentence for code, sentence in documented.items()}


def test_one_class_is_not_a_class_spec(tree: Path, tmp_path: Path) -> None:
    # A classifier needs two classes; "neu+bor" is one class made of two labels.
    for spec in ("neu", "neu+bor"):
        with pytest.raises(SertkError, match="need at least 2 classes"):
            parse_class_spec(spec, LABEL_CODES)
        with pytest.raises(SertkError, match="need at least 2 classes"):
            prepare_emodb(tree, tmp_path / "d", classes=spec)
    assert not (tmp_path / "d").exists()


def riff_wav(path: Path, samples: int, cut: int = 0, odd_chunk: bool = False) -> int:
    """A 16 kHz mono 16-bit RIFF/WAVE file written byte by byte, less its last ``cut`` bytes -> its full size.

    ``odd_chunk`` puts a 3-byte LIST chunk (padded to 4, as RIFF requires) before the data chunk.
    """
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\x00" if odd_chunk else b""
    data = b"data" + struct.pack("<I", 2 * samples) + b"\x00\x00" * samples
    body = b"WAVE" + fmt + extra + data
    raw = b"RIFF" + struct.pack("<I", len(body)) + body
    path.write_bytes(raw[: len(raw) - cut])
    return len(raw)


def test_wav_header_checks(tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    # 44 header bytes + 400 samples of 2 bytes = 844; one sample (2 bytes) short is already truncated.
    size = riff_wav(wav, 400, cut=2)
    assert size == 844 and check_wav(wav) == (None, "wav truncated (842 bytes, header says 844)")
    # After an odd-sized chunk the next one starts one pad byte later: 844 + 8 + 4 = 856.
    riff_wav(wav, 400, cut=100, odd_chunk=True)
    assert check_wav(wav) == (None, "wav truncated (756 bytes, header says 856)")
    riff_wav(wav, 400, odd_chunk=True)
    info, reason = check_wav(wav)
    assert reason is None and info.frames == 400
    # A header with an empty data chunk: a valid file without a single sample.
    riff_wav(wav, 0)
    assert check_wav(wav) == (None, "wav has no audio samples")


def test_up_to_date_report_counts_kept_utterances(tree: Path, tmp_path: Path) -> None:
    prepare_emodb(tree, tmp_path / "d")
    again = prepare_emodb(tree, tmp_path / "d")
    # Read back from corpus.json: neu 2 + hap 1 + ang 1 + sad 1 = 5 utterances in 4 classes.
    assert again.up_to_date and again.kept == 5
    assert again.class_counts == {"neu": 2, "hap": 1, "ang": 1, "sad": 1}


def test_a_file_in_place_of_the_data_dir_is_refused(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.write_text("my notes\n")
    with pytest.raises(SertkError, match="d: exists and is not a directory; choose another data dir"):
        prepare_emodb(tree, out)
    assert out.read_text() == "my notes\n"


def test_summary_line_and_corpus_json_counts(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    report = prepare_emodb(tree, out)
    # The counts of test_prep_counts_labels_and_ids; EmoDB has no sessions, so none are named.
    assert report.summary() == (
        f"prep: EmoDB: 3 speakers, 13 utterances: kept 5 (neu 2 hap 1 ang 1 sad 1), filtered 3, skipped 5 -> {out}"
    )
    meta = read_data_dir(out).meta
    assert (meta["counts"], meta["skipped"]) == ({"neu": 2, "hap": 1, "ang": 1, "sad": 1}, 5)


def test_a_file_as_root_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "emodb.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(SertkError, match="emodb.zip: EmoDB root is not a directory"):
        prepare_emodb(tmp_path / "emodb.zip", tmp_path / "d")


def test_a_rewritten_wav_redoes_the_prep(tree: Path, tmp_path: Path) -> None:
    # EmoDB has no label files: the audio's size+mtime digest is all the record has, first file included.
    out = tmp_path / "d"
    prepare_emodb(tree, out)
    wav = tree / "wav" / "03a01Fa.wav"
    write_wav(wav, seconds=0.5)
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    assert not prepare_emodb(tree, out).up_to_date
    assert read_data_dir(out)["utt2dur"]["emodb03-03a01Fa"] == "0.5000"
