"""MSP-Podcast prep on a hand-written labels_consensus.csv: classes, speakers, partitions, bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import MSP_HEADER, make_msppodcast, write_wav

from sertk.corpora.msppodcast import prepare_msppodcast
from sertk.data import read_data_dir, validate_data_dir
from sertk.errors import SertkError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_msppodcast(tmp_path / "MSP-Podcast")


def test_prep_counts_partitions_and_speakers(tree: Path, tmp_path: Path) -> None:
    report = prepare_msppodcast(tree, tmp_path / "d")
    # 11 rows: 4 kept; contempt, no-agreement and withheld filtered; 4 reported.
    assert (report.total, report.kept, report.filtered, report.skipped) == (11, 4, 3, 4)
    assert report.class_counts == {"neu": 1, "hap": 1, "ang": 1, "sad": 1}
    labels = tree / "Labels" / "labels_consensus.csv"
    assert [p.split(": ", 1)[0] for p in report.problems] == [f"{labels}:{n}" for n in (9, 10, 11, 12)]
    assert "unknown EmoClass 'Q'" in report.problems[0] and "wav missing" in report.problems[3]
    assert "1 rows have no EmoClass (labels withheld) and were filtered" in report.notes
    data = read_data_dir(tmp_path / "d")
    assert data["utt2spk"] == {
        "msp0127-MSP-PODCAST_0001_0008": "msp0127",
        "msp0127-MSP-PODCAST_0001_0019": "msp0127",
        "msp0001-MSP-PODCAST_0002_0003": "msp0001",
        "msp-MSP-PODCAST_0002_0007": "msp-MSP-PODCAST_0002_0007",
    }
    assert data["utt2session"] == {
        "msp0127-MSP-PODCAST_0001_0008": "Train",
        "msp0127-MSP-PODCAST_0001_0019": "Train",
        "msp0001-MSP-PODCAST_0002_0003": "Development",
        "msp-MSP-PODCAST_0002_0007": "Test1",
    }
    # utt2vad is valence arousal dominance: EmoVal EmoAct EmoDom.
    assert data["utt2vad"]["msp0001-MSP-PODCAST_0002_0003"] == "2.0000 5.8000 5.4000"
    assert data["utt2gender"]["msp-MSP-PODCAST_0002_0007"] == "U"
    assert data["utt2emo"]["msp0127-MSP-PODCAST_0001_0019"] == "hap"
    assert "text" not in data.tables and "utt2votes" not in data.tables
    validate_data_dir(tmp_path / "d")


def test_contempt_and_no_agreement_keep_their_codes(tree: Path, tmp_path: Path) -> None:
    report = prepare_msppodcast(tree, tmp_path / "d", classes="neu,hap,ang,sad,con,xxx")
    assert report.class_counts == {"neu": 1, "hap": 1, "ang": 1, "sad": 1, "con": 1, "xxx": 1}
    data = read_data_dir(tmp_path / "d")
    assert data["utt2emo"]["msp0035-MSP-PODCAST_0003_0001"] == "con"
    assert data["utt2session"]["msp0035-MSP-PODCAST_0003_0001"] == "Test2"


def test_missing_column_is_one_error(tree: Path, tmp_path: Path) -> None:
    labels = tree / "Labels" / "labels_consensus.csv"
    labels.write_text("FileName,EmoClass\nMSP-PODCAST_0001_0008.wav,N\n")
    with pytest.raises(SertkError, match="labels_consensus.csv: missing column.s. EmoAct, EmoVal"):
        prepare_msppodcast(tree, tmp_path / "d")


def write_labels(root: Path, rows: list[str], bom: bool = False) -> Path:
    """An MSP-Podcast tree whose labels_consensus.csv has ``rows`` and whose Audios/ has each row's wav."""
    for row in rows:
        name = row.split(",", 1)[0].strip()
        if name and " " not in name:
            write_wav(root / "Audios" / name)
    labels = root / "Labels" / "labels_consensus.csv"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text(("\ufeff" if bom else "") + "\n".join((MSP_HEADER, *rows)) + "\n", encoding="utf-8")
    return labels


def test_every_emo_class_has_its_documented_code(tmp_path: Path) -> None:
    # The docstring's table (Lotfian and Busso, 2019): letter -> sertk code.
    documented = {
        "A": "ang", "S": "sad", "H": "hap", "U": "sur", "F": "fea",
        "D": "dis", "C": "con", "N": "neu", "O": "oth", "X": "xxx",
    }  # fmt: skip
    rows = [f"MSP-PODCAST_0001_{n:04d}.wav,{c},4.0,4.0,4.0,{n},Male,Train" for n, c in enumerate(documented)]
    write_labels(tmp_path / "msp", rows)
    prepare_msppodcast(tmp_path / "msp", tmp_path / "d", classes=",".join(documented.values()))
    emo = read_data_dir(tmp_path / "d")["utt2emo"]
    assert emo == {f"msp{n:04d}-MSP-PODCAST_0001_{n:04d}": documented[c] for n, c in enumerate(documented)}


