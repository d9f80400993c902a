"""EmoBox and s3prl/SUPERB fold files: hand-written samples in their real formats, imported and round-tripped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_samples import make_emodb, write_wav

from sertk.corpora import prepare
from sertk.data import read_data_dir, write_data_dir
from sertk.data.interchange import export_emobox, export_superb, import_emobox, import_superb
from sertk.errors import SertkError

# utt -> (speaker, class); the speaker is the session plus the letter of the last id token.
UTTS = {
    "Ses01F_impro01_F000": ("Ses01F", "neu"),
    "Ses01F_impro01_M000": ("Ses01M", "hap"),
    "Ses01M_script01_1_F000": ("Ses01F", "ang"),
    "Ses02F_impro02_F000": ("Ses02F", "sad"),
    "Ses02F_impro02_M000": ("Ses02M", "neu"),
    "Ses03M_impro05a_F000": ("Ses03F", "ang"),
    "Ses03M_impro05a_M001": ("Ses03M", "hap"),
}


def wav_of(root: Path, utt: str) -> Path:
    return root / f"Session{int(utt[3:5])}" / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"


@pytest.fixture
def iemocap(tmp_path: Path):
    root = tmp_path / "IEMOCAP_full_release"
    wavs = {u: str(write_wav(wav_of(root, u), seconds=0.5)) for u in UTTS}
    tables = {
        "wav.scp": wavs,
        "utt2spk": {u: s for u, (s, _) in UTTS.items()},
        "utt2emo": {u: c for u, (_, c) in UTTS.items()},
    }
    meta = {"corpus": "IEMOCAP", "root": str(root), "classes": ["neu", "hap", "ang", "sad"]}
    write_data_dir(tmp_path / "data", tables, meta)
    return read_data_dir(tmp_path / "data")


def emobox_line(utt: str, emo: str, length: float = 0.5) -> str:
    """One line of an EmoBox IEMOCAP fold file, as EmoBox writes it (spk: the dialog prefix)."""
    dialog = utt.rsplit("_", 1)[0]
    return json.dumps(
        {
            "key": f"iemocap-{utt}",
            "dataset": "iemocap",
            "wav": f"downloads/iemocap/Session{int(utt[3:5])}/sentences/wav/{dialog}/{utt}.wav",
            "type": "raw",
            "sample_rate": 16000,
            "num_frame": length * 16000,
            "task": "category",
            "length": length,
            "emo": emo,
            "channel": 1,
            "spk": utt.split("_")[0],
        }
    )


def write_emobox_iemocap(path: Path) -> Path:
    """Leave-one-session-out over sessions 1-3 (fold_3 only as .json), plus one utterance sertk lacks."""
    for k in (1, 2, 3):
        fold = path / f"fold_{k}"
        fold.mkdir(parents=True)
        test = [u for u in UTTS if int(u[3:5]) == k]
        train = [u for u in UTTS if int(u[3:5]) != k]
        parts = {"train": train, "test": test + (["Ses01F_impro01_F001"] if k == 1 else [])}
        for part, utts in parts.items():
            lines = [emobox_line(u, UTTS.get(u, ("", "exc"))[1]) for u in utts]
            if k == 3:
                keyed = {
                    json.loads(x)["key"]: {"wav": json.loads(x)["wav"], "emo": json.loads(x)["emo"]}
                    for x in lines
                }
                (fold / f"iemocap_{part}_fold_{k}.json").write_text(json.dumps(keyed, indent=4))
            else:
                (fold / f"iemocap_{part}_fold_{k}.jsonl").write_text("\n".join(lines) + "\n")
    (path / "label_map.json").write_text(
        '{"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad", "exc": "Happy"}'
    )
    return path


def test_import_emobox_takes_speakers_from_the_data_dir(iemocap, tmp_path: Path) -> None:
    folds = import_emobox(write_emobox_iemocap(tmp_path / "emobox" / "iemocap"), iemocap)
    assert folds["protocol"] == "emobox" and [f["name"] for f in folds["folds"]] == [
        "fold1",
        "fold2",
        "fold3",
    ]
    fold1, fold2, fold3 = folds["folds"]
    assert fold1["test"] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01M_script01_1_F000"]
    assert len(fold1["train"]) == 4 and fold1["valid"] == []
    # The file's spk says Ses02F for both turns of Ses02F_impro02; the data dir knows the male actor.
    assert fold2["test_speakers"] == ["Ses02F", "Ses02M"]
    assert fold3["test"] == ["Ses03M_impro05a_F000", "Ses03M_impro05a_M001"]
    assert len(folds["notes"]) == 2 and folds["notes"][0].startswith("1 entries of")
    assert "iemocap_test_fold_1.jsonl:4: Ses01F_impro01_F001: no utterance" in folds["notes"][0]


def test_emobox_round_trip(iemocap, tmp_path: Path) -> None:
    folds = import_emobox(write_emobox_iemocap(tmp_path / "in"), iemocap)
    written = export_emobox(folds, iemocap, tmp_path / "out")
    assert tmp_path / "out" / "fold_2" / "iemocap_test_fold_2.jsonl" in written
    first = json.loads((tmp_path / "out/fold_2/iemocap_test_fold_2.jsonl").read_text().splitlines()[0])
    assert first == {
        "key": "iemocap-Ses02F_impro02_F000",
        "dataset": "iemocap",
        "wav": iemocap["wav.scp"]["Ses02F_impro02_F000"],
        "type": "raw",
        "sample_rate": 16000,
        "num_frame": 8000.0,
        "task": "category",
        "length": 0.5,
        "emo": "sad",
        "channel": 1,
    }
    keyed = json.loads((tmp_path / "out/fold_2/iemocap_test_fold_2.json").read_text())
    assert keyed["iemocap-Ses02F_impro02_M000"]["emo"] == "neu"
    again = import_emobox(tmp_path / "out", iemocap)
    assert [{p: f[p] for p in ("name", "train", "valid", "test")} for f in again["folds"]] == [
        {p: f[p] for p in ("name", "train", "valid", "test")} for f in folds["folds"]
    ]


def test_emobox_old_field_names_and_file_keys(tmp_path: Path) -> None:
    prepare("emodb", make_emodb(tmp_path / "emodb"), tmp_path / "data")
    data = read_data_dir(tmp_path / "data")
    fold = tmp_path / "emobox" / "emodb" / "fold_1"
    fold.mkdir(parents=True)
    line = '{{"key": "emodb-{0}", "dataset": "emodb", "audio": "downloads/emodb/wav/{0}.wav", "type": "raw", "label": "{1}"}}'
    (fold / "emodb_train_fold_1.jsonl").write_text(
        line.format("03a01Fa", "happy") + "\n" + line.format("08a01Na", "neutral")
    )
    (fold / "emodb_test_fold_1.jsonl").write_text(line.format("16b03Tb", "sad") + "\n")
    folds = import_emobox(fold.parent, data)
    assert folds["folds"][0]["train"] == ["emodb03-03a01Fa", "emodb08-08a01Na"]
    assert folds["folds"][0]["test_speakers"] == ["emodb16"]
    export_emobox(folds, data, tmp_path / "out")
    keys = [
        json.loads(x)["key"]
        for x in (tmp_path / "out/fold_1/emodb_train_fold_1.jsonl").read_text().splitlines()
    ]
    assert keys == ["emodb-03a01Fa", "emodb-08a01Na"]


def superb_sample(session: int) -> dict[str, dict]:
    """s3prl's meta data for the fold testing ``session``, as its pre_process writes it."""

    def entries(utts):
        return [
            {"path": str(wav_of(Path(""), u)), "label": UTTS[u][1], "speaker": u.split("_")[0]}
            for u in sorted(utts)
        ]

    labels = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
    return {
        "train": {"labels": labels, "meta_data": entries(u for u in UTTS if int(u[3:5]) != session)},
        "test": {"labels": labels, "meta_data": entries(u for u in UTTS if int(u[3:5]) == session)},
    }


