"""Data dirs: write/read round trip, Kaldi-style validation and its error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sertk.data import read_data_dir, read_table, validate_data_dir, write_data_dir, write_table
from sertk.data.datadir import DATA_FILES, data_dir_digest
from sertk.errors import SertkError


def make_dir(tmp_path: Path) -> Path:
    wavs = {}
    for utt in ("Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses02F_impro01_F000"):
        wavs[utt] = str(tmp_path / f"{utt}.wav")
        sf.write(wavs[utt], np.zeros(160, dtype=np.int16), 16000)
    tables = {
        "wav.scp": wavs,
        "utt2spk": {u: u[:5] + u.rsplit("_", 1)[1][0] for u in wavs},
        "utt2emo": dict(zip(sorted(wavs), ["neu", "ang", "neu"], strict=True)),
        "text": {u: "" for u in wavs} | {"Ses01F_impro01_M000": "two  words "},
    }
    write_data_dir(tmp_path / "data", tables, {"classes": ["neu", "hap", "ang"], "synthetic": True})
    return tmp_path / "data"


def test_round_trip_and_spk2utt(tmp_path: Path) -> None:
    path = make_dir(tmp_path)
    data = read_data_dir(path)
    assert data.utts == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses02F_impro01_F000"]
    assert data["text"] == {
        "Ses01F_impro01_F000": "",
        "Ses01F_impro01_M000": "two  words",
        "Ses02F_impro01_F000": "",
    }
    assert (path / "spk2utt").read_text() == (
        "Ses01F Ses01F_impro01_F000\nSes01M Ses01F_impro01_M000\nSes02F Ses02F_impro01_F000\n"
    )
    assert data.labels(data.utts) == [0, 2, 0] and data.synthetic
    assert (
        validate_data_dir(path) == f"{path}: OK, 3 utterances, 3 speakers, neu 2 hap 0 ang 1 (SYNTHETIC data)"
    )


def test_tables_split_on_any_whitespace(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("b\tvalue with  spaces\na\n")
    assert read_table(tmp_path / "t") == {"b": "value with  spaces", "a": ""}
    write_table(tmp_path / "u", {"b": "2", "a": "1"})
    assert (tmp_path / "u").read_text() == "a 1\nb 2\n"
    with pytest.raises(SertkError, match="invalid id 'a b'"):
        write_data_dir(tmp_path / "d", {"wav.scp": {"x": "1"}, "utt2spk": {"a b": "s"}})
    assert not (tmp_path / "d" / "wav.scp").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "utt2emo").unlink(), "not a data dir .no utt2emo"),
        (
            lambda p: (p / "utt2spk").write_text("Ses02F_impro01_F000 Ses02F\nSes01F_impro01_F000 Ses01F\n"),
            "not sorted",
        ),
        (
            lambda p: (p / "text").write_text("Ses01F_impro01_F000\nSes01F_impro01_F000 x\n"),
            "text:2: duplicate id",
        ),
        (
            lambda p: (p / "utt2emo").write_text("Ses01F_impro01_F000 neu\n"),
            "utt2emo: ids differ from wav.scp",
        ),
        (lambda p: (p / "spk2utt").write_text("Ses01F Ses01F_impro01_F000\n"), "not the inverse of utt2spk"),
        (lambda p: (p / "corpus.json").write_text("[1]"), "expected a JSON object"),
        (lambda p: (p / "corpus.json").write_text("{"), "corpus.json: invalid JSON"),
        (lambda p: Path(read_table(p / "wav.scp")["Ses01F_impro01_M000"]).unlink(), "1 wav file.s. missing"),
    ],
)
def test_validate_reports_the_problem(tmp_path: Path, damage, message: str) -> None:
    path = make_dir(tmp_path)
    damage(path)
    with pytest.raises(SertkError, match=message):
        validate_data_dir(path)


def test_unknown_class_and_missing_dir(tmp_path: Path) -> None:
    path = make_dir(tmp_path)
    (path / "utt2emo").write_text(
        "Ses01F_impro01_F000 neu\nSes01F_impro01_M000 sad\nSes02F_impro01_F000 neu\n"
    )
    with pytest.raises(SertkError, match=r"classes \['sad'\] not in corpus.json"):
        validate_data_dir(path)
    with pytest.raises(SertkError, match="data dir not found"):
        read_data_dir(tmp_path / "nope")


def test_data_dir_digest_follows_every_table_and_corpus_json(tmp_path: Path) -> None:
    tables = {"wav.scp": {"u1": "/x.wav", "u2": "/y.wav"}, "utt2spk": {"u1": "a", "u2": "b"}}
    tables["utt2emo"] = {"u1": "neu", "u2": "sad"}
    base = data_dir_digest(write_data_dir(tmp_path / "a", tables, {"classes": ["neu", "sad"]}).path)
    assert data_dir_digest(write_data_dir(tmp_path / "b", tables, {"classes": ["neu", "sad"]}).path) == base
    # Another class order (other label indices) or another label: another data dir.
    assert data_dir_digest(write_data_dir(tmp_path / "c", tables, {"classes": ["sad", "neu"]}).path) != base
    relabelled = {**tables, "utt2emo": {"u1": "sad", "u2": "sad"}}
    assert (
        data_dir_digest(write_data_dir(tmp_path / "d", relabelled, {"classes": ["neu", "sad"]}).path) != base
    )
    # Every other table too: a change in any one value is another data dir (soft labels, VAD, text...).
    values = {
        "wav.scp": ("/z.wav", "/w.wav"),
        "utt2spk": ("c", "d"),
        "utt2votes": ("neu neu sad", "neu sad sad"),
        "utt2vad": ("0.10 1.20", "0.20 1.20"),
        "utt2session": ("Session1", "Session2"),
        "utt2gender": ("F", "M"),
        "utt2style": ("impro", "script"),
        "utt2dur": ("1.50", "1.60"),
        "text": ("hello there", "hello here"),
    }
    assert set(values) == set(DATA_FILES) - {"utt2emo"}
    for name, (first, second) in values.items():
        digests = [
            data_dir_digest(
                write_data_dir(
                    tmp_path / f"{name}{i}",
                    {**tables, name: {**tables.get(name, {"u2": first}), "u1": value}},
                    {"classes": ["neu", "sad"]},
                ).path
            )
            for i, value in enumerate((first, second))
        ]
        assert digests[0] != digests[1], name
