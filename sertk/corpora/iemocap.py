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

import os
import re
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sertk.data.datadir import DATA_FILES, write_data_dir
from sertk.errors import SertkError
from sertk.utils import console

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
MAX_CONSOLE_PROBLEMS = 200


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


@dataclass
class PrepReport:
    """What ``prepare_iemocap`` saw, kept, filtered and skipped."""

    out: Path
    sessions: int = 0
    speakers: int = 0
    total: int = 0
    kept: int = 0
    filtered: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    synthetic: bool = False

    def summary(self) -> str:
        counts = " ".join(f"{c} {n}" for c, n in self.class_counts.items())
        synth = " (SYNTHETIC corpus)" if self.synthetic else ""
        return (
            f"prep: {self.sessions} sessions, {self.speakers} speakers, {self.total} utterances: "
            f"kept {self.kept} ({counts}), filtered {self.filtered}, skipped {self.skipped} -> {self.out}{synth}"
        )


def speaker_of(utt: str) -> str:
    """``Ses01F_impro01_M003`` -> ``Ses01M``: session prefix + the letter of the last id token."""
    return utt[:5] + utt.rsplit("_", 1)[1][0]


def parse_class_spec(spec: str) -> tuple[list[str], dict[str, str]]:
    """``"neu,hap+exc,ang,sad"`` -> (classes, label code -> class); ``a+b`` merges b into a."""
    classes: list[str] = []
    class_map: dict[str, str] = {}
    for group in spec.split(","):
        codes = [c.strip() for c in group.split("+")]
        if not all(codes):
            raise SertkError(f"--classes {spec!r}: empty class name (expected e.g. neu,hap+exc,ang,sad)")
        for code in codes:
            if code not in LABEL_CODES:
                raise SertkError(
                    f"--classes {spec!r}: unknown label {code!r} (known: {' '.join(LABEL_CODES)})"
                )
            if code in class_map:
                raise SertkError(f"--classes {spec!r}: label {code!r} given twice")
            class_map[code] = codes[0]
        classes.append(codes[0])
    if len(classes) < 2:
        raise SertkError(f"--classes {spec!r}: need at least 2 classes")
    return classes, class_map


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


def read_transcriptions(path: Path) -> dict[str, str]:
    """``<utt> [start-end]: words`` lines -> {utt: words}; irregular lines are tolerated or ignored."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    texts: dict[str, str] = {}
    for line in lines:
        match = TRANSCRIPT_LINE.match(line.strip())
        if match:
            # Kaldi tables are one line per id, so any stray whitespace run becomes one space.
            texts[match["utt"]] = " ".join(match["text"].split())
    return texts


def wav_data_end(path: Path) -> int | None:
    """Byte offset where a RIFF/WAVE file's ``data`` chunk ends according to its header (None if not WAV)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = struct.unpack("<4sI", chunk)
            if chunk_id == b"data":
                return f.tell() + size
            # RIFF chunks are padded to an even size.
            f.seek(size + (size & 1), os.SEEK_CUR)


def check_wav(path: Path) -> tuple[sf._SoundFileInfo | None, str | None]:
    """Open a wav's header with soundfile -> (info, None), or (None, reason) if it is unusable."""
    try:
        size = path.stat().st_size
    except OSError:
        return None, "wav missing"
    if size == 0:
        return None, "wav is empty (0 bytes)"
    try:
        info = sf.info(str(path))
        end = wav_data_end(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        return None, f"wav unreadable ({str(err).split(': ', 1)[-1].strip() or 'unknown error'})"
    # libsndfile silently shortens a truncated file's frame count, so compare the header's data size.
    if end is not None and size < end:
        return None, f"wav truncated ({size} bytes, header says {end})"
    if info.frames <= 0:
        return None, "wav has no audio samples"
    return info, None


def visible_files(folder: Path) -> list[Path]:
    """The ``*.txt`` files directly in ``folder``, skipping sub-folders and dot files.

    Copies made on macOS can carry ``._<name>`` resource-fork files that are not text.
    """
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))


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


