"""Provenance records: what every stage output was made from, and the one rule for reusing it.

Each stage writes, last of all, a record beside its output: ``<stage>.provenance.json`` inside the output
directory (``data/x/prep.provenance.json``, ``dump/x/logmel40/feats.provenance.json``,
``exp/x/fold1/train.provenance.json``, ``exp/x/fold1/eval.provenance.json``, ``exp/x/score.provenance.json``)
or ``<stem>.provenance.json`` beside a file output (``data/x/folds.provenance.json`` for ``folds.json``)::

    {"format": "sertk-provenance/1", "stage": "feats", "key": "sha256:...",
     "inputs": {"wav.scp": "sha256:...", "audio": "stat:...", ...},   # content or size+mtime digests
     "options": {...},                                                # what the command was asked to do
     "code": {"sertk": "0.2.0", "extractor": "logmel40/1"},           # versions that change the numbers
     "outputs": {"feats.h5": "stat:..."},                             # what the stage wrote
     "made": {"git_sha": ..., "time": ..., "argv": [...]}}            # informative, never compared

``key`` digests ``stage``, ``inputs``, ``options`` and ``code``. A stage reuses its output only when the key
it computes now from its inputs equals the recorded key AND the recorded outputs are still what it wrote
(as Make and DVC do with file stamps and hashes): a marker alone is never trusted. A stage's downstream
names it by its key, so a change anywhere upstream changes every key below it. The record is removed
before a stage rewrites its output and written only once the output is complete, so an interrupted stage
leaves nothing a rerun would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sertk
from sertk.errors import SertkError
from sertk.utils import git_sha, write_json

FORMAT = "sertk-provenance/1"
SUFFIX = ".provenance.json"


def json_digest(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes; SertkError naming the file when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise SertkError(f"{path}: cannot read ({err.strerror})") from None
    return "sha256:" + digest.hexdigest()


def files_digest(paths: Iterable[str | Path], base: str | Path | None = None) -> str:
    """One content digest over several files, each named by its path (relative to ``base`` if given)."""
    entries = []
    for path in sorted(Path(p) for p in paths):
        name = str(path.relative_to(base)) if base is not None else str(path)
        entries.append([name, file_digest(path)])
    return json_digest(entries)


def stat_digest(paths: Iterable[str | Path]) -> str:
    """Digest of the paths' sizes and modification times (nanoseconds); a missing file counts as such.

    For audio and large dumps, where reading every byte would cost more than the stage it guards: any
    rewrite of a file changes its mtime, which is what Make relies on.
    """
    entries = []
    for path in sorted(str(p) for p in paths):
        try:
            st = os.stat(path)
            entries.append([path, st.st_size, st.st_mtime_ns])
        except OSError:
            entries.append([path, None, None])
    return "stat:" + json_digest(entries).split(":", 1)[1]


def file_stamp(path: str | Path) -> str:
    """``stat:<size>:<mtime_ns>`` of one file, independent of its name (it survives a rename into place)."""
    try:
        st = os.stat(path)
    except OSError:
        return "stat:missing"
    return f"stat:{st.st_size}:{st.st_mtime_ns}"


def code_versions(**components: Any) -> dict[str, Any]:
    """``{"sertk": version, **components}``: the versions a record's key depends on."""
    return {"sertk": sertk.__version__, **components}


@dataclass
class Record:
    """One stage output's provenance (see the module docstring for the file format)."""

    stage: str
    inputs: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=code_versions)
    outputs: dict[str, str] = field(default_factory=dict)
    made: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return json_digest(
            {"stage": self.stage, "inputs": self.inputs, "options": self.options, "code": self.code}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "stage": self.stage,
            "key": self.key,
            "inputs": self.inputs,
            "options": self.options,
            "code": self.code,
            "outputs": self.outputs,
            "made": self.made,
        }


def record_path(output: str | Path, stage: str | None = None) -> Path:
    """Where the record of ``output`` lives: ``DIR/<stage>.provenance.json`` or ``<stem>.provenance.json``."""
    output = Path(output)
    if stage is not None:
        return output / f"{stage}{SUFFIX}"
    return output.with_name(output.stem + SUFFIX)


def read_record(path: str | Path) -> Record | None:
    """The record at ``path``, or None when there is none or it is not a readable sertk record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        return Record(
            stage=data["stage"],
            inputs=dict(data["inputs"]),
            options=dict(data["options"]),
            code=dict(data["code"]),
            outputs=dict(data.get("outputs", {})),
            made=dict(data.get("made", {})),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_record(path: str | Path, record: Record, outputs: Iterable[str | Path] = (), **made: Any) -> Record:
    """Stamp ``record`` with the stat digest of each of ``outputs`` (paths under the record's folder) and
    write it; ``made`` adds informative fields (e.g. a summary) beside git sha, time and command line."""
    path = Path(path)
    record.outputs = {str(Path(p).relative_to(path.parent)): file_stamp(p) for p in outputs}
    record.made = {
        "git_sha": git_sha(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        **made,
    }
    write_json(path, record.to_json())
    return record


def remove_record(path: str | Path) -> None:
    """Withdraw a record before its output is rewritten, so a crash midway leaves nothing trusted."""
    Path(path).unlink(missing_ok=True)


def _changes(old: Any, new: Any, where: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key not in old:
                out.append(f"{where}.{key} added")
            elif key not in new:
                out.append(f"{where}.{key} removed")
            else:
                _changes(old[key], new[key], f"{where}.{key}", out)
    elif old != new:
        if isinstance(old, str) and old.startswith(("sha256:", "stat:")):
            out.append(f"{where} changed")
        else:
            out.append(f"{where} {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}")


def differences(old: Record, new: Record) -> list[str]:
    """What differs between two records, one short phrase each (``options.ratios [..] -> [..]``)."""
    out: list[str] = []
    for part in ("inputs", "options", "code"):
        _changes(getattr(old, part), getattr(new, part), part, out)
    if old.stage != new.stage:
        out.insert(0, f"stage {old.stage} -> {new.stage}")
    return out


def stale_outputs(path: str | Path, record: Record) -> list[str]:
    """The recorded outputs that are gone or were rewritten since the record was made."""
    base = Path(path).parent
    return [name for name, stamp in record.outputs.items() if file_stamp(base / name) != stamp]


def check(path: str | Path, wanted: Record) -> list[str]:
    """[] when the output recorded at ``path`` can be reused for ``wanted``; else why not (short phrases)."""
    old = read_record(path)
    if old is None:
        return ["no provenance record" if not Path(path).exists() else "unreadable provenance record"]
    if old.key != wanted.key:
        return differences(old, wanted) or ["key differs"]
    stale = stale_outputs(path, old)
    return [f"{name} modified since it was made" for name in stale]


def recorded_key(path: str | Path, what: str) -> str:
    """The key of an upstream output that downstream records name; SertkError when it has no valid record."""
    record = read_record(path)
    if record is None:
        raise SertkError(f"{Path(path).parent}: {what} has no provenance record {Path(path).name} (rerun it)")
    stale = stale_outputs(path, record)
    if stale:
        raise SertkError(f"{Path(path).parent}: {what} was modified since it was made ({', '.join(stale)})")
    return record.key
