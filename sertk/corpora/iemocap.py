"""IEMOCAP preparation: an ``IEMOCAP_full_release`` tree -> a Kaldi-style data dir.

Corpus layout (Busso et al., 2008, "IEMOCAP: interactive emotional dyadic motion capture database")::

    IEMOCAP_full_release/
      Session1 ... Session5/
        sentences/wav/<dialog>/<utt>.wav        one file per utterance (16 kHz mono)
        dialog/EmoEvaluation/<dialog>.txt       labels; sub-folders (Categorical/, Attribute/,
                                                Self-evaluation/) hold per-rater copies and are not read
        dialog/transcriptions/<dialog>.txt      ``<utt> [start-end]: words``

An EmoEvaluation file is a ``%`` header line and blocks separated by blank lines. A block opens with the
summary line ``[6.2901 - 8.2357] <utt> <code> [V, A, D]`` followed by rater lines: ``C-E2: Neutral; ()``
(categorical votes of external evaluator E2; several labels possible), ``C-F1:``/``C-M1:`` (the actors'
self-ratings, not votes) and ``A-E3: val 3; act 2; dom 2; ()`` (dimensional ratings). Dialog names such as
``Ses03M_impro05a`` and ``Ses05M_script01_1b`` break fixed-index parsing, so every line is parsed with
whitespace-tolerant regexes. The speaker is the session plus the first letter of the last ``_`` token of
the utterance id (``Ses01F_impro01_M003`` is the male actor of session 1, not the female one).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sertk.corpora.common import (
    Candidate,
    CorpusSpec,
    PrepReport,
    build_tables,
    finish,
    visible,
)
from sertk.corpora.run import run_prep
from sertk.errors import SertkError
from sertk.utils import console

NAME = "iemocap"
TITLE = "IEMOCAP"
# Bump when prep writes something else from the same tree and options (the prep record names it).
# 2: a record misfiled in an earlier session no longer makes its own session's record a duplicate.
VERSION = 2
DEFAULT_CLASSES = "neu,hap+exc,ang,sad"
LABEL_CODES = ("neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
CATEGORY_CODES = {
    "neutral": "neu",
    "happiness": "hap",
    "excited": "exc",
    "anger": "ang",
    "sadness": "sad",
    "frustration": "fru",
    "surprise": "sur",
    "fear": "fea",
    "disgust": "dis",
    "other": "oth",
}
STYLES = ("all", "impro", "script")
OPTIONS = {"style": ("all", STYLES)}
SESSION_DIR = re.compile(r"Session(\d+)")
# "[6.2901 - 8.2357]  Ses01F_impro01_F000  neu  [2.5000, 2.5000, 2.5000]", any whitespace between fields.
SUMMARY_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+(?P<utt>\S+)\s+(?P<code>\S+)\s+"
    r"\[\s*(?P<v>-?\d+(?:\.\d*)?)\s*,\s*(?P<a>-?\d+(?:\.\d*)?)\s*,\s*(?P<d>-?\d+(?:\.\d*)?)\s*\]\s*$"
)
# Rater lines: "C-E2:", "C-F1:", "A-E3:" ...; C- = categorical, E = external evaluator.
RATER_LINE = re.compile(r"^(?P<kind>[A-Z])-(?P<rater>[A-Z]+\d*)\s*:(?P<body>.*)$")
UTT_ID = re.compile(r"^Ses(?P<session>\d\d)[FM]_\S*_(?P<gender>[FM])[^_\s]*$")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me." (the time stamp is missing on some real lines).
TRANSCRIPT_LINE = re.compile(r"^(?P<utt>Ses[^\s:\[]+)\s*(?:\[[^\]]*\])?\s*:?\s*(?P<text>.*)$")


@dataclass
class UttLabel:
    """One utterance record of an EmoEvaluation file."""

    utt: str
    code: str
    start: float
    end: float
    vad: tuple[float, float, float]
    votes: list[list[str]]
    path: Path
    line: int
    unrecognised_votes: list[str] = field(default_factory=list)

    @property
    def dialog(self) -> str:
        return self.utt.rsplit("_", 1)[0]

    @property
    def speaker(self) -> str:
        return speaker_of(self.utt)

    @property
    def gender(self) -> str:
        return self.utt.rsplit("_", 1)[1][0]

    @property
    def style(self) -> str:
        return "impro" if "impro" in self.dialog else "script"


def speaker_of(utt: str) -> str:
    """``Ses01F_impro01_M003`` -> ``Ses01M``: session prefix + the letter of the last id token."""
    return utt[:5] + utt.rsplit("_", 1)[1][0]


def parse_votes(body: str) -> tuple[list[str], list[str]]:
    """The body of a ``C-E2:`` line -> (label codes, unrecognised label names).

    ``Frustration; Anger; (angry)`` -> ``["fru", "ang"]``; ``Other:annoyed;`` -> ``["oth"]``.
    """
    # The rater's free-text comment sits in trailing parentheses and may itself contain ";".
    labels_part = body.split("(", 1)[0]
    codes: list[str] = []
    unknown: list[str] = []
    for item in labels_part.split(";"):
        name = item.split(":", 1)[0].strip()
        if not name:
            continue
        # "Neutral state" is how the Categorical/ copies spell it; the first word is the category.
        code = CATEGORY_CODES.get(name.split()[0].lower())
        if code is None:
            unknown.append(name)
        elif code not in codes:
            codes.append(code)
    return codes, unknown


def parse_emo_evaluation(path: Path) -> tuple[list[UttLabel], list[str]]:
    """Parse one EmoEvaluation file -> (utterance records, problems as ``file:line: reason``).

    Records with a malformed summary line, an unknown label code, an id that names no speaker or an id
    seen earlier in the file are left out and reported. Self-ratings (``C-F1``/``C-M1``) are ignored; a
    categorical line of an external rater with no recognisable label contributes no vote (it is kept in
    ``unrecognised_votes`` so that prep can note it).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return [], [f"{path}: cannot read ({err.strerror})"]
    records: list[UttLabel] = []
    problems: list[str] = []
    seen: set[str] = set()
    current: UttLabel | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        rater = RATER_LINE.match(line)
        if rater:
            if current is not None and rater["kind"] == "C" and rater["rater"].startswith("E"):
                codes, unknown = parse_votes(rater["body"])
                if codes:
                    current.votes.append(codes)
                else:
                    current.unrecognised_votes.append(f"{rater['rater']}:{rater['body'].strip()}")
            continue
        current = None
        summary = SUMMARY_LINE.match(line)
        if summary is None:
            problems.append(f"{path}:{lineno}: malformed summary line {line[:60]!r}")
            continue
        utt, code = summary["utt"], summary["code"]
        if code not in LABEL_CODES:
            problems.append(f"{path}:{lineno}: {utt}: unknown label code {code!r}")
            continue
        if not UTT_ID.match(utt):
            problems.append(f"{path}:{lineno}: {utt}: utterance id does not name a speaker (SesNNx_..._Fnnn)")
            continue
        if utt in seen:
            problems.append(f"{path}:{lineno}: {utt}: duplicate utterance id")
            continue
        seen.add(utt)
        vad = (float(summary["v"]), float(summary["a"]), float(summary["d"]))
        current = UttLabel(utt, code, float(summary["start"]), float(summary["end"]), vad, [], path, lineno)
        records.append(current)
    return records, problems