def test_superb_import_and_export_match_the_real_format(iemocap, tmp_path: Path) -> None:
    meta = tmp_path / "meta_data"
    for session in (1, 2, 3):
        for part, content in superb_sample(session).items():
            file = meta / f"Session{session}" / f"{part}_meta_data.json"
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(content))
    assert superb_sample(1)["test"]["meta_data"][0] == {
        "path": "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav",
        "label": "neu",
        "speaker": "Ses01F",
    }
    folds = import_superb(meta, iemocap)
    assert folds["protocol"] == "superb" and [f["name"] for f in folds["folds"]] == [
        "fold1",
        "fold2",
        "fold3",
    ]
    assert folds["folds"][1]["test"] == ["Ses02F_impro02_F000", "Ses02F_impro02_M000"]
    assert folds["folds"][1]["test_speakers"] == ["Ses02F", "Ses02M"]
    export_superb(folds, iemocap, tmp_path / "out")
    for session in (1, 2, 3):
        for part, content in superb_sample(session).items():
            assert (
                json.loads((tmp_path / "out" / f"Session{session}" / f"{part}_meta_data.json").read_text())
                == content
            )


def test_not_a_fold_dir(iemocap, tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="not an EmoBox dataset dir"):
        import_emobox(tmp_path, iemocap)
    with pytest.raises(SertkError, match="not an s3prl emotion meta_data dir"):
        import_superb(tmp_path, iemocap)
    bad = tmp_path / "bad" / "fold_1"
    bad.mkdir(parents=True)
    (bad / "iemocap_train_fold_1.jsonl").write_text(emobox_line("Ses01F_impro01_F000", "neu") + "\n{oops\n")
    with pytest.raises(SertkError, match="iemocap_train_fold_1.jsonl:2: invalid JSON"):
        import_emobox(bad.parent, iemocap)
