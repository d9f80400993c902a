"""Folds in other toolkits' files: EmoBox fold files and s3prl/SUPERB emotion meta data, both ways.

EmoBox (Ma et al., 2024, "EmoBox: multilingual multi-corpus speech emotion recognition toolkit and
benchmark"; github.com/emo-box/EmoBox) keeps, per dataset, ``data/<dataset>/``::

    fold_<k>/<dataset>_train_fold_<k>.jsonl      one JSON object per line
    fold_<k>/<dataset>_test_fold_<k>.jsonl
    fold_<k>/<dataset>_valid_fold_<k>.jsonl      only some datasets; EmoBox otherwise splits train itself
    fold_<k>/<dataset>_<part>_fold_<k>.json      the same entries as one object keyed by "key"
    label_map.json                               label -> the class trained on (exc -> Happy, ...)

A line is ``{"key": "iemocap-Ses01F_impro04_F000", "dataset": "iemocap", "wav":
"downloads/iemocap/Session1/sentences/wav/Ses01F_impro04/Ses01F_impro04_F000.wav", "type": "raw",
"sample_rate": 16000, "num_frame": 70312.0, "task": "category", "length": 4.3945, "emo": "neu",
"channel": 1}``; older files say "audio" and "label" for "wav" and "emo". EmoBox's speaker field ("spk")
is, for IEMOCAP, the dialog prefix (``Ses01F`` for both actors of ``Ses01F_impro04``), so speakers are
never taken from these files: they come from the data dir.

s3prl's SUPERB emotion recognition task (``s3prl/downstream/emotion``) reads
``meta_data/Session<k>/{train,test}_meta_data.json``: ``{"labels": {"neu": 0, "hap": 1, "ang": 2, "sad": 3},
"meta_data": [{"path": "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav", "label": "neu",
"speaker": "Ses01F"}, ...]}``, paths relative to the corpus root, ``speaker`` the first ``_`` token of the
file name (again the dialog prefix). Session<k> is the test session of fold k; s3prl draws its dev set from
the training file at training time, so there is no validation file.

Import (``import_emobox(path, data)``, ``import_superb(path, data)``) maps each entry to a data-dir
utterance by its audio file (stem, then the path's last folders when a stem is ambiguous), then by its key;
entries that match nothing are reported and counted (``notes``), never silently dropped. The result is a
folds.json dict (protocol ``emobox`` or ``superb``) with test/valid speakers from the data dir.

Export (``export_emobox(folds, data, out)``, ``export_superb(folds, data, out)``) writes the files from a
folds.json dict and its data dir, as those toolkits expect them: EmoBox keys ``<dataset>-<file stem>``, the
data dir's absolute wav paths, its classes as labels (label_map.json the identity); SUPERB paths relative
to the corpus root when under it, labels indexed in the data dir's class order, train = sertk's train and
valid (s3prl splits dev itself), speaker the file name's first token for IEMOCAP (as s3prl writes it) and
the data dir's speaker otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soundfile as sf

from sertk.data.datadir import DataDir
from sertk.errors import SertkError
from sertk.utils import atomic_write_text, console, write_json

PARTS = ("train", "valid", "test")
MAX_SHOWN = 20
# EmoBox's dataset names for the corpora sertk prepares (corpus.json "corpus" -> EmoBox name).
EMOBOX_NAMES = {
    "IEMOCAP": "iemocap",
    "EmoDB": "emodb",
    "RAVDESS": "ravdess",
    "CREMA-D": "cremad",
    "MSP-Podcast": "msppodcast",
}
FOLD_NUMBER = re.compile(r"(\d+)$")


class _Index:
    """Finds the data-dir utterance of another toolkit's entry by its audio file or key."""

    def __init__(self, data: DataDir) -> None:
        self.utts = set(data.utts)
        self.wavs = {utt: Path(path) for utt, path in data["wav.scp"].items()}
        self.by_stem: dict[str, list[str]] = {}
        for utt, wav in sorted(self.wavs.items()):
            self.by_stem.setdefault(wav.stem, []).append(utt)

    def find(self, path: str | None, name: str | None) -> str | None:
        """The utterance of an entry with audio ``path`` (any prefix) and id ``name``, None if none fits."""
        if path:
            rel = Path(path)
            found = self.by_stem.get(rel.stem, [])
            if len(found) > 1:
                found = [u for u in found if self.wavs[u].parts[-2:] == rel.parts[-2:]]
            if len(found) == 1:
                return found[0]
        if name and name in self.utts:
            return name
        if name and len(self.by_stem.get(name, [])) == 1:
            return self.by_stem[name][0]
        return None