def test_malformed_rows_are_reported_and_skipped(tmp_path: Path) -> None:
    rows = [
        "MSP-PODCAST_0001_0001.wav,N,3.0,4.0,5.0,1,Male,Train",  # line 2: kept
        "MSP-PODCAST 0001_0002.wav,N,3.0,4.0,5.0,1,Male,Train",  # 3: a space in FileName
        "MSP-PODCAST_0001_0003.wav,N,3.0,4.0,5.0,1,Male,",  # 4: no Split_Set
        "MSP-PODCAST_0001_0004.wav,N,3.0,4.0,5.0,1,Male,Test 1",  # 5: a space in Split_Set
        "MSP-PODCAST_0001_0005.wav,N,n/a,4.0,5.0,1,Male,Train",  # 6: EmoAct not a number
        "MSP-PODCAST_0001_0001.wav,N,3.0,4.0,5.0,2,Male,Train",  # 7: listed again, under another speaker
    ]
    labels = write_labels(tmp_path / "msp", rows)
    report = prepare_msppodcast(tmp_path / "msp", tmp_path / "d", classes="neu,hap")
    assert (report.total, report.kept, report.filtered, report.skipped) == (6, 1, 0, 5)
    assert report.problems == [
        f"{labels}:3: FileName 'MSP-PODCAST 0001_0002.wav' is empty or has whitespace",
        f"{labels}:4: MSP-PODCAST_0001_0003.wav: Split_Set '' is empty or has whitespace",
        f"{labels}:5: MSP-PODCAST_0001_0004.wav: Split_Set 'Test 1' is empty or has whitespace",
        f"{labels}:6: MSP-PODCAST_0001_0005.wav: EmoVal/EmoAct/EmoDom are not numbers",
        f"{labels}:7: MSP-PODCAST_0001_0001.wav: listed again (first on line 2)",
    ]
    assert read_data_dir(tmp_path / "d")["utt2spk"] == {"msp0001-MSP-PODCAST_0001_0001": "msp0001"}


def test_gender_and_notes_on_speakers_and_partitions(tree: Path, tmp_path: Path) -> None:
    report = prepare_msppodcast(tree, tmp_path / "d")
    # Kept (MSP_ROWS lines 2-5): Female, Female, Male, Unknown; Train 2, Development 1, Test1 1.
    assert read_data_dir(tmp_path / "d")["utt2gender"] == {
        "msp0127-MSP-PODCAST_0001_0008": "F",
        "msp0127-MSP-PODCAST_0001_0019": "F",
        "msp0001-MSP-PODCAST_0002_0003": "M",
        "msp-MSP-PODCAST_0002_0007": "U",
    }
    assert "1 kept turns have an Unknown speaker (each its own speaker id)" in report.notes
    assert "partitions (utt2session): Development 1, Test1 1, Train 2" in report.notes


def test_a_spreadsheet_saved_csv_is_read(tmp_path: Path) -> None:
    # A byte-order mark before the header and spaces around the fields, as spreadsheet exports write them.
    rows = [
        "MSP-PODCAST_0001_0001.wav, N, 3.0, 4.0, 5.0, 0012, Female, Train",
        "MSP-PODCAST_0001_0002.wav, H, 6.0, 6.5, 4.0, Unknown, Male, Development",
    ]
    write_labels(tmp_path / "msp", rows, bom=True)
    report = prepare_msppodcast(tmp_path / "msp", tmp_path / "d", classes="neu,hap")
    assert report.kept == 2 and report.skipped == 0
    data = read_data_dir(tmp_path / "d")
    assert data["utt2emo"] == {"msp0012-MSP-PODCAST_0001_0001": "neu", "msp-MSP-PODCAST_0001_0002": "hap"}
    assert data["utt2vad"]["msp0012-MSP-PODCAST_0001_0001"] == "4.0000 3.0000 5.0000"
    assert data["utt2session"]["msp-MSP-PODCAST_0001_0002"] == "Development"


def test_no_labels_folder_is_not_an_msp_podcast_tree(tree: Path, tmp_path: Path) -> None:
    (tree / "Labels" / "labels_consensus.csv").unlink()
    (tree / "Labels").rmdir()
    with pytest.raises(SertkError, match="not a MSP-Podcast tree: Labels/ is missing"):
        prepare_msppodcast(tree, tmp_path / "d")
    assert not (tmp_path / "d").exists()