def prepare_iemocap(
    root: Path, out: Path, classes: str = "neu,hap+exc,ang,sad", style: str = "all"
) -> PrepReport:
    """Parse an ``IEMOCAP_full_release`` tree ``root`` and write the data dir ``out``.

    Utterances whose label is outside ``classes`` or whose dialog is not of ``style`` are filtered; those
    with a problem (bad wav, malformed or unknown summary line, duplicate id) are reported one line each
    and skipped. Raises SertkError if ``root`` is not an IEMOCAP tree or nothing usable is left.
    """
    root, out = Path(root).absolute(), Path(out)
    class_list, class_map = parse_class_spec(classes)
    if style not in STYLES:
        raise SertkError(f"--style {style!r}: expected one of {', '.join(STYLES)}")
    sessions = find_sessions(root)
    if out.exists() and not out.is_dir():
        raise SertkError(f"{out}: output exists and is not a directory")
    report = PrepReport(out=out, synthetic=(root / "SYNTHETIC_CORPUS.txt").is_file())
    tables: dict[str, dict[str, str]] = {name: {} for name in DATA_FILES}
    seen: dict[str, str] = {}
    odd_audio = no_votes = unlabelled_wavs = 0
    progress = Progress(
        TextColumn("prep {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    def problem(message: str) -> None:
        report.problems.append(message)
        if len(report.problems) <= MAX_CONSOLE_PROBLEMS:
            console.print(message, markup=False, soft_wrap=True)

    with progress:
        task = progress.add_task("sessions", total=len(sessions))
        for number, session in sessions:
            progress.update(task, description=session.name)
            wav_dir = session / "sentences" / "wav"
            transcripts: dict[str, str] = {}
            for file in visible_files(session / "dialog" / "transcriptions"):
                transcripts.update(read_transcriptions(file))
            labelled: set[str] = set()
            emo_files = visible_files(session / "dialog" / "EmoEvaluation")
            candidates: list[UttLabel] = []
            for emo_file in emo_files:
                records, file_problems = parse_emo_evaluation(emo_file)
                for message in file_problems:
                    report.total += 1
                    report.skipped += 1
                    problem(message)
                for rec in records:
                    report.total += 1
                    labelled.add(rec.utt)
                    if rec.utt in seen:
                        report.skipped += 1
                        problem(
                            f"{rec.path}:{rec.line}: {rec.utt}: duplicate utterance id (first in {seen[rec.utt]})"
                        )
                    elif int(rec.utt[3:5]) != number:
                        report.skipped += 1
                        problem(
                            f"{rec.path}:{rec.line}: {rec.utt}: utterance of Ses{rec.utt[3:5]} in {session.name}"
                        )
                    else:
                        candidates.append(rec)
                    seen.setdefault(rec.utt, f"{rec.path.name}:{rec.line}")
            wavs = [wav_dir / rec.dialog / f"{rec.utt}.wav" for rec in candidates]
            # Header checks are file-system bound (a cold disk dominates), so overlap them in threads.
            with ThreadPoolExecutor(max_workers=8) as pool:
                checks = list(pool.map(check_wav, wavs))
            for rec, wav, (info, reason) in zip(candidates, wavs, checks, strict=True):
                if info is None:
                    report.skipped += 1
                    problem(f"{rec.path}:{rec.line}: {rec.utt}: {reason}: {wav}")
                    continue
                if rec.code not in class_map or (style != "all" and rec.style != style):
                    report.filtered += 1
                    continue
                if info.channels != 1 or info.samplerate != 16000:
                    odd_audio += 1
                no_votes += len(rec.unrecognised_votes)
                utt = rec.utt
                tables["wav.scp"][utt] = str(wav)
                tables["utt2spk"][utt] = rec.speaker
                tables["utt2emo"][utt] = class_map[rec.code]
                tables["utt2votes"][utt] = " ".join(",".join(v) for v in rec.votes)
                tables["utt2vad"][utt] = " ".join(f"{x:.4f}" for x in rec.vad)
                tables["utt2session"][utt] = session.name
                tables["utt2gender"][utt] = rec.gender
                tables["utt2style"][utt] = rec.style
                tables["utt2dur"][utt] = f"{info.frames / info.samplerate:.4f}"
                tables["text"][utt] = transcripts.get(utt, "")
            unlabelled_wavs += sum(1 for w in wav_dir.glob("*/[!.]*.wav") if w.stem not in labelled)
            progress.advance(task)

    if len(report.problems) > MAX_CONSOLE_PROBLEMS:
        console.print(f"... and {len(report.problems) - MAX_CONSOLE_PROBLEMS} more problems", markup=False)
    kept = tables["utt2emo"]
    report.kept = len(kept)
    counts = Counter(kept.values())
    report.class_counts = {c: counts.get(c, 0) for c in class_list}
    report.speakers = len(set(tables["utt2spk"].values()))
    report.sessions = len(set(tables["utt2session"].values()))
    if odd_audio:
        report.notes.append(f"{odd_audio} wavs are stereo or not 16 kHz: later stages downmix/resample")
    if no_votes:
        report.notes.append(
            f"{no_votes} external rater lines of kept utterances gave no recognisable label (no vote)"
        )
    if unlabelled_wavs:
        report.notes.append(f"{unlabelled_wavs} wavs have no EmoEvaluation entry and were ignored")
    empty_votes = sum(1 for v in tables["utt2votes"].values() if not v)
    if empty_votes:
        report.notes.append(f"{empty_votes} kept utterances have no external rater votes (empty utt2votes)")
    if not kept:
        raise SertkError(
            f"{root}: nothing usable left ({report.total} utterances seen, {report.filtered} filtered by "
            f"--classes {classes} --style {style}, {report.skipped} skipped)"
        )
    meta = {
        "corpus": "IEMOCAP",
        "root": str(root),
        "synthetic": report.synthetic,
        "classes": class_list,
        "class_map": class_map,
        "style": style,
        "counts": report.class_counts,
        "skipped": report.skipped,
    }
    try:
        write_data_dir(out, tables, meta)
    except OSError as err:
        raise SertkError(f"{out}: cannot write the data dir ({err.strerror or err})") from None
    for note in report.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    return report
