"""What every corpus prep shares: class specs, wav checks, the problem report and the data-dir tables.

A corpus module finds its layout, turns each labelled audio file into a ``Candidate`` and hands the list to
``build_tables``, which checks every wav (a damaged file is reported one line and skipped, whatever its
class), filters by ``--classes`` and the corpus's own options, and fills the Kaldi tables. ``finish`` counts
what was kept and raises when nothing is. The registry (``sertk.corpora``) wraps every corpus in the
same provenance-checked, publish-at-the-end run (``sertk.corpora.run.run_prep``).
"""

from __future__ import annotations

import csv
import os
import re
import struct
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import soundfile as sf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sertk.errors import SertkError
from sertk.utils import console

# Written by ``sertk synth`` at the top of every synthetic tree; prep marks the data dir synthetic by it.
SYNTHETIC_MARKER = "SYNTHETIC_CORPUS.txt"
MAX_CONSOLE_PROBLEMS = 200
SAMPLE_RATE = 16000
# A repository cloned without git-lfs (CREMA-D's is one) holds these text stubs in place of the audio.
LFS_POINTER = b"version https://git-lfs"


@dataclass
class PrepReport:
    """What a prep saw, kept, filtered and skipped (``problems``: one line per skipped input)."""

    out: Path
    corpus: str = "IEMOCAP"
    sessions: int = 0  # IEMOCAP only; 0 leaves it out of the summary
    speakers: int = 0
    total: int = 0
    kept: int = 0
    filtered: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    synthetic: bool = False
    up_to_date: bool = False

    def problem(self, message: str) -> None:
        """Report one unusable input (printed for the first MAX_CONSOLE_PROBLEMS) and count it as skipped."""
        self.problems.append(message)
        self.skipped += 1
        if len(self.problems) <= MAX_CONSOLE_PROBLEMS:
            console.print(message, markup=False, soft_wrap=True)

    def summary(self) -> str:
        counts = " ".join(f"{c} {n}" for c, n in self.class_counts.items())
        synth = " (SYNTHETIC corpus)" if self.synthetic else ""
        if self.up_to_date:
            return f"prep: {self.out} is up to date ({self.corpus}, kept {self.kept}: {counts}){synth}"
        sessions = f"{self.sessions} sessions, " if self.sessions else ""
        return (
            f"prep: {self.corpus}: {sessions}{self.speakers} speakers, {self.total} utterances: "
            f"kept {self.kept} ({counts}), filtered {self.filtered}, skipped {self.skipped} -> {self.out}{synth}"
        )


@dataclass
class Candidate:
    """One labelled audio file as a corpus module read it, before its wav is checked.

    ``label`` is the corpus's emotion as a sertk code (before ``--classes`` maps it); ``where`` names the
    label source for messages (``file:line``, or the wav itself when the file name is the label).
    ``filtered_by`` is set when an option other than ``--classes`` leaves the file out (``--style impro``,
    song files without ``--include-song``). Optional tables (text, votes, ...) are written only when some
    kept candidate has a value; a None among them is written as an empty value.
    """

    utt: str
    wav: Path
    speaker: str
    gender: str
    label: str
    where: str
    text: str | None = None
    votes: str | None = None
    vad: str | None = None
    session: str | None = None
    style: str | None = None
    filtered_by: str | None = None

    @classmethod
    def from_file(
        cls, path: Path, speaker: str, gender: str, label: str, **optional: str | None
    ) -> Candidate:
        """A corpus whose file names are the labels: utterance ``<speaker>-<file stem>``, named by its wav.

        The speaker id opens the utterance id, so sorting by either gives one order (as Kaldi expects).
        """
        return cls(f"{speaker}-{path.stem}", path, speaker, gender, label, where=str(path), **optional)


# Table -> Candidate attribute, for the tables a corpus may or may not have.
OPTIONAL_TABLES = {
    "text": "text",
    "utt2votes": "votes",
    "utt2vad": "vad",
    "utt2session": "session",
    "utt2style": "style",
}


