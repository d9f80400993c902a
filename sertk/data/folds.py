"""Cross-validation folds over a data dir: leave-one-session-out, leave-one-speaker-out, random.

folds.json: ``{"protocol", "seed", "folds": [{"name": "fold1", "train": [...], "valid": [...],
"test": [...]}]}`` plus, for ``loso-*``, ``test_speakers``/``valid_speakers`` per fold and, for
``random``, ``ratios`` and ``repeats``; ``notes`` says what was left out when the data lacks a session or
speaker. No utterance is in two parts of a fold; for ``loso-*`` no speaker is in two parts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sertk.data.datadir import DataDir
from sertk.errors import SertkError
from sertk.utils import console, write_json

PROTOCOLS = ("loso-session", "loso-speaker", "random")
PARTS = ("train", "valid", "test")
SPEAKER_ID = re.compile(r"Ses(\d\d)([FM])")
SESSION_NAME = re.compile(r"Session(\d+)")


def _session_of(data: DataDir) -> dict[str, str]:
    """utt -> session name, from utt2session or else from the speaker id (``Ses03F`` -> ``Session3``)."""
    if "utt2session" in data.tables:
        return data.tables["utt2session"]
    sessions = {}
    for utt, spk in data["utt2spk"].items():
        match = SPEAKER_ID.fullmatch(spk)
        if match is None:
            raise SertkError(f"{data.path}: no utt2session and speaker {spk} does not name a session")
        sessions[utt] = f"Session{int(match[1])}"
    return sessions


def _session_number(name: str, position: int) -> int:
    match = SESSION_NAME.fullmatch(name)
    return int(match[1]) if match else position


def _speaker_number(spk: str, position: int) -> int:
    """Ses01F -> 1, Ses01M -> 2, ..., Ses05M -> 10: the fold number of the full 10-speaker protocol."""
    match = SPEAKER_ID.fullmatch(spk)
    return 2 * (int(match[1]) - 1) + (1 if match[2] == "F" else 2) if match else position


def _speaker_fold(name: str, data: DataDir, test: set[str], valid: set[str]) -> dict:
    spk = data["utt2spk"]
    parts = {"train": [], "valid": [], "test": []}
    for utt in data.utts:
        part = "test" if spk[utt] in test else "valid" if spk[utt] in valid else "train"
        parts[part].append(utt)
    return {"name": name, **parts, "test_speakers": sorted(test), "valid_speakers": sorted(valid)}


def leave_one_session_out(data: DataDir) -> tuple[list[dict], list[str]]:
    """One fold per session: test = that session, valid = the next session, train = the rest.

    Validation is both speakers of the next session present in the data (Session5 -> Session1), so it is
    speaker-independent like the test set and no speaker appears in two parts. Folds are named after the
    test session (fold3 tests Session3) so that names agree with the full corpus on a subset.
    """
    session_of = _session_of(data)
    sessions = sorted(set(session_of.values()), key=lambda s: (_session_number(s, 0), s))
    if len(sessions) < 3:
        raise SertkError(f"{data.path}: loso-session needs at least 3 sessions, the data has {len(sessions)}")
    notes = []
    if len(sessions) < 5:
        notes.append(f"loso-session: {len(sessions)} folds, for the sessions present ({', '.join(sessions)})")
    numbers = [_session_number(s, i + 1) for i, s in enumerate(sessions)]
    spk_by_session: dict[str, set[str]] = {}
    for utt, spk in data["utt2spk"].items():
        spk_by_session.setdefault(session_of[utt], set()).add(spk)
    folds = []
    for i, (session, number) in enumerate(zip(sessions, numbers, strict=True)):
        valid_session = sessions[(i + 1) % len(sessions)]
        folds.append(
            _speaker_fold(f"fold{number}", data, spk_by_session[session], spk_by_session[valid_session])
        )
    return folds, notes


def leave_one_speaker_out(data: DataDir) -> tuple[list[dict], list[str]]:
    """One fold per speaker: test = that speaker, valid = the other speaker of the same session.

    As in cnn_blstm_vtlp.txt (10 folds, Ses01F, Ses01M, ...). A speaker whose session partner is absent
    from the data gets no fold (noted), since its validation set would be empty.
    """
    session_of = _session_of(data)
    spk_session: dict[str, str] = {}
    for utt, spk in data["utt2spk"].items():
        spk_session[spk] = session_of[utt]
    speakers = sorted(spk_session, key=lambda s: (_speaker_number(s, 0), s))
    folds, notes = [], []
    for position, spk in enumerate(speakers, 1):
        partners = {s for s in speakers if spk_session[s] == spk_session[spk] and s != spk}
        if not partners:
            notes.append(f"loso-speaker: {spk} has no session partner in the data, so no fold tests it")
            continue
        folds.append(_speaker_fold(f"fold{_speaker_number(spk, position)}", data, {spk}, partners))
    if len(folds) < len(speakers) or len(speakers) < 10:
        notes.append(f"loso-speaker: {len(folds)} folds for {len(speakers)} speakers present")
    if not folds:
        raise SertkError(f"{data.path}: loso-speaker needs two speakers in one session, found none")
    return folds, notes


def check_ratios(ratios: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate train/valid/test ratios: three non-negative numbers summing to 1, train and test > 0."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise SertkError(f"--ratios {','.join(map(str, ratios))}: need 3 non-negative numbers summing to 1")
    if ratios[0] == 0 or ratios[2] == 0:
        raise SertkError(f"--ratios {','.join(map(str, ratios))}: train and test ratios must be > 0")
    return ratios


def stratified_random(
    data: DataDir, ratios: tuple[float, float, float], repeats: int, seed: int
) -> tuple[list[dict], list[str]]:
    """``repeats`` random train/valid/test splits, each class split in ``ratios`` (fold k uses seed+k-1).

    0.55/0.25/0.2 x5 as crnn_discriminative.txt; 0.8/0.1/0.1 x10 as rlc_gca_lstm.md.
    """
    ratios = check_ratios(ratios)
    if repeats < 1:
        raise SertkError(f"--repeats {repeats}: must be at least 1")
    emo = data["utt2emo"]
    by_class: dict[str, list[str]] = {}
    for utt in data.utts:
        by_class.setdefault(emo[utt], []).append(utt)
    bounds = np.cumsum(ratios)[:2]
    folds = []
    for k in range(repeats):
        rng = np.random.default_rng(seed + k)
        parts: dict[str, list[str]] = {p: [] for p in PARTS}
        for cls in sorted(by_class):
            utts = np.array(by_class[cls])
            order = utts[rng.permutation(len(utts))]
            # Cumulative rounding keeps every class's three parts summing to its size.
            cut_train, cut_valid = np.rint(bounds * len(utts)).astype(int)
            parts["train"] += order[:cut_train].tolist()
            parts["valid"] += order[cut_train:cut_valid].tolist()
            parts["test"] += order[cut_valid:].tolist()
        folds.append({"name": f"fold{k + 1}", **{p: sorted(parts[p]) for p in PARTS}})
    return folds, []


def make_folds(
    data: DataDir,
    protocol: str,
    ratios: tuple[float, float, float] = (0.55, 0.25, 0.2),
    repeats: int = 5,
    seed: int = 0,
) -> dict:
    """Folds of ``data`` under ``protocol`` (loso-session, loso-speaker or random) as a folds.json dict."""
    if protocol == "loso-session":
        folds, notes = leave_one_session_out(data)
    elif protocol == "loso-speaker":
        folds, notes = leave_one_speaker_out(data)
    elif protocol == "random":
        folds, notes = stratified_random(data, ratios, repeats, seed)
    else:
        raise SertkError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    out: dict = {"protocol": protocol, "seed": seed}
    if protocol == "random":
        out["ratios"] = list(check_ratios(ratios))
        out["repeats"] = repeats
    if notes:
        out["notes"] = notes
    out["folds"] = folds
    return out


def check_folds(folds: dict, data: DataDir | None = None, where: str = "folds") -> None:
    """Raise SertkError unless ``folds`` has the folds.json shape and its invariants hold.

    Invariants: protocol known; fold names unique; train and test non-empty; no utterance twice in a fold;
    with ``data``: every id is in the data dir and, for ``loso-*``, no speaker is in two parts.
    """
    if not isinstance(folds, dict) or not isinstance(folds.get("folds"), list):
        raise SertkError(f"{where}: not a folds file (expected {{'protocol': ..., 'folds': [...]}})")
    protocol = folds.get("protocol")
    if protocol not in PROTOCOLS:
        raise SertkError(f"{where}: unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    if not folds["folds"]:
        raise SertkError(f"{where}: no folds")
    known = set(data.utts) if data is not None else None
    names: set[str] = set()
    for fold in folds["folds"]:
        if not isinstance(fold, dict) or not isinstance(fold.get("name"), str):
            raise SertkError(f"{where}: every fold needs a name")
        name = fold["name"]
        if name in names:
            raise SertkError(f"{where}: fold name {name} appears twice")
        names.add(name)
        owner: dict[str, str] = {}
        for part in PARTS:
            utts = fold.get(part)
            if not isinstance(utts, list) or not all(isinstance(u, str) for u in utts):
                raise SertkError(f"{where}: {name}.{part} must be a list of utterance ids")
            for utt in utts:
                if utt in owner:
                    raise SertkError(f"{where}: {name}: utterance {utt} is in both {owner[utt]} and {part}")
                owner[utt] = part
            if known is not None and not known.issuperset(utts):
                missing = sorted(set(utts) - known)
                raise SertkError(
                    f"{where}: {name}.{part}: {len(missing)} ids not in {data.path}, first {missing[0]}"
                )
        for part in ("train", "test"):
            if not fold[part]:
                raise SertkError(f"{where}: {name}.{part} is empty")
        if data is not None and protocol.startswith("loso"):
            spk = data["utt2spk"]
            speaker_part: dict[str, str] = {}
            for utt, part in owner.items():
                first = speaker_part.setdefault(spk[utt], part)
                if first != part:
                    raise SertkError(f"{where}: {name}: speaker {spk[utt]} is in both {first} and {part}")


def write_folds(path: Path, folds: dict, data: DataDir) -> None:
    """Check the invariants of ``folds`` against ``data`` and write them to ``path`` atomically."""
    path = Path(path)
    check_folds(folds, data, where=str(path))
    write_json(path, folds)
    for note in folds.get("notes", []):
        console.print(f"note: {note}", markup=False, soft_wrap=True)


def read_folds(path: Path, data: DataDir | None = None) -> dict:
    """Read and validate a folds.json (ids and speaker disjointness are checked against ``data`` if given)."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text())
    except OSError as err:
        raise SertkError(f"{path}: cannot read folds ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SertkError(f"{path}: invalid JSON ({getattr(err, 'msg', err)})") from None
    check_folds(folds, data, where=str(path))
    return folds


def select_folds(folds: dict, which: str) -> list[dict]:
    """Pick folds by ``"all"``, numbers (``"1"``, ``"1 3"``, ``"1,3"``) or names (``"fold2"``), in that order."""
    by_name = {f["name"]: f for f in folds["folds"]}
    tokens = which.replace(",", " ").split()
    if not tokens:
        raise SertkError(f"--folds {which!r}: empty (use all, 1, '1 3' or fold2)")
    if tokens == ["all"]:
        return list(folds["folds"])
    selected = []
    for token in tokens:
        name = f"fold{token}" if token.isdigit() else token
        if name not in by_name:
            raise SertkError(f"--folds {which!r}: no fold {name} (available: {' '.join(by_name)})")
        if by_name[name] not in selected:
            selected.append(by_name[name])
    return selected