def read_transcriptions(path: Path, report: PrepReport) -> dict[str, str]:
    """``<utt> [start-end]: words`` lines -> {utt: words}; irregular lines are tolerated or ignored.

    An unreadable file is reported (its turns keep empty text), never silently taken as empty.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        note = f"{path}: cannot read the transcriptions ({err.strerror}): its turns get empty text"
        report.notes.append(note)
        console.print(note, markup=False, soft_wrap=True)
        return {}
    texts: dict[str, str] = {}
    for line in lines:
        match = TRANSCRIPT_LINE.match(line.strip())
        if match:
            # Kaldi tables are one line per id, so any stray whitespace run becomes one space.
            texts[match["utt"]] = " ".join(match["text"].split())
    return texts


def find_sessions(root: Path) -> list[tuple[int, Path]]:
    """The ``SessionN`` dirs of an IEMOCAP tree; SertkError saying what is missing if it is not one."""
    if not root.exists():
        raise SertkError(f"{root}: IEMOCAP root not found")
    if not root.is_dir():
        raise SertkError(f"{root}: IEMOCAP root is not a directory")
    try:
        entries = list(root.iterdir())
    except OSError as err:
        raise SertkError(f"{root}: cannot list the IEMOCAP root ({err.strerror})") from None
    sessions = sorted((int(m[1]), p) for p in entries if p.is_dir() and (m := SESSION_DIR.fullmatch(p.name)))
    if not sessions:
        hint = ""
        if (root / "IEMOCAP_full_release").is_dir():
            hint = f" (did you mean {root / 'IEMOCAP_full_release'}?)"
        raise SertkError(f"{root}: not an IEMOCAP_full_release tree: no Session1..Session5 directories{hint}")
    for _, session in sessions:
        for sub in ("dialog/EmoEvaluation", "sentences/wav"):
            if not (session / sub).is_dir():
                raise SertkError(f"{root}: not an IEMOCAP_full_release tree: {session.name}/{sub} is missing")
    return sessions


def visible_files(folder: Path) -> list[Path]:
    """The ``*.txt`` files directly in ``folder``, skipping sub-folders and dot files."""
    return visible(folder.glob("*.txt"))


def input_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(EmoEvaluation and transcription files, every sentence wav) of an IEMOCAP tree."""
    labels: list[Path] = []
    audio: list[Path] = []
    for _, session in find_sessions(Path(root)):
        labels += visible_files(session / "dialog" / "EmoEvaluation")
        labels += visible_files(session / "dialog" / "transcriptions")
        audio += sorted((session / "sentences" / "wav").glob("*/[!.]*.wav"))
    return labels, audio


