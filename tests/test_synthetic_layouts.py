"""The synthetic EmoDB, RAVDESS, CREMA-D and MSP-Podcast trees: prep reads back what was planned, and each
corpus's usual protocol has every class in every fold's training part on the tiny trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from sertk.corpora import corpus_spec, prepare
from sertk.corpora.synthetic import LAYOUTS, generate_corpus
from sertk.data import read_data_dir
from sertk.data.protocols_corpora import (
    classes_missing_from_train,
    leave_one_speaker_out,
    official_partitions,
    speaker_group_kfold,
)
from sertk.errors import SertkError

NEW_LAYOUTS = ("emodb", "ravdess", "crema-d", "msp-podcast")


def usual_folds(corpus: str, data) -> list[dict]:
    """Each corpus's usual protocol (the lead registers these in sertk folds)."""
    if corpus == "emodb":
        return leave_one_speaker_out(data["utt2spk"])
    if corpus == "msp-podcast":
        return official_partitions(data["utt2session"], tests=("Test1", "Test2"))
    return speaker_group_kfold(data["utt2spk"], data["utt2gender"], k=6 if corpus == "ravdess" else 5)


@pytest.fixture(scope="module", params=NEW_LAYOUTS)
def tiny(request, tmp_path_factory) -> tuple[str, Path, dict]:
    root = tmp_path_factory.mktemp("synth") / request.param
    return request.param, root, generate_corpus(root, "tiny", seed=0, corpus=request.param)


def expected_utt(speaker: str, path: str) -> str:
    """The prep id of a clip: ``<speaker>-<stem>``, or the speaker itself for a turn of an unknown one."""
    stem = Path(path).stem
    return speaker if speaker.endswith(stem) else f"{speaker}-{stem}"


def test_prep_reads_back_the_plan(tiny, tmp_path: Path) -> None:
    corpus, root, summary = tiny
    spec = corpus_spec(corpus)
    title = spec.title
    assert (
        (root / "SYNTHETIC_CORPUS.txt")
        .read_text()
        .startswith(f"THIS IS A SYNTHETIC CORPUS, NOT {title.upper()}")
    )
    report = prepare(corpus, root, tmp_path / "all", classes=",".join(spec.label_codes))
    assert report.synthetic and report.skipped == 0 and report.total == summary["utterances"]
    clips = LAYOUTS[corpus].plan_tree("tiny", 0).clips
    # Left out by the defaults: RAVDESS's song files, MSP-Podcast's turns with withheld labels (Test3).
    labels = root / "Labels" / "labels_consensus.csv"
    withheld = (
        {line.split(",")[0] for line in labels.read_text().splitlines() if ",," in line}
        if labels.exists()
        else set()
    )
    kept = [c for c in clips if "/03-02-" not in c.path and Path(c.path).name not in withheld]
    assert len(withheld) == (4 if corpus == "msp-podcast" else 0)
    data = read_data_dir(tmp_path / "all")
    assert data["utt2emo"] == {expected_utt(c.speaker, c.path): c.label for c in kept}
    assert data.synthetic and set(data["utt2spk"].values()) == {c.speaker for c in kept}
    assert summary["labels"] == {code: sum(c.label == code for c in clips) for code in summary["labels"]}


def test_usual_protocol_has_every_class_in_training(tiny, tmp_path: Path) -> None:
    corpus, root, _ = tiny
    report = prepare(corpus, root, tmp_path / "four")
    data = read_data_dir(tmp_path / "four")
    folds = usual_folds(corpus, data)
    expected = {"emodb": 10, "ravdess": 6, "crema-d": 5, "msp-podcast": 2}[corpus]
    assert len(folds) == expected
    assert classes_missing_from_train(folds, data["utt2emo"], list(report.class_counts)) == []
    for fold in folds:
        assert fold["test"] and fold["valid"]
        assert {data["utt2emo"][u] for u in fold["test"]} <= set(report.class_counts)


def test_sizes_and_layout_mismatch(tiny, tmp_path: Path) -> None:
    corpus, root, summary = tiny
    with pytest.raises(
        SertkError, match=f"unknown synthetic corpus size 'full' for {corpus}; choose one of tiny, small"
    ):
        generate_corpus(tmp_path / "x", "full", corpus=corpus)
    assert generate_corpus(root, "tiny", seed=0, corpus=corpus) == summary
    with pytest.raises(SertkError, match=r"not the synthetic corpus size=tiny seed=0 \(iemocap\)"):
        generate_corpus(root, "tiny", seed=0)
    with pytest.raises(SertkError, match="--corpus 'emo-db': no synthetic layout"):
        generate_corpus(tmp_path / "y", corpus="emo-db")
