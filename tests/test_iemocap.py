"""IEMOCAP prep: the EmoEvaluation parser, prep counts and every bad-input case."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sertk.corpora import synthetic
from sertk.corpora.common import PrepReport, parse_class_spec
from sertk.corpora.iemocap import (
    LABEL_CODES,
    parse_emo_evaluation,
    parse_votes,
    prepare_iemocap,
    read_transcriptions,
    speaker_of,
)
from sertk.data import read_data_dir, validate_data_dir
from sertk.data.labels import agreement, soft_labels
from sertk.data.labels import parse_votes as parse_vote_tokens
from sertk.errors import SertkError

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def block(utt: str, code: str, votes: list[str], start: float = 1.0, extra: str = "") -> str:
    """One EmoEvaluation block: summary line, external votes C-E1.., a self-rating and an A- line."""
    lines = [f"[{start:.4f} - {start + 1:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 3.5000]"]
    lines += [f"C-E{i}:\t{v}\t()" for i, v in enumerate(votes, 1)]
    lines.append(f"C-{utt.rsplit('_', 1)[1][0]}1:\tAnger;\t()")
    lines.append("A-E1:\tval 3; act 2; dom  2;\t()")
    return "\n".join(lines) + extra + "\n\n"


def write_wav(path: Path, seconds: float = 0.25, rate: int = 16000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (int(seconds * rate), channels) if channels > 1 else int(seconds * rate)
    sf.write(str(path), np.zeros(shape, dtype=np.int16), rate, subtype="PCM_16")


def make_tree(root: Path, dialogs: dict[str, list[tuple[str, str, list[str]]]], wavs: bool = True) -> Path:
    """A miniature IEMOCAP_full_release: {dialog: [(utt, code, votes)]} -> EmoEvaluation, wavs, transcripts."""
    for dialog, utts in dialogs.items():
        session = root / f"Session{int(dialog[3:5])}"
        emo = session / "dialog" / "EmoEvaluation"
        emo.mkdir(parents=True, exist_ok=True)
        (session / "sentences" / "wav").mkdir(parents=True, exist_ok=True)
        text = HEADER + "".join(block(u, c, v, start=i) for i, (u, c, v) in enumerate(utts))
        (emo / f"{dialog}.txt").write_text(text)
        trans = session / "dialog" / "transcriptions"
        trans.mkdir(parents=True, exist_ok=True)
        (trans / f"{dialog}.txt").write_text(
            "".join(f"{u} [001.0000-002.0000]: words of {u}.\n" for u, _, _ in utts)
            + f"{dialog}_MXX0 [003.0-004.0]: no wav for this turn\n"
        )
        if wavs:
            for utt, _, _ in utts:
                write_wav(session / "sentences" / "wav" / dialog / f"{utt}.wav")
    return root


DIALOGS = {
    "Ses01F_impro01": [
        ("Ses01F_impro01_F000", "neu", ["Neutral;", "Neutral; Sadness;", "Other:annoyed;"]),
        ("Ses01F_impro01_M000", "exc", ["Excited;", "Happiness;"]),
        ("Ses01F_impro01_M001", "xxx", ["Frustration;", "Anger;"]),
    ],
    "Ses01M_script01_1": [
        ("Ses01M_script01_1_F000", "ang", ["Anger;"]),
        ("Ses01M_script01_1_M000", "sad", ["Sadness;"]),
    ],
    "Ses02F_impro02": [
        ("Ses02F_impro02_F000", "hap", ["Happiness;"]),
        ("Ses02F_impro02_M000", "fru", ["Frustration;"]),
        ("Ses02F_impro02_M001", "ang", ["Anger;", "Anger; Frustration;"]),
    ],
    "Ses03M_impro05a": [("Ses03M_impro05a_F000", "sad", ["Sadness;"])],
    "Ses05M_script01_1b": [("Ses05M_script01_1b_M000", "neu", ["Neutral;"])],
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "IEMOCAP_full_release", DIALOGS)


def test_parser_blocks_votes_and_self_ratings(tmp_path: Path) -> None:
    path = tmp_path / "Ses03M_impro05a.txt"
    path.write_text(
        (
            HEADER
            + block("Ses03M_impro05a_F000", "fru", ["Frustration; Anger;", "Other:annoyed;", "Neutral;"])
            + "[10.0 - 12.5]   Ses03M_impro05a_M001 \t neu\t[2.0, 2.5000,3.0]   \n"
            + "C-E2:  Neutral state;   (calm; quiet)\nC-E4:\tunsure;\t()\n"
        ).replace("\n", "\r\n")
    )
    records, problems = parse_emo_evaluation(path)
    assert problems == []
    assert [r.utt for r in records] == ["Ses03M_impro05a_F000", "Ses03M_impro05a_M001"]
    first, second = records
    # Self-rating "C-F1: Anger" is not a vote; multi-label votes stay together in rater order.
    assert first.votes == [["fru", "ang"], ["oth"], ["neu"]]
    assert (first.code, first.dialog, first.speaker, first.gender) == (
        "fru",
        "Ses03M_impro05a",
        "Ses03F",
        "F",
    )
    assert second.votes == [["neu"]]
    assert second.unrecognised_votes == ["E4:unsure;\t()"]
    assert (second.start, second.end, second.vad) == (10.0, 12.5, (2.0, 2.5, 3.0))
    assert second.speaker == "Ses03M" and second.style == "impro"


def test_parser_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_text(
        HEADER
        + block("Ses01F_impro01_F000", "neu", ["Neutral;"])
        + "[1.0 - 2.0]\tSes01F_impro01_F001\tneu\n\n"  # no [V, A, D]
        + block("Ses01F_impro01_F002", "joy", ["Happiness;"])
        + block("Ses01F_impro01_F000", "sad", ["Sadness;"])
        + block("Ses01F_impro01_F003", "ang", ["Anger;"])
    )
    records, problems = parse_emo_evaluation(path)
    assert [r.utt for r in records] == ["Ses01F_impro01_F000", "Ses01F_impro01_F003"]
    assert records[0].code == "neu" and records[1].votes == [["ang"]]
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:8: malformed summary line")
    assert problems[1].startswith(f"{path}:10: Ses01F_impro01_F002: unknown label code 'joy'")
    assert problems[2].startswith(f"{path}:15: Ses01F_impro01_F000: duplicate utterance id")


def test_transcriptions_tolerate_irregular_lines(tmp_path: Path) -> None:
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_text(
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\r\n"
        "Ses01F_impro01_M000: No time stamp  here.\n"
        "Ses01F_impro01_M001 [010.0-011.0] no colon\n"
        "Ses01F_impro01_MXX0 [012.0-013.0]: [LAUGHTER]\n"
        "M: stray line\n"
    )
    report = PrepReport(out=tmp_path)
    assert read_transcriptions(path, report) == {
        "Ses01F_impro01_F000": "Excuse me.",
        "Ses01F_impro01_M000": "No time stamp here.",
        "Ses01F_impro01_M001": "no colon",
        "Ses01F_impro01_MXX0": "[LAUGHTER]",
    }
    assert not report.notes


def test_an_unreadable_transcription_file_is_reported(tmp_path: Path) -> None:
    report = PrepReport(out=tmp_path)
    folder = tmp_path / "Ses01F_impro01.txt"
    folder.mkdir()  # a directory where a text file is expected: unreadable
    assert read_transcriptions(folder, report) == {}
    assert len(report.notes) == 1 and "cannot read the transcriptions" in report.notes[0]


def test_votes_and_speakers() -> None:
    assert parse_votes(" Frustration; Anger;\t(angry; loud)") == (["fru", "ang"], [])
    assert parse_votes("Other:annoyed; Bored;") == (["oth"], ["Bored"])
    # One rater naming a category twice casts one vote for it.
    assert parse_votes(" Anger; Frustration; Anger; (angry)") == (["ang", "fru"], [])
    assert speaker_of("Ses01F_impro01_M003") == "Ses01M"
    assert speaker_of("Ses05M_script01_1b_F012") == "Ses05F"


def test_class_spec() -> None:
    classes, mapping = parse_class_spec("neu,hap+exc,ang,sad", LABEL_CODES)
    assert classes == ["neu", "hap", "ang", "sad"]
    assert mapping == {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    for bad, msg in [("neu,joy", "unknown label 'joy'"), ("neu,neu", "given twice"), ("neu,+exc", "empty")]:
        with pytest.raises(SertkError, match=msg):
            parse_class_spec(bad, LABEL_CODES)


def test_prep_writes_the_data_dir(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    report = prepare_iemocap(tree, out)
    # 10 utterances: xxx and fru are outside the 4 classes; exc merges into hap.
    assert (report.total, report.kept, report.filtered, report.skipped) == (10, 8, 2, 0)
    assert report.class_counts == {"neu": 2, "hap": 2, "ang": 2, "sad": 2}
    assert (report.sessions, report.speakers) == (4, 6)
    assert "10 utterances: kept 8 (neu 2 hap 2 ang 2 sad 2), filtered 2, skipped 0" in report.summary()
    data = read_data_dir(out)
    assert data["utt2spk"]["Ses01F_impro01_M000"] == "Ses01M"
    assert data["utt2spk"]["Ses05M_script01_1b_M000"] == "Ses05M"
    assert data["utt2emo"]["Ses01F_impro01_M000"] == "hap"
    assert data["utt2votes"]["Ses01F_impro01_F000"] == "neu neu,sad oth"
    assert data["utt2votes"]["Ses02F_impro02_M001"] == "ang ang,fru"
    assert data["utt2vad"]["Ses02F_impro02_F000"] == "2.5000 3.0000 3.5000"
    assert data["utt2style"]["Ses01M_script01_1_F000"] == "script"
    assert data["utt2session"]["Ses03M_impro05a_F000"] == "Session3"
    assert data["utt2gender"]["Ses03M_impro05a_F000"] == "F"
    assert data["utt2dur"]["Ses02F_impro02_F000"] == "0.2500"
    assert data["text"]["Ses02F_impro02_F000"] == "words of Ses02F_impro02_F000."
    wav = Path(data["wav.scp"]["Ses03M_impro05a_F000"])
    assert (
        wav.is_absolute() and wav == tree / "Session3/sentences/wav/Ses03M_impro05a/Ses03M_impro05a_F000.wav"
    )
    assert data.meta["classes"] == ["neu", "hap", "ang", "sad"] and data.meta["synthetic"] is False
    assert data.meta["class_map"]["exc"] == "hap" and data.meta["root"] == str(tree)
    assert validate_data_dir(out).endswith("6 speakers, neu 2 hap 2 ang 2 sad 2")


def test_prep_style_and_classes(tree: Path, tmp_path: Path) -> None:
    report = prepare_iemocap(tree, tmp_path / "d", classes="neu,hap,ang,sad,fru", style="impro")
    assert report.class_counts == {"neu": 1, "hap": 1, "ang": 1, "sad": 1, "fru": 1}
    assert (report.kept, report.filtered) == (5, 5)
    assert set(read_data_dir(tmp_path / "d")["utt2style"].values()) == {"impro"}
    with pytest.raises(SertkError, match="--style 'improv'"):
        prepare_iemocap(tree, tmp_path / "e", style="improv")


def test_prep_ignores_emoevaluation_subfolders(tree: Path, tmp_path: Path) -> None:
    cat = tree / "Session1/dialog/EmoEvaluation/Categorical"
    cat.mkdir()
    (cat / "Ses01F_impro01_e2_cat.txt").write_text("Ses01F_impro01_F000 :Neutral state; ()\n")
    (tree / "Session1/dialog/EmoEvaluation/Attribute").mkdir()
    (tree / "Session1/dialog/EmoEvaluation/._Ses01F_impro01.txt").write_bytes(
        b"\x00\x05\x16\x07 resource fork"
    )
    report = prepare_iemocap(tree, tmp_path / "d")
    assert (report.total, report.skipped, report.problems) == (10, 0, [])


def test_prep_not_an_iemocap_tree(tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="IEMOCAP root not found"):
        prepare_iemocap(tmp_path / "nope", tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SertkError, match="no Session1..Session5 directories"):
        prepare_iemocap(tmp_path / "empty", tmp_path / "d")
    (tmp_path / "half" / "Session1" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    with pytest.raises(SertkError, match="Session1/sentences/wav is missing"):
        prepare_iemocap(tmp_path / "half", tmp_path / "d")
    assert not (tmp_path / "d").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SertkError, match="not a directory"):
        prepare_iemocap(tmp_path / "file", tmp_path / "d")


def test_prep_bad_wavs_are_reported_and_skipped(tree: Path, tmp_path: Path, capsys) -> None:
    wav_dir = tree / "Session1/sentences/wav"
    (wav_dir / "Ses01F_impro01/Ses01F_impro01_F000.wav").unlink()
    (wav_dir / "Ses01F_impro01/Ses01F_impro01_M000.wav").write_bytes(b"")
    truncated = wav_dir / "Ses01M_script01_1/Ses01M_script01_1_F000.wav"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    (wav_dir / "Ses01M_script01_1/Ses01M_script01_1_M000.wav").write_bytes(b"not a wav file" * 10)
    write_wav(tree / "Session2/sentences/wav/Ses02F_impro02/Ses02F_impro02_F000.wav", rate=8000, channels=2)
    report = prepare_iemocap(tree, tmp_path / "d")
    assert (report.total, report.kept, report.skipped, report.filtered) == (10, 4, 4, 2)
    reasons = ["wav missing", "wav is empty", "wav truncated", "wav unreadable"]
    for problem, reason in zip(report.problems, reasons, strict=True):
        assert reason in problem and "EmoEvaluation/Ses01" in problem
    assert report.notes[0].startswith("1 wavs are stereo or not 16 kHz")
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(r in err for r in reasons)
    assert read_data_dir(tmp_path / "d")["utt2dur"]["Ses02F_impro02_F000"] == "0.2500"


def test_prep_duplicates_across_files_and_bad_summary(tree: Path, tmp_path: Path) -> None:
    emo = tree / "Session1/dialog/EmoEvaluation"
    with open(emo / "Ses01M_script01_1.txt", "a") as f:
        f.write(block("Ses01F_impro01_F000", "neu", ["Neutral;"]))
        f.write("[1.0 - 2.0] Ses01M_script01_1_F009 neu [2.5, 2.5]\n\n")
        f.write(block("Ses01M_script01_1_F010", "happy", ["Happiness;"]))
    report = prepare_iemocap(tree, tmp_path / "d")
    assert (report.total, report.kept, report.skipped) == (13, 8, 3)
    assert any("duplicate utterance id (first in Ses01F_impro01.txt" in p for p in report.problems)
    assert any("malformed summary line" in p for p in report.problems)
    assert any("unknown label code 'happy'" in p for p in report.problems)


def test_prep_nothing_usable(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(SertkError, match="nothing usable left .10 utterances seen, 10 filtered"):
        prepare_iemocap(tree, tmp_path / "d", classes="fea,dis")
    assert not (tmp_path / "d").exists()
    bare = make_tree(tmp_path / "bare", {"Ses01F_impro01": DIALOGS["Ses01F_impro01"]}, wavs=False)
    with pytest.raises(SertkError, match="3 skipped"):
        prepare_iemocap(bare, tmp_path / "d")


def test_prep_synthetic_tiny_tree(tmp_path: Path) -> None:
    """Prep counts on the generator's tiny tree equal the labels the generator planned."""
    root = tmp_path / "IEMOCAP_full_release"
    synthetic.generate_corpus(root, size="tiny", seed=0)
    plan = synthetic.plan_corpus("tiny", 0)
    report = prepare_iemocap(root, tmp_path / "data")
    mapping = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    expected = Counter(mapping[u.label] for u in plan if u.label in mapping)
    assert report.synthetic is True and report.skipped == 0 and report.total == len(plan)
    assert report.class_counts == {c: expected[c] for c in ("neu", "hap", "ang", "sad")}
    data = read_data_dir(tmp_path / "data")
    kept = [u for u in plan if u.label in mapping]
    assert data.utts == sorted(u.utt for u in kept)
    for u in kept:
        assert data["utt2spk"][u.utt] == u.speaker and data["utt2emo"][u.utt] == mapping[u.label]
        assert data["utt2votes"][u.utt] == " ".join(",".join(v) for v in u.votes)
        assert (data["utt2style"][u.utt], data["utt2session"][u.utt]) == (u.style, f"Session{u.session}")
        assert [float(x) for x in data["utt2vad"][u.utt].split()] == list(u.vad)
    assert json.loads((tmp_path / "data/corpus.json").read_text())["synthetic"] is True


