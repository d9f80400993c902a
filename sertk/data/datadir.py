"""Kaldi-style data directories.

A data dir holds one text table per file, ``<utt-id> <value>`` per line, sorted by id (byte order, as
Kaldi's ``LC_ALL=C sort``), plus ``spk2utt`` (the inverse of ``utt2spk``) and ``corpus.json`` (where
the data came from, whether it is synthetic, and the class list whose order defines label indices).

Tables written by ``sertk prep``:

=============== =====================================================================
wav.scp         absolute path of the utterance's audio
utt2spk         speaker id (``Ses01F`` ... ``Ses05M``)
utt2emo         mapped class (one of ``corpus.json`` classes)
utt2votes       external raters' categorical votes: one token per rater, a rater's
                several labels joined by ``,`` (``neu,sad oth neu``)
utt2vad         valence arousal dominance (``2.5000 2.5000 2.5000``)
utt2session     ``Session1`` ... ``Session5``
utt2gender      ``F`` or ``M``
utt2style       ``impro`` or ``script``
utt2dur         duration in seconds
text            transcript (may be empty)
=============== =====================================================================
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sertk.errors import SertkError
from sertk.provenance import files_digest
from sertk.utils import atomic_write_text, write_json

DATA_FILES = (
    "wav.scp",
    "utt2spk",
    "utt2emo",
    "utt2votes",
    "utt2vad",
    "utt2session",
    "utt2gender",
    "utt2style",
    "utt2dur",
    "text",
)
REQUIRED_FILES = ("wav.scp", "utt2spk", "utt2emo")
WHITESPACE = re.compile(r"\s")


def _split_line(line: str) -> tuple[str, str]:
    """``<key><whitespace><value>`` -> (key, value); Kaldi separates the id by any whitespace, not only " "."""
    parts = line.split(maxsplit=1) + ["", ""]
    return parts[0], parts[1].strip()


def read_table(path: str | Path) -> dict[str, str]:
    """Read ``<key> <value>`` lines; the value is the rest of the line (may be empty)."""
    path = Path(path)
    table: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise SertkError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise SertkError(f"{path}: not a UTF-8 text table") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            raise SertkError(f"{path}:{lineno}: empty line")
        key, value = _split_line(line)
        if key in table:
            raise SertkError(f"{path}:{lineno}: duplicate id {key}")
        table[key] = value.strip()
    return table


def write_table(path: str | Path, table: dict[str, str]) -> None:
    """Write a table sorted by key, atomically."""
    lines = []
    for key in sorted(table):
        if not key or WHITESPACE.search(key):
            raise SertkError(f"{path}: invalid id {key!r} (ids may not contain whitespace)")
        value = str(table[key])
        lines.append(f"{key} {value}".rstrip() + "\n")
    atomic_write_text(path, "".join(lines))


@dataclass
class DataDir:
    """An in-memory data dir: ``tables[name][utt]`` and the ``corpus.json`` metadata."""

    path: Path
    tables: dict[str, dict[str, str]]
    meta: dict = field(default_factory=dict)

    @property
    def utts(self) -> list[str]:
        return sorted(self.tables["wav.scp"])

    @property
    def classes(self) -> list[str]:
        if "classes" in self.meta:
            return list(self.meta["classes"])
        return sorted(set(self.tables["utt2emo"].values()))

    @property
    def synthetic(self) -> bool | None:
        """True for a generated corpus, False for a real one, None when corpus.json does not say (unknown)."""
        value = self.meta.get("synthetic")
        return value if isinstance(value, bool) else None

    @property
    def class_map(self) -> dict[str, str]:
        """Corpus label -> class (``hap+exc`` maps exc onto hap); a label absent from it is itself."""
        return dict(self.meta.get("class_map", {}))

    def __getitem__(self, name: str) -> dict[str, str]:
        if name not in self.tables:
            raise SertkError(f"{self.path}: data dir has no {name}")
        return self.tables[name]

    def labels(self, utts: list[str]) -> list[int]:
        """Class indices of ``utts`` in the order of ``classes``."""
        index = {c: i for i, c in enumerate(self.classes)}
        emo = self["utt2emo"]
        try:
            return [index[emo[u]] for u in utts]
        except KeyError as err:
            raise SertkError(
                f"{self.path}: utterance or class {err.args[0]} not in utt2emo/classes"
            ) from None

    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for utt, spk in sorted(self["utt2spk"].items()):
            out.setdefault(spk, []).append(utt)
        return out


def read_data_dir(path: str | Path) -> DataDir:
    """Read every table present in ``path`` (``wav.scp``, ``utt2spk`` and ``utt2emo`` are required)."""
    path = Path(path)
    if not path.is_dir():
        raise SertkError(f"{path}: data dir not found")
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise SertkError(f"{path}: not a data dir (no {name})")
    tables = {name: read_table(path / name) for name in DATA_FILES if (path / name).is_file()}
    meta = {}
    if (path / "corpus.json").is_file():
        try:
            meta = json.loads((path / "corpus.json").read_text())
        except json.JSONDecodeError as err:
            raise SertkError(f"{path / 'corpus.json'}: invalid JSON ({err.msg}, line {err.lineno})") from None
        except (OSError, UnicodeDecodeError):
            raise SertkError(f"{path / 'corpus.json'}: cannot read as UTF-8 JSON") from None
        if not isinstance(meta, dict):
            raise SertkError(f"{path / 'corpus.json'}: expected a JSON object, got {type(meta).__name__}")
    return DataDir(path=path, tables=tables, meta=meta)


def write_data_dir(path: str | Path, tables: dict[str, dict[str, str]], meta: dict | None = None) -> DataDir:
    """Write the tables, ``spk2utt`` and ``corpus.json`` into ``path``, each file atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    unknown = set(tables) - set(DATA_FILES)
    if unknown:
        raise SertkError(f"{path}: unknown data dir table(s) {sorted(unknown)}")
    # Check every id before writing anything, so a bad id never leaves a half-updated data dir.
    for name, table in tables.items():
        bad = next((key for key in table if not key or WHITESPACE.search(key)), None)
        if bad is not None:
            raise SertkError(f"{path / name}: invalid id {bad!r} (ids may not contain whitespace)")
    for name, table in tables.items():
        write_table(path / name, table)
    data = DataDir(path=path, tables=dict(tables), meta=dict(meta or {}))
    spk2utt = {spk: " ".join(utts) for spk, utts in data.spk2utt().items()}
    write_table(path / "spk2utt", spk2utt)
    write_json(path / "corpus.json", data.meta)
    return data