class _Problems:
    """Entries that name no utterance, or one already placed in the fold: shown (a few) and counted."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, message: str) -> None:
        self.lines.append(message)
        if len(self.lines) <= MAX_SHOWN:
            console.print(message, markup=False, soft_wrap=True)

    def notes(self) -> list[str]:
        if not self.lines:
            return []
        return [f"{len(self.lines)} entries of {self.source} were left out (first: {self.lines[0]})"]


class _FoldParts:
    """The parts of one imported fold, filled entry by entry; an utterance goes to one part only."""

    def __init__(self, index: _Index, problems: _Problems) -> None:
        self.index, self.problems = index, problems
        self.parts: dict[str, list[str]] = {p: [] for p in PARTS}
        self.owner: dict[str, str] = {}

    def place(self, entries: list[tuple[str, str | None, str | None]], part: str) -> None:
        """Map (where, audio path, id) entries into ``part``; the ones that fit nothing are problems."""
        for where, path, name in entries:
            utt = self.index.find(path, name)
            if utt is None:
                self.problems.add(
                    f"{where}: {name or path}: no utterance of the data dir has this audio or id"
                )
            elif utt in self.owner:
                self.problems.add(f"{where}: {utt}: already in {self.owner[utt]}")
            else:
                self.owner[utt] = part
                self.parts[part].append(utt)

    def fold(self, name: str, data: DataDir) -> dict:
        """The folds.json fold, its speakers taken from the data dir."""
        if not self.parts["train"] or not self.parts["test"]:
            raise SertkError(f"{name}: no train or no test entries name utterances of {data.path}")
        spk = data["utt2spk"]
        return {
            "name": name,
            **{p: sorted(self.parts[p]) for p in PARTS},
            "test_speakers": sorted({spk[u] for u in self.parts["test"]}),
            "valid_speakers": sorted({spk[u] for u in self.parts["valid"]}),
        }


def _number(name: str, position: int) -> int:
    match = FOLD_NUMBER.search(name)
    return int(match[1]) if match else position


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise SertkError(f"{path}: cannot read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SertkError(f"{path}: invalid JSON ({getattr(err, 'msg', err)})") from None


def _emobox_entries(path: Path) -> list[tuple[str, str | None, str | None]]:
    """(file:line, audio path, key) of an EmoBox jsonl (or json) fold file."""
    entries = []
    if path.suffix == ".jsonl":
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise SertkError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
            if not isinstance(item, dict):
                raise SertkError(f"{path}:{line_no}: expected a JSON object")
            entries.append((f"{path}:{line_no}", item.get("wav") or item.get("audio"), item.get("key")))
    else:
        items = _read_json(path)
        if not isinstance(items, dict):
            raise SertkError(f"{path}: expected an object keyed by EmoBox keys")
        for key, item in items.items():
            audio = item.get("wav") or item.get("audio") if isinstance(item, dict) else None
            entries.append((f"{path}: {key}", audio, key))
    return entries


def _emobox_key_stem(key: str | None, dataset: str) -> str | None:
    """``iemocap-Ses01F_impro04_F000`` -> ``Ses01F_impro04_F000`` (the file stem EmoBox keys carry)."""
    if key and key.startswith(dataset + "-"):
        return key[len(dataset) + 1 :]
    return key


def _import_folds(
    path: Path, data: DataDir, pattern: str, what: str, read_fold: Callable[[Path, int, _FoldParts], None]
) -> tuple[list[dict], _Problems]:
    """One fold per sub-folder of ``path`` matching ``pattern``, numbered by the digits its name ends in."""
    folders = sorted((p for p in path.glob(pattern) if p.is_dir()), key=lambda p: _number(p.name, 0))
    if not folders:
        raise SertkError(f"{path}: not {what}")
    index, problems = _Index(data), _Problems(path)
    folds = []
    for position, folder in enumerate(folders, 1):
        number = _number(folder.name, position)
        parts = _FoldParts(index, problems)
        read_fold(folder, number, parts)
        folds.append(parts.fold(f"fold{number}", data))
    return folds, problems


def _read_emobox_fold(folder: Path, number: int, parts: _FoldParts) -> None:
    for part in PARTS:
        pattern = f"*_{part}_fold_{number}"
        for file in sorted(folder.glob(f"{pattern}.jsonl")) or sorted(folder.glob(f"{pattern}.json")):
            dataset = file.name.split(f"_{part}_fold_")[0]
            parts.place([(w, a, _emobox_key_stem(k, dataset)) for w, a, k in _emobox_entries(file)], part)


def _read_superb_fold(folder: Path, number: int, parts: _FoldParts) -> None:
    for part in ("train", "test"):
        file = folder / f"{part}_meta_data.json"
        meta = _read_json(file)
        if not isinstance(meta, dict) or not isinstance(meta.get("meta_data"), list):
            raise SertkError(f"{file}: expected {{'labels': ..., 'meta_data': [...]}}")
        items = [item for item in meta["meta_data"] if isinstance(item, dict)]
        parts.place([(f"{file}: entry {i}", it.get("path"), None) for i, it in enumerate(items, 1)], part)


def import_emobox(path: str | Path, data: DataDir) -> dict:
    """Read an EmoBox dataset dir (``fold_<k>/...jsonl``, see the module docstring) as a folds.json dict."""
    folds, problems = _import_folds(
        Path(path), data, "fold_*", "an EmoBox dataset dir (no fold_<k> folders)", _read_emobox_fold
    )
    notes = problems.notes()
    if not any(f["valid"] for f in folds):
        notes.append("EmoBox gives no validation part for these folds: valid is empty")
    return {"protocol": "emobox", "source": str(path), "folds": folds, "notes": notes}


def import_superb(path: str | Path, data: DataDir) -> dict:
    """Read s3prl's ``meta_data/Session<k>/{train,test}_meta_data.json`` as a folds.json dict."""
    folds, problems = _import_folds(
        Path(path),
        data,
        "Session*",
        "an s3prl emotion meta_data dir (no Session<k> folders)",
        _read_superb_fold,
    )
    notes = problems.notes() + ["s3prl draws its dev set from the training file: valid is empty"]
    return {"protocol": "superb", "source": str(path), "folds": folds, "notes": notes}