def test_prep_redoes_when_a_label_or_transcript_changes(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    prepare_iemocap(tree, out)
    assert prepare_iemocap(tree, out).up_to_date
    emo = tree / "Session1/dialog/EmoEvaluation/Ses01M_script01_1.txt"
    emo.write_text(emo.read_text().replace("Ses01M_script01_1_F000\tang", "Ses01M_script01_1_F000\tsad"))
    assert not prepare_iemocap(tree, out).up_to_date
    assert read_data_dir(out)["utt2emo"]["Ses01M_script01_1_F000"] == "sad"
    trans = tree / "Session2/dialog/transcriptions/Ses02F_impro02.txt"
    trans.write_text(trans.read_text().replace("words of Ses02F_impro02_F000.", "Hello there."))
    assert not prepare_iemocap(tree, out).up_to_date
    assert read_data_dir(out)["text"]["Ses02F_impro02_F000"] == "Hello there."
    assert not prepare_iemocap(tree, out, style="impro").up_to_date
    assert prepare_iemocap(tree, out, style="impro").up_to_date


def test_prep_refuses_an_utterance_filed_under_another_session(tree: Path, tmp_path: Path) -> None:
    """A Ses01 record in Session2's EmoEvaluation is reported and skipped: its session decides its fold."""
    emo = tree / "Session2/dialog/EmoEvaluation/Ses02F_impro02.txt"
    with open(emo, "a") as f:
        f.write(block("Ses01F_impro09_F000", "ang", ["Anger;"], start=9.0))
    report = prepare_iemocap(tree, tmp_path / "d")
    assert report.skipped == 1 and "Ses01F_impro09_F000" not in read_data_dir(tmp_path / "d").utts
    assert any(
        p.endswith("Ses01F_impro09_F000: utterance of Ses01 in Session2") and "Ses02F_impro02.txt" in p
        for p in report.problems
    )


def test_a_copy_misfiled_in_an_earlier_session_does_not_shadow_the_record(tree: Path, tmp_path: Path) -> None:
    """Session1 (read first) holds a stray copy of a Session2 record: the copy is skipped, the record kept."""
    emo = tree / "Session1/dialog/EmoEvaluation/Ses01M_script01_1.txt"
    with open(emo, "a") as f:
        f.write(block("Ses02F_impro02_F000", "hap", ["Happiness;"], start=9.0))
    report = prepare_iemocap(tree, tmp_path / "d")
    assert report.skipped == 1 and "Ses02F_impro02_F000" in read_data_dir(tmp_path / "d").utts
    assert [p for p in report.problems if "Ses02F_impro02_F000" in p] == [
        f"{emo}:13: Ses02F_impro02_F000: utterance of Ses02 in Session1"
    ]


def test_parser_rejected_ids_and_their_rater_lines(tmp_path: Path) -> None:
    """An id without an F/M speaker letter is reported; the rater lines under it vote for nothing."""
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_text(
        HEADER  # lines 1-2
        + block("Ses01F_impro01_F000", "neu", ["Neutral;"])  # lines 3-7
        + "[2.0 - 3.0]\tSes01F_impro01_X001\tang\t[2.5, 2.5, 2.5]\nC-E1:\tAnger;\t()\nC-E2:\tAnger;\t()\n\n"
        + "[3.0 - 4.0]\tSes01F_impro01\tsad\t[2.5, 2.5, 2.5]\nC-E1:\tSadness;\t()\n\n"  # lines 12-14
        + block("Ses01F_impro01_M002", "hap", ["Happiness;"], start=5.0)  # lines 15-19
        + block("Ses01X_impro01_F003", "neu", ["Neutral;"], start=6.0)  # line 20: X is no actor's letter
    )
    records, problems = parse_emo_evaluation(path)
    assert [(r.utt, r.line) for r in records] == [("Ses01F_impro01_F000", 3), ("Ses01F_impro01_M002", 15)]
    # F000 keeps its one vote: neither the Anger lines of X001 nor the A-E1 (dimensional) line count.
    assert records[0].votes == [["neu"]] and records[0].unrecognised_votes == []
    assert [p.split(": utterance id")[0] for p in problems] == [
        f"{path}:8: Ses01F_impro01_X001",
        f"{path}:12: Ses01F_impro01",
        f"{path}:20: Ses01X_impro01_F003",
    ]


def test_parser_accepts_every_iemocap_code_and_rejects_trailing_junk(tmp_path: Path) -> None:
    # The 11 summary codes of Busso et al. (2008), written out independently of LABEL_CODES.
    codes = ["neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"]
    path = tmp_path / "Ses02M_impro03.txt"
    path.write_text(
        HEADER
        + "".join(block(f"Ses02M_impro03_F{i:03d}", c, ["Neutral;"], start=i) for i, c in enumerate(codes))
        + "[20.0 - 21.0]\tSes02M_impro03_M000\tneu\t[2.5, 2.5, 2.5] 3.0\n\n"
    )
    records, problems = parse_emo_evaluation(path)
    assert [r.code for r in records] == codes
    assert len(problems) == 1 and "malformed summary line" in problems[0]


def test_parser_and_transcripts_tolerate_latin1_bytes(tmp_path: Path) -> None:
    emo = tmp_path / "emo.txt"
    emo.write_bytes(
        HEADER.encode()
        + b"[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\nC-E1:\tNeutral;\t(caf\xe9)\n"
    )
    records, problems = parse_emo_evaluation(emo)
    assert problems == [] and records[0].votes == [["neu"]]
    trans = tmp_path / "trans.txt"
    trans.write_bytes(b"Ses01F_impro01_F000 [001.0-002.0]: caf\xe9 au lait\n")
    # The undecodable byte becomes U+FFFD; the line is still read.
    assert read_transcriptions(trans, PrepReport(out=tmp_path)) == {
        "Ses01F_impro01_F000": "caf\ufffd au lait"
    }


def test_parser_reports_an_unreadable_file(tmp_path: Path) -> None:
    folder = tmp_path / "Ses01F_impro01.txt"
    folder.mkdir()
    records, problems = parse_emo_evaluation(folder)
    assert records == [] and len(problems) == 1 and problems[0].startswith(f"{folder}: cannot read")


def test_session_dirs_are_whole_names_and_need_both_subfolders(tree: Path, tmp_path: Path) -> None:
    (tree / "Session1_backup").mkdir()  # not a SessionN dir: ignored, not taken for Session1
    report = prepare_iemocap(tree, tmp_path / "d")
    assert (report.kept, report.sessions) == (8, 4)
    half = tmp_path / "half" / "Session1" / "sentences" / "wav"
    half.mkdir(parents=True)
    with pytest.raises(SertkError, match="Session1/dialog/EmoEvaluation is missing"):
        prepare_iemocap(tmp_path / "half", tmp_path / "e")


def test_the_parent_of_the_release_folder_gets_a_hint(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(SertkError, match=f"did you mean {tree}"):
        prepare_iemocap(tree.parent, tmp_path / "d")


def test_only_txt_files_of_emoevaluation_are_read(tree: Path, tmp_path: Path) -> None:
    emo = tree / "Session1/dialog/EmoEvaluation"
    # An editor's backup of a label file would duplicate every id of its dialog if it were read.
    (emo / "Ses01F_impro01.txt~").write_text((emo / "Ses01F_impro01.txt").read_text())
    (emo / "README").write_text("not a label file\n")
    report = prepare_iemocap(tree, tmp_path / "d")
    assert (report.total, report.kept, report.problems) == (10, 8, [])


def test_a_rewritten_wav_redoes_the_prep(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    prepare_iemocap(tree, out)
    write_wav(tree / "Session2/sentences/wav/Ses02F_impro02/Ses02F_impro02_F000.wav", seconds=0.5)
    assert not prepare_iemocap(tree, out).up_to_date
    assert read_data_dir(out)["utt2dur"]["Ses02F_impro02_F000"] == "0.5000"


def test_every_transcription_file_of_a_session_gives_text(tree: Path, tmp_path: Path) -> None:
    data = read_data_dir(prepare_iemocap(tree, tmp_path / "d").out)
    # Session1 has two dialogs: the texts of the first file (sorted) survive the second.
    assert data["text"]["Ses01F_impro01_F000"] == "words of Ses01F_impro01_F000."
    assert data["text"]["Ses01M_script01_1_F000"] == "words of Ses01M_script01_1_F000."


def test_a_third_copy_of_an_id_names_the_first(tree: Path, tmp_path: Path) -> None:
    emo = tree / "Session1/dialog/EmoEvaluation"
    with open(emo / "Ses01M_script01_1.txt", "a") as f:
        f.write(block("Ses01F_impro01_F000", "neu", ["Neutral;"], start=7.0))
    (emo / "Ses01M_script02_1.txt").write_text(HEADER + block("Ses01F_impro01_F000", "sad", ["Sadness;"]))
    report = prepare_iemocap(tree, tmp_path / "d")
    # The first copy is block 1 of Ses01F_impro01.txt: its summary is line 3 (after the header and a blank).
    dups = [p for p in report.problems if "duplicate utterance id" in p]
    assert len(dups) == 2 and all(p.endswith("(first in Ses01F_impro01.txt:3)") for p in dups)
    assert read_data_dir(tmp_path / "d")["utt2emo"]["Ses01F_impro01_F000"] == "neu"


def test_sessions_are_read_in_number_order_whatever_the_listing(
    tree: Path, tmp_path: Path, monkeypatch
) -> None:
    """Session1's own record wins over a copy misfiled in Session2, even when Session2 is listed first."""
    with open(tree / "Session2/dialog/EmoEvaluation/Ses02F_impro02.txt", "a") as f:
        f.write(block("Ses01F_impro01_F000", "sad", ["Sadness;"], start=9.0))
    listing = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self), reverse=True)))
    report = prepare_iemocap(tree, tmp_path / "d")
    assert read_data_dir(tmp_path / "d")["utt2emo"]["Ses01F_impro01_F000"] == "neu"
    assert report.skipped == 1 and "first in Ses01F_impro01.txt:3" in report.problems[0]


