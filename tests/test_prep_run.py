"""The registry and the shared prep run: provenance reuse, redo triggers, interrupted preps, foreign files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from corpus_samples import make_cremad, make_emodb, write_wav

from sertk.corpora import CORPORA, corpus_spec, prepare
from sertk.corpora import cremad as cremad_module
from sertk.corpora.common import parse_class_spec
from sertk.corpora.run import is_prep_output
from sertk.errors import SertkError
from sertk.provenance import read_record, record_path


@pytest.fixture
def cremad(tmp_path: Path) -> Path:
    return make_cremad(tmp_path / "CREMA-D")


def test_registry_names_and_unknown_corpus() -> None:
    assert list(CORPORA) == ["iemocap", "emodb", "ravdess", "crema-d", "msp-podcast"]
    for name, spec in CORPORA.items():
        assert spec.name == name
        assert spec.default_classes.replace("+exc", "") == "neu,hap,ang,sad"
        parse_class_spec(spec.default_classes, spec.label_codes)
    with pytest.raises(
        SertkError, match="unknown corpus 'emo-db' .known: iemocap, emodb, ravdess, crema-d, msp-podcast"
    ):
        corpus_spec("emo-db")


def test_record_then_up_to_date(cremad: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    first = prepare("crema-d", cremad, out)
    record = read_record(record_path(out, "prep"))
    assert record is not None and not first.up_to_date
    assert record.options == {"corpus": "crema-d", "root": str(cremad), "classes": "neu,hap,ang,sad"}
    assert record.code["prep"] == "crema-d/1"
    assert set(record.outputs) == {p.name for p in out.iterdir()} - {"prep.provenance.json"}
    stamp = (out / "utt2spk").stat().st_mtime_ns
    again = prepare("crema-d", cremad, out)
    assert again.up_to_date and (out / "utt2spk").stat().st_mtime_ns == stamp
    assert again.summary().startswith(f"prep: {out} is up to date (CREMA-D, kept 4: neu 1 hap 1 ang 1 sad 1)")
    # The same classes spelled differently are the same prep.
    assert prepare("crema-d", cremad, out, classes="neu, hap ,ang,sad").up_to_date


@pytest.mark.parametrize("change", ["label file", "wav rewritten", "classes", "table edited"])
def test_each_change_redoes(cremad: Path, tmp_path: Path, change: str) -> None:
    out = tmp_path / "data"
    prepare("crema-d", cremad, out)
    classes = None
    if change == "label file":
        path = cremad / "VideoDemographics.csv"
        path.write_text(path.read_text().replace('1002,21,"Female"', '1002,21,"Male"'))
    elif change == "wav rewritten":
        wav = cremad / "AudioWAV" / "1001_DFA_ANG_XX.wav"
        write_wav(wav, seconds=0.5)
        os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    elif change == "classes":
        classes = "neu,hap,ang,sad,dis"
    else:
        (out / "utt2emo").write_text((out / "utt2emo").read_text().replace(" ang", " sad"))
    report = prepare("crema-d", cremad, out, classes=classes)
    assert not report.up_to_date
    data = (out / "utt2gender").read_text() + (out / "utt2dur").read_text() + (out / "utt2emo").read_text()
    expected = {
        "label file": "cremad1002-1002_MTI_SAD_LO M",
        "wav rewritten": "cremad1001-1001_DFA_ANG_XX 0.5000",
        "classes": "cremad1003-1003_ITS_DIS_MD dis",
        "table edited": "cremad1001-1001_DFA_ANG_XX ang",
    }
    assert expected[change] in data
    assert prepare("crema-d", cremad, out, classes=classes).up_to_date


def test_iemocap_goes_through_the_same_run(tmp_path: Path) -> None:
    assert corpus_spec("iemocap").options == {"style": ("all", ("all", "impro", "script"))}
    with pytest.raises(SertkError, match="--style 'improv': expected one of all, impro, script"):
        prepare("iemocap", tmp_path, tmp_path / "d", style="improv")
    with pytest.raises(SertkError, match="prep emodb: unknown option.s. style .its options: none"):
        prepare("emodb", tmp_path, tmp_path / "d", style="impro")


def test_interrupted_prep_leaves_nothing(cremad: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "data"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cremad_module, "build_tables", crash)
        with pytest.raises(KeyboardInterrupt):
            prepare("crema-d", cremad, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CREMA-D"]
    # Over an existing data dir: the old one and its record stay valid for the old options.
    prepare("crema-d", cremad, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(cremad_module, "build_tables", crash)
        with pytest.raises(KeyboardInterrupt):
            prepare("crema-d", cremad, out, classes="neu,hap,ang,sad,dis")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CREMA-D", "data"]
    assert prepare("crema-d", cremad, out).up_to_date


def test_failed_prep_writes_no_record(tmp_path: Path) -> None:
    root = make_emodb(tmp_path / "emodb")
    for stem in ("09a05Lc", "10b09Ea"):
        (root / "wav" / f"{stem}.wav").unlink()
    with pytest.raises(SertkError, match="nothing usable left .11 utterances seen, 6 filtered"):
        prepare("emodb", root, tmp_path / "d", classes="bor,dis")
    assert not (tmp_path / "d").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["emodb"]


def test_foreign_files_are_never_replaced(cremad: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "my_notes.txt").write_text("mine")
    with pytest.raises(
        SertkError, match=r"data: holds a file sertk prep did not write \(my_notes.txt, ...\)"
    ):
        prepare("crema-d", cremad, out)
    assert [p.name for p in out.iterdir()] == ["my_notes.txt"]
    (out / "my_notes.txt").unlink()
    # What sertk stages write into a data dir is replaced by a new prep (stale folds go with it).
    for name in ("folds.json", "folds_random.json", "folds.provenance.json", ".done", "folds_random.done"):
        (out / name).write_text("{}")
    prepare("crema-d", cremad, out)
    assert not (out / "folds.json").exists() and (out / "prep.provenance.json").is_file()


def test_owned_names(tmp_path: Path) -> None:
    for name in ("wav.scp", "utt2votes", "spk2utt", "corpus.json", "folds_loso-speaker.json", ".done"):
        assert is_prep_output(tmp_path / name)
    assert is_prep_output(tmp_path / ".utt2spk.tmp1234")
    for name in ("notes.txt", "utt2spk.bak", "folds.yaml", "feats.h5"):
        assert not is_prep_output(tmp_path / name)
    (tmp_path / "utt2spk").mkdir()
    assert not is_prep_output(tmp_path / "utt2spk")


def test_a_synthetic_marker_added_after_prep_redoes_it(cremad: Path, tmp_path: Path) -> None:
    """The marker decides whether results say SYNTHETIC: a data dir prepped without it is not reused."""
    out = tmp_path / "data"
    assert prepare("crema-d", cremad, out).synthetic is False
    (cremad / "SYNTHETIC_CORPUS.txt").write_text("THIS IS A SYNTHETIC CORPUS\n")
    report = prepare("crema-d", cremad, out)
    assert not report.up_to_date and report.synthetic is True
    assert json.loads((out / "corpus.json").read_text())["synthetic"] is True
    assert prepare("crema-d", cremad, out).up_to_date