def data_dir_digest(path: str | Path) -> str:
    """Content digest of a data dir's tables and corpus.json: what downstream stages were made from."""
    path = Path(path)
    names = [*DATA_FILES, "spk2utt", "corpus.json"]
    return files_digest([path / n for n in names if (path / n).is_file()], base=path)


def validate_data_dir(path: str | Path, check_wavs: bool = True) -> str:
    """Check a data dir as Kaldi's ``validate_data_dir.sh`` does and return a one-line summary.

    Checks: required files present; every file sorted with unique ids; every table covers exactly the
    ids of ``wav.scp``; ``spk2utt`` is the inverse of ``utt2spk``; classes are known; wavs exist.
    Raises SertkError naming the file and the first problem found.
    """
    path = Path(path)
    data = read_data_dir(path)
    ids = set(data.tables["wav.scp"])
    if not ids:
        raise SertkError(f"{path / 'wav.scp'}: no utterances")
    for name in list(data.tables) + ["spk2utt"]:
        file = path / name
        if not file.is_file():
            continue
        keys = [_split_line(line)[0] for line in file.read_text().splitlines()]
        if keys != sorted(keys):
            first = next(i for i in range(1, len(keys)) if keys[i] < keys[i - 1])
            raise SertkError(f"{file}:{first + 1}: not sorted (id {keys[first]} after {keys[first - 1]})")
        if name == "spk2utt":
            continue
        table_ids = set(keys)
        if table_ids != ids:
            missing = sorted(ids - table_ids)
            extra = sorted(table_ids - ids)
            what = f"missing {missing[0]}" if missing else f"extra {extra[0]}"
            n = len(missing) + len(extra)
            raise SertkError(f"{file}: ids differ from wav.scp ({what}; {n} differences)")
    if (path / "spk2utt").is_file():
        spk2utt = {k: v.split() for k, v in read_table(path / "spk2utt").items()}
        if spk2utt != data.spk2utt():
            raise SertkError(f"{path / 'spk2utt'}: not the inverse of utt2spk")
    classes = data.classes
    unknown = sorted({e for e in data.tables["utt2emo"].values()} - set(classes))
    if unknown:
        raise SertkError(f"{path / 'utt2emo'}: classes {unknown} not in corpus.json classes {classes}")
    if check_wavs:
        missing = [u for u, w in data.tables["wav.scp"].items() if not Path(w).is_file()]
        if missing:
            raise SertkError(
                f"{path / 'wav.scp'}: {len(missing)} wav file(s) missing, first {data.tables['wav.scp'][missing[0]]}"
            )
    counts = Counter(data.tables["utt2emo"].values())
    n_spk = len(set(data.tables["utt2spk"].values()))
    dist = " ".join(f"{c} {counts.get(c, 0)}" for c in classes)
    synth = {True: " (SYNTHETIC data)", None: " (provenance unknown: corpus.json has no synthetic flag)"}.get(
        data.synthetic, ""
    )
    return f"{path}: OK, {len(ids)} utterances, {n_spk} speakers, {dist}{synth}"