def parse_class_spec(spec: str, codes: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``"neu,hap+exc,ang,sad"`` -> (classes, label code -> class); ``a+b`` merges b into a.

    ``codes`` are the label codes the corpus has; any other name is an error listing them.
    """
    classes: list[str] = []
    class_map: dict[str, str] = {}
    for group in spec.split(","):
        members = [c.strip() for c in group.split("+")]
        if not all(members):
            raise SertkError(f"--classes {spec!r}: empty class name (expected e.g. neu,hap+exc,ang,sad)")
        for code in members:
            if code not in codes:
                raise SertkError(f"--classes {spec!r}: unknown label {code!r} (known: {' '.join(codes)})")
            if code in class_map:
                raise SertkError(f"--classes {spec!r}: label {code!r} given twice")
            class_map[code] = members[0]
        classes.append(members[0])
    if len(classes) < 2:
        raise SertkError(f"--classes {spec!r}: need at least 2 classes")
    return classes, class_map


def class_spec_text(classes: list[str], class_map: dict[str, str]) -> str:
    """The canonical spelling of a parsed spec (``neu,hap+exc,...``): equal specs give equal records."""
    groups = {c: [c] for c in classes}
    for code, cls in class_map.items():
        if code != cls:
            groups[cls].append(code)
    return ",".join("+".join(members) for members in groups.values())


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
        if _is_lfs_pointer(path):
            return None, "wav is a git-lfs pointer, not audio (run git lfs pull in the corpus clone)"
        return None, f"wav unreadable ({str(err).split(': ', 1)[-1].strip() or 'unknown error'})"
    # libsndfile silently shortens a truncated file's frame count, so compare the header's data size.
    if end is not None and size < end:
        return None, f"wav truncated ({size} bytes, header says {end})"
    if info.frames <= 0:
        return None, "wav has no audio samples"
    return info, None


def _is_lfs_pointer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_POINTER)) == LFS_POINTER
    except OSError:
        return False


def check_wavs(paths: Sequence[Path]) -> list[tuple[sf._SoundFileInfo | None, str | None]]:
    """``check_wav`` of every path, in order, with a progress bar.

    Header checks are file-system bound (a cold disk dominates), so they overlap in threads.
    """
    columns = (TextColumn("prep: checking wavs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    results = []
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("wavs", total=len(paths))
        with ThreadPoolExecutor(max_workers=8) as pool:
            for result in pool.map(check_wav, paths):
                results.append(result)
                progress.advance(task)
    return results


def build_tables(
    report: PrepReport, candidates: Sequence[Candidate], class_map: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Check each candidate's wav, filter, and fill the data-dir tables with the ones kept.

    ``report.total`` must already count the candidates (and anything the caller skipped). A damaged wav or
    a second candidate with the same utterance id is a problem (reported, skipped); a label outside
    ``class_map`` or a ``filtered_by`` reason counts as filtered. Other-option filters get one note each.
    """
    first: dict[str, str] = {}
    unique: list[Candidate] = []
    for cand in candidates:
        if cand.utt in first:
            report.problem(f"{cand.where}: {cand.utt}: duplicate utterance id (first in {first[cand.utt]})")
        else:
            first[cand.utt] = cand.where
            unique.append(cand)
    tables: dict[str, dict[str, str]] = {name: {} for name in ("wav.scp", "utt2spk", "utt2emo", "utt2gender")}
    tables["utt2dur"] = {}
    optional: dict[str, dict[str, str | None]] = {name: {} for name in OPTIONAL_TABLES}
    odd_audio = 0
    filters: Counter[str] = Counter()
    for cand, (info, reason) in zip(unique, check_wavs([c.wav for c in unique]), strict=True):
        if info is None:
            shown = "" if cand.where == str(cand.wav) else f": {cand.wav}"
            report.problem(f"{cand.where}: {cand.utt}: {reason}{shown}")
            continue
        if cand.filtered_by is not None or cand.label not in class_map:
            report.filtered += 1
            if cand.filtered_by is not None:
                filters[cand.filtered_by] += 1
            continue
        if info.channels != 1 or info.samplerate != SAMPLE_RATE:
            odd_audio += 1
        tables["wav.scp"][cand.utt] = str(cand.wav)
        tables["utt2spk"][cand.utt] = cand.speaker
        tables["utt2emo"][cand.utt] = class_map[cand.label]
        tables["utt2gender"][cand.utt] = cand.gender
        tables["utt2dur"][cand.utt] = f"{info.frames / info.samplerate:.4f}"
        for name, attr in OPTIONAL_TABLES.items():
            optional[name][cand.utt] = getattr(cand, attr)
    for name, values in optional.items():
        if any(v is not None for v in values.values()):
            tables[name] = {utt: v or "" for utt, v in values.items()}
    if odd_audio:
        report.notes.append(f"{odd_audio} wavs are stereo or not 16 kHz: later stages downmix/resample")
    for reason, count in sorted(filters.items()):
        report.notes.append(f"{count} utterances filtered by {reason}")
    return tables


def finish(
    report: PrepReport,
    tables: dict[str, dict[str, str]],
    root: Path,
    classes: list[str],
    class_map: dict[str, str],
    **extra: Any,
) -> tuple[dict[str, dict[str, str]], dict]:
    """Count what was kept -> (tables, corpus.json with ``extra``); SertkError when nothing usable is left."""
    kept = tables["utt2emo"]
    report.kept = len(kept)
    counts = Counter(kept.values())
    report.class_counts = {c: counts.get(c, 0) for c in classes}
    report.speakers = len(set(tables["utt2spk"].values()))
    if not kept:
        raise SertkError(
            f"{root}: nothing usable left ({report.total} utterances seen, {report.filtered} filtered by "
            f"--classes {','.join(classes)} and the options, {report.skipped} skipped)"
        )
    meta = {
        "corpus": report.corpus,
        "root": str(root),
        "synthetic": report.synthetic,
        "classes": classes,
        "class_map": class_map,
        **extra,
        "counts": report.class_counts,
        "skipped": report.skipped,
    }
    return tables, meta


def print_outcome(report: PrepReport) -> None:
    """What a prep prints after its problems: how many more there were, then the notes."""
    if len(report.problems) > MAX_CONSOLE_PROBLEMS:
        console.print(f"... and {len(report.problems) - MAX_CONSOLE_PROBLEMS} more problems", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)


def candidates_from_names(
    report: PrepReport,
    paths: Iterable[Path],
    parse: Callable[[Path], tuple[dict[str, str] | None, str | None]],
    make: Callable[[Path, dict[str, str]], Candidate],
) -> list[Candidate]:
    """``make(path, fields)`` for every file whose name ``parse`` reads; the others are reported, skipped."""
    candidates = []
    for path in paths:
        report.total += 1
        fields, reason = parse(path)
        if fields is None:
            report.problem(f"{path}: {reason}")
        else:
            candidates.append(make(path, fields))
    return candidates


def parse_file_name(
    stem: str, pattern: re.Pattern, layout: str, known: dict[str, tuple[str, Container[str]]]
) -> tuple[dict[str, str] | None, str | None]:
    """A corpus file name's fields -> (fields, None), or (None, why the name is not the corpus's).

    ``layout`` describes the naming for the message; ``known`` maps a field to (what it is, its values).
    """
    match = pattern.fullmatch(stem)
    if match is None:
        return None, f"file name is not {layout}"
    fields = match.groupdict()
    for name, (what, values) in known.items():
        if fields[name] not in values:
            return None, f"unknown {what} {fields[name]} (known: {' '.join(values)})"
    return fields, None


def require_dir(root: Path, what: str, sub: str, hint: str = "") -> Path:
    """``root/sub`` if it is a directory, else SertkError saying the root is not ``what``'s layout."""
    if not root.exists():
        raise SertkError(f"{root}: {what} root not found")
    if not root.is_dir():
        raise SertkError(f"{root}: {what} root is not a directory")
    path = root / sub
    if not path.is_dir():
        raise SertkError(f"{root}: not a {what} tree: {sub}/ is missing{hint}")
    return path


def visible(paths: Iterable[Path]) -> list[Path]:
    """The plain files among ``paths``, sorted, without dot files (macOS ``._name`` resource forks)."""
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header line; SertkError if unreadable or a column is missing."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise SertkError(f"{path}: missing column(s) {', '.join(missing)} (has {reader.fieldnames})")
            return [
                (reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
                for row in reader
            ]
    except OSError as err:
        raise SertkError(f"{path}: cannot read ({err.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise SertkError(f"{path}: not a readable CSV file ({err})") from None


@dataclass(frozen=True)
class CorpusSpec:
    """How the registry runs one corpus's prep: what a corpus module defines, gathered by ``of(module)``.

    A corpus module defines ``NAME`` (its registry name), ``TITLE``, ``VERSION`` (bumped when its prep
    writes something else from the same input), ``LABEL_CODES`` (its emotions as sertk codes),
    ``DEFAULT_CLASSES``, optionally ``OPTIONS`` (extra option -> (default, allowed values or None)),
    ``input_files(root)`` (label files, audio files; cheap; SertkError when ``root`` is not the layout) and
    ``build(root, report, classes, class_map, **options)`` -> (tables, corpus.json).
    """

    name: str
    title: str
    version: int
    label_codes: tuple[str, ...]
    default_classes: str
    input_files: Callable[[Path], tuple[list[Path], list[Path]]]
    build: Callable[..., tuple[dict[str, dict[str, str]], dict]]
    options: dict[str, tuple[Any, tuple | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, module: ModuleType) -> CorpusSpec:
        return cls(
            name=module.NAME,
            title=module.TITLE,
            version=module.VERSION,
            label_codes=tuple(module.LABEL_CODES),
            default_classes=module.DEFAULT_CLASSES,
            input_files=module.input_files,
            build=module.build,
            options=dict(getattr(module, "OPTIONS", {})),
        )