def test_prep_notes_count_unlabelled_wavs_and_missing_votes(tmp_path: Path) -> None:
    dialogs = dict(DIALOGS)
    # A kept utterance whose only rater line names nothing known, and a filtered (fru) one with such a line.
    dialogs["Ses04F_impro01"] = [
        ("Ses04F_impro01_F000", "neu", ["unsure;", "maybe;"]),
        ("Ses04F_impro01_M000", "fru", ["unsure;", "Frustration;"]),
    ]
    tree = make_tree(tmp_path / "IEMOCAP_full_release", dialogs)
    write_wav(tree / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F099.wav")  # no label record
    (tree / "Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav").write_bytes(b"\x00\x05")
    report = prepare_iemocap(tree, tmp_path / "d")
    assert report.kept == 9
    # Two rater lines (of one kept utterance) count; the filtered fru's line does not; nor does the ._ file.
    assert "2 external rater lines of kept utterances gave no recognisable label (no vote)" in report.notes
    assert "1 wavs have no EmoEvaluation entry and were ignored" in report.notes
    assert "1 kept utterances have no external rater votes (empty utt2votes)" in report.notes
    assert read_data_dir(tmp_path / "d")["utt2votes"]["Ses04F_impro01_F000"] == ""


def test_style_is_recorded_and_only_sessions_kept_count(tree: Path, tmp_path: Path) -> None:
    # Improvised dialogs are in Sessions 1, 2 and 3 only (Session5's one dialog is scripted).
    assert prepare_iemocap(tree, tmp_path / "d", style="impro").sessions == 3
    assert read_data_dir(tmp_path / "d").meta["style"] == "impro"
    prepare_iemocap(tree, tmp_path / "e")
    assert read_data_dir(tmp_path / "e").meta["style"] == "all"


def test_prep_votes_give_the_soft_labels_of_table5(tree: Path, tmp_path: Path) -> None:
    """utt2votes and class_map of a prepped dir -> soft labels (cnn_blstm_vtlp.txt §3.3), by hand."""
    data = read_data_dir(prepare_iemocap(tree, tmp_path / "d").out)
    classes = data.meta["classes"]  # neu hap ang sad
    utts = ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]
    targets, weights = soft_labels(
        [data["utt2votes"][u] for u in utts], [0, 1], classes, data.meta["class_map"]
    )
    # F000 "neu neu,sad oth": neu 1 + 1/2, sad 1/2; 2 of 3 raters' votes inside -> (0.75, 0, 0, 0.25), 2/3.
    # M000 "exc hap": exc counts for hap, both raters inside -> one-hot hap, weight 1.
    np.testing.assert_allclose(targets, [[0.75, 0, 0, 0.25], [0, 1, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(weights, [2 / 3, 1], rtol=1e-6)


def test_a_rater_vote_is_split_among_its_labels_before_merging() -> None:
    # "hap,exc,neu" on hap+exc: thirds to hap, exc (-> hap) and neu: hap 2/3, neu 1/3.
    targets, weights = soft_labels(
        ["hap,exc,neu"], [1], ["neu", "hap"], {"neu": "neu", "hap": "hap", "exc": "hap"}
    )
    np.testing.assert_allclose(targets, [[1 / 3, 2 / 3]], rtol=1e-6)
    np.testing.assert_allclose(weights, [1.0])
    # Empty names from stray commas are no labels.
    assert parse_vote_tokens("neu,,sad oth,") == [["neu", "sad"], ["oth"]]


def test_parser_strips_indented_and_blank_looking_lines(tmp_path: Path) -> None:
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_text(
        HEADER
        + "  [1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\n\tC-E1:\tNeutral;\t()\n \t\n"
        + block("Ses01F_impro01_M000", "ang", ["Anger;"])
    )
    records, problems = parse_emo_evaluation(path)
    assert problems == [] and [r.votes for r in records] == [[["neu"]], [["ang"]]]


def test_unanimous_means_every_rater_named_the_class_among_others() -> None:
    # Both raters name neu (the first one second, after hap): unanimous; "hap sad" for neu: ambiguous.
    out = agreement(["hap,neu neu", "hap sad"], np.array([0, 0]), ["neu", "hap", "sad"], {})
    assert out.tolist() == [1, 0]
