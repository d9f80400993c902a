"""MSP-Podcast prep on a hand-written labels_consensus.csv: classes, speakers, partitions, bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_samples import make_msppodcast

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