def emobox_dataset_name(data: DataDir) -> str:
    """EmoBox's name of the data dir's corpus (``iemocap``, ``cremad``, ...)."""
    corpus = str(data.meta.get("corpus", "corpus"))
    return EMOBOX_NAMES.get(corpus, re.sub(r"[^a-z0-9]", "", corpus.lower()) or "corpus")


def _emobox_entry(utt: str, data: DataDir, dataset: str) -> dict:
    wav = data["wav.scp"][utt]
    try:
        info = sf.info(wav)
    except (sf.LibsndfileError, RuntimeError, OSError):
        raise SertkError(f"{wav}: cannot read the audio header (utterance {utt})") from None
    return {
        "key": f"{dataset}-{Path(wav).stem}",
        "dataset": dataset,
        "wav": wav,
        "type": "raw",
        "sample_rate": info.samplerate,
        "num_frame": float(info.frames),
        "task": "category",
        "length": info.frames / info.samplerate,
        "emo": data["utt2emo"][utt],
        "channel": info.channels,
    }


def export_emobox(folds: dict, data: DataDir, out: str | Path) -> list[Path]:
    """Write ``folds`` as an EmoBox dataset dir ``out`` (module docstring); returns the files written."""
    out = Path(out)
    dataset = emobox_dataset_name(data)
    written = []
    for position, fold in enumerate(folds["folds"], 1):
        number = _number(fold["name"], position)
        for part in PARTS:
            if not fold[part]:
                continue
            entries = [_emobox_entry(u, data, dataset) for u in fold[part]]
            stem = out / f"fold_{number}" / f"{dataset}_{part}_fold_{number}"
            atomic_write_text(stem.with_suffix(".jsonl"), "".join(json.dumps(e) + "\n" for e in entries))
            keyed = {
                e["key"]: {k: e[k] for k in ("wav", "length", "emo", "dataset", "channel")} for e in entries
            }
            write_json(stem.with_suffix(".json"), keyed)
            written += [stem.with_suffix(".jsonl"), stem.with_suffix(".json")]
    write_json(out / "label_map.json", {c: c for c in data.classes})
    return [*written, out / "label_map.json"]


def superb_speaker(utt: str, data: DataDir) -> str:
    """s3prl's speaker field: IEMOCAP's file-name prefix (as s3prl writes it), else the data dir's speaker."""
    if data.meta.get("corpus") == "IEMOCAP":
        return Path(data["wav.scp"][utt]).name.split("_")[0]
    return data["utt2spk"][utt]


def export_superb(folds: dict, data: DataDir, out: str | Path) -> list[Path]:
    """Write ``folds`` as s3prl's ``meta_data`` dir ``out`` (module docstring); returns the files written."""
    out = Path(out)
    root = Path(str(data.meta.get("root", "/")))
    labels = {c: i for i, c in enumerate(data.classes)}

    def entry(utt: str) -> dict:
        wav = Path(data["wav.scp"][utt])
        path = wav.relative_to(root) if wav.is_relative_to(root) else wav
        return {"path": str(path), "label": data["utt2emo"][utt], "speaker": superb_speaker(utt, data)}

    written = []
    for position, fold in enumerate(folds["folds"], 1):
        session = out / f"Session{_number(fold['name'], position)}"
        for part, utts in (("train", fold["train"] + fold["valid"]), ("test", fold["test"])):
            file = session / f"{part}_meta_data.json"
            write_json(file, {"labels": labels, "meta_data": [entry(u) for u in sorted(utts)]})
            written.append(file)
    return written