def prepare_iemocap(root: Path, out: Path, classes: str = DEFAULT_CLASSES, style: str = "all") -> PrepReport:
    """Parse an ``IEMOCAP_full_release`` tree ``root`` (layout: the module docstring) into the data dir ``out``.

    Utterances whose label is outside ``classes`` or whose dialog is not of ``style`` are filtered; those
    with a problem (bad wav, malformed or unknown summary line, duplicate id) are reported one line each
    and skipped. Raises SertkError if ``root`` is not an IEMOCAP tree or nothing usable is left. An
    up-to-date ``out`` (same tree, options and code) is left as it is (``report.up_to_date``).
    """
    return run_prep(SPEC, root, out, classes=classes, style=style)


def _session_candidates(
    report: PrepReport, number: int, session: Path, seen: dict[str, str]
) -> list[UttLabel]:
    """The usable EmoEvaluation records of one session (problems reported, duplicates across files too)."""
    records: list[UttLabel] = []
    for emo_file in visible_files(session / "dialog" / "EmoEvaluation"):
        parsed, file_problems = parse_emo_evaluation(emo_file)
        for message in file_problems:
            report.total += 1
            report.problem(message)
        for rec in parsed:
            report.total += 1
            if rec.utt in seen:
                report.problem(
                    f"{rec.path}:{rec.line}: {rec.utt}: duplicate utterance id (first in {seen[rec.utt]})"
                )
            elif int(rec.utt[3:5]) != number:
                report.problem(
                    f"{rec.path}:{rec.line}: {rec.utt}: utterance of Ses{rec.utt[3:5]} in {session.name}"
                )
            else:
                records.append(rec)
                # Only an accepted record holds its id: a copy misfiled in an earlier session must not
                # make the record in its own session a duplicate.
                seen[rec.utt] = f"{rec.path.name}:{rec.line}"
    return records


def build(
    root: Path, report: PrepReport, classes: list[str], class_map: dict[str, str], style: str
) -> tuple[dict[str, dict[str, str]], dict]:
    seen: dict[str, str] = {}
    records: list[UttLabel] = []
    candidates: list[Candidate] = []
    unlabelled_wavs = 0
    for number, session in find_sessions(root):
        wav_dir = session / "sentences" / "wav"
        transcripts: dict[str, str] = {}
        for file in visible_files(session / "dialog" / "transcriptions"):
            transcripts.update(read_transcriptions(file, report))
        session_records = _session_candidates(report, number, session, seen)
        records += session_records
        for rec in session_records:
            candidates.append(
                Candidate(
                    utt=rec.utt,
                    wav=wav_dir / rec.dialog / f"{rec.utt}.wav",
                    speaker=rec.speaker,
                    gender=rec.gender,
                    label=rec.code,
                    where=f"{rec.path}:{rec.line}",
                    text=transcripts.get(rec.utt, ""),
                    votes=" ".join(",".join(v) for v in rec.votes),
                    vad=" ".join(f"{x:.4f}" for x in rec.vad),
                    session=session.name,
                    style=rec.style,
                    filtered_by=None if style in ("all", rec.style) else f"--style {style}",
                )
            )
        unlabelled_wavs += sum(1 for w in wav_dir.glob("*/[!.]*.wav") if w.stem not in seen)
    tables = build_tables(report, candidates, class_map)
    kept = tables["utt2emo"]
    report.sessions = len(set(tables.get("utt2session", {}).values()))
    no_votes = sum(len(rec.unrecognised_votes) for rec in records if rec.utt in kept)
    if no_votes:
        report.notes.append(
            f"{no_votes} external rater lines of kept utterances gave no recognisable label (no vote)"
        )
    if unlabelled_wavs:
        report.notes.append(f"{unlabelled_wavs} wavs have no EmoEvaluation entry and were ignored")
    empty_votes = sum(1 for v in tables.get("utt2votes", {}).values() if not v)
    if empty_votes:
        report.notes.append(f"{empty_votes} kept utterances have no external rater votes (empty utt2votes)")
    return finish(report, tables, root, classes, class_map, style=style)


SPEC = CorpusSpec.of(sys.modules[__name__])
