"""Cross-validation folds over a data dir, one function per protocol, named in folds.json and results.json.

folds.json: ``{"protocol", "seed", "folds": [{"name": "fold1", "train": [...], "valid": [...],
"test": [...]}]}`` plus per protocol ``test_speakers``/``valid_speakers`` per fold, ``ratios``, ``repeats``,
``valid_ratio``, and ``notes`` saying what was left out when the data lacks a session or speaker. No
utterance is in two parts of a fold; for the speaker-independent protocols no speaker of the test part is
in another part. ``valid`` may be empty (protocols without validation: train with ``train.select: last``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sertk import provenance
from sertk.data import protocols_corpora
from sertk.data.datadir import DataDir, data_dir_digest
from sertk.errors import SertkError
from sertk.utils import console, write_json

PARTS = ("train", "valid", "test")


@dataclass
class FoldOptions:
    """Options shared by the protocols (each uses the ones it names)."""

    ratios: tuple[float, float, float] = (0.55, 0.25, 0.2)  # train, valid, test (kfold, random)
    repeats: int = 5  # number of folds (kfold) or of random splits (random)
    valid_ratio: float = 0.1  # loso-session: share of the training sessions held out for validation
    seed: int = 0
    test_partitions: tuple[str, ...] = ("Test1",)  # official: one fold per named test partition


def _session_of(data: DataDir) -> dict[str, str]:
    if "utt2session" not in data.tables:
        raise SertkError(f"{data.path}: no utt2session table, which the session protocols need")
    if data.meta.get("corpus") == "MSP-Podcast":
        # Its utt2session holds the official partitions, not recording sessions.
        raise SertkError(f"{data.path}: MSP-Podcast has no sessions; use --protocol official")
    return data.tables["utt2session"]


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _by_class(data: DataDir, utts: list[str]) -> dict[str, list[str]]:
    emo = data["utt2emo"]
    groups: dict[str, list[str]] = {}
    for utt in sorted(utts):
        groups.setdefault(emo[utt], []).append(utt)
    return groups


def stratified_draw(data: DataDir, utts: list[str], share: float, rng: np.random.Generator) -> list[str]:
    """``share`` of ``utts`` drawn per class (rounded per class), the validation part of a protocol."""
    drawn: list[str] = []
    for _, members in sorted(_by_class(data, utts).items()):
        count = int(round(share * len(members)))
        drawn += [members[i] for i in sorted(rng.permutation(len(members))[:count])]
    return sorted(drawn)


def _fold(name: str, data: DataDir, test: set[str], valid: set[str], **extra) -> dict:
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for utt in data.utts:
        parts["test" if utt in test else "valid" if utt in valid else "train"].append(utt)
    return {"name": name, **parts, **extra}


def _utts_of(data: DataDir, table: dict[str, str], values: set[str]) -> set[str]:
    return {u for u in data.utts if table[u] in values}


def _speakers(data: DataDir, utts: set[str]) -> list[str]:
    spk = data["utt2spk"]
    return sorted({spk[u] for u in utts})


def _sessions(data: DataDir) -> list[str]:
    sessions = sorted(set(_session_of(data).values()), key=_natural)
    if len(sessions) < 3:
        raise SertkError(
            f"{data.path}: a session protocol needs at least 3 sessions, the data has {len(sessions)}"
        )
    return sessions


def _session_fold_name(session: str, position: int) -> str:
    digits = "".join(c for c in session if c.isdigit())
    return f"fold{int(digits) if digits else position}"


def leave_one_session_out(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """One fold per session: test = that session; train = the other sessions less a validation share.

    lstm_attention.txt §4 ("4 sessions as training set and the last session as testing set") and the
    SUPERB/EmoBox protocol: every non-test session trains; the validation part (for model selection) is a
    class-stratified ``valid_ratio`` of their utterances (0 = none). Folds are named after the test session.
    """
    session_of = _session_of(data)
    folds = []
    for position, session in enumerate(_sessions(data), 1):
        test = _utts_of(data, session_of, {session})
        rest = [u for u in data.utts if u not in test]
        rng = np.random.default_rng(opts.seed + position)
        valid = set(stratified_draw(data, rest, opts.valid_ratio, rng)) if opts.valid_ratio > 0 else set()
        folds.append(
            _fold(
                _session_fold_name(session, position), data, test, valid, test_speakers=_speakers(data, test)
            )
        )
    return folds, _session_notes(data)


def leave_one_session_out_next_valid(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """One fold per session: test = that session, validation = the next session (5 -> 1), train = 3 sessions.

    sertk's speaker-independent validation variant (validation speakers unseen in training, like the test).
    """
    session_of = _session_of(data)
    sessions = _sessions(data)
    folds = []
    for position, session in enumerate(sessions, 1):
        test = _utts_of(data, session_of, {session})
        valid = _utts_of(data, session_of, {sessions[position % len(sessions)]})
        folds.append(
            _fold(
                _session_fold_name(session, position),
                data,
                test,
                valid,
                test_speakers=_speakers(data, test),
                valid_speakers=_speakers(data, valid),
            )
        )
    return folds, _session_notes(data)


def _session_notes(data: DataDir) -> list[str]:
    sessions = _sessions(data)
    return (
        [f"{len(sessions)} folds, for the sessions present ({', '.join(sessions)})"]
        if len(sessions) < 5
        else []
    )


def _speaker_sessions(data: DataDir) -> tuple[list[str], dict[str, str]]:
    session_of = data.tables.get("utt2session", {})
    spk_session = {spk: session_of.get(utt, spk) for utt, spk in data["utt2spk"].items()}
    return sorted(spk_session, key=lambda s: (_natural(spk_session[s]), s)), spk_session


def leave_one_speaker_out(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """One fold per speaker: test = that speaker, validation = the other speaker(s) of its session.

    cnn_blstm_vtlp.txt §3 (10 folds: one speaker tested, its session partner for validation). A speaker
    without a session partner in the data gets no fold (noted). Folds are numbered in speaker order
    (Ses01F = 1, Ses01M = 2, ... on IEMOCAP).
    """
    spk = data["utt2spk"]
    speakers, spk_session = _speaker_sessions(data)
    folds, notes = [], []
    for position, speaker in enumerate(speakers, 1):
        partners = {s for s in speakers if spk_session[s] == spk_session[speaker] and s != speaker}
        if not partners:
            notes.append(f"{speaker} has no session partner in the data, so no fold tests it")
            continue
        test, valid = _utts_of(data, spk, {speaker}), _utts_of(data, spk, partners)
        folds.append(
            _fold(
                f"fold{position}", data, test, valid, test_speakers=[speaker], valid_speakers=sorted(partners)
            )
        )
    if not folds:
        raise SertkError(f"{data.path}: loso-speaker needs two speakers in one session, found none")
    return folds, notes


def leave_one_speaker_out_no_valid(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """One fold per speaker: test = that speaker, train = all the others, no validation part.

    attention_pooling_cnn.txt §3.1 (10 folds, 9 speakers train and 1 test; the last epoch's model is tested).
    """
    spk = data["utt2spk"]
    speakers, _ = _speaker_sessions(data)
    if len(speakers) < 2:
        raise SertkError(f"{data.path}: loso-speaker-noval needs at least two speakers")
    folds = [
        _fold(f"fold{position}", data, _utts_of(data, spk, {speaker}), set(), test_speakers=[speaker])
        for position, speaker in enumerate(speakers, 1)
    ]
    return folds, []


def check_ratios(ratios: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate train/valid/test ratios: three non-negative numbers summing to 1, train and test > 0."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise SertkError(f"--ratios {','.join(map(str, ratios))}: need 3 non-negative numbers summing to 1")
    if ratios[0] == 0 or ratios[2] == 0:
        raise SertkError(f"--ratios {','.join(map(str, ratios))}: train and test ratios must be > 0")
    return ratios


def stratified_kfold(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """A k-fold partition: the k test parts are disjoint, class-stratified, and cover the data once.

    crnn_discriminative.txt ("0.55 : 0.25 : 0.2 ... 5-fold cross-validation") and rlc_gca_lstm.md ("8:1:1 ...
    10-fold"): k = ``repeats`` must equal 1 / test ratio. Each class is shuffled once and dealt into k
    near-equal parts; fold k tests part k and draws its validation part, valid ratio x class size per class,
    from the other parts.
    """
    train_r, valid_r, test_r = check_ratios(opts.ratios)
    k = opts.repeats
    if k < 2 or abs(k * test_r - 1.0) > 0.02:
        raise SertkError(f"--protocol kfold: --repeats {k} folds need a test ratio of 1/{k}, got {test_r}")
    rng = np.random.default_rng(opts.seed)
    parts: list[list[str]] = [[] for _ in range(k)]
    for _, members in sorted(_by_class(data, data.utts).items()):
        shuffled = [members[i] for i in rng.permutation(len(members))]
        # Deal from a rotating start so that no part is always the one with the extra utterance.
        offset = int(rng.integers(k))
        for i, utt in enumerate(shuffled):
            parts[(i + offset) % k].append(utt)
    folds = []
    for index in range(k):
        test = set(parts[index])
        rest = [u for u in data.utts if u not in test]
        share = valid_r / (train_r + valid_r)
        valid = set(stratified_draw(data, rest, share, np.random.default_rng(opts.seed + 1 + index)))
        folds.append(_fold(f"fold{index + 1}", data, test, valid))
    return folds, []


def stratified_random(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """``repeats`` independent random train/valid/test splits, each class split in ``ratios`` (fold k: seed+k-1).

    The test parts of different splits overlap; ``kfold`` is the partition the papers' "k-fold" means.
    """
    ratios = check_ratios(opts.ratios)
    if opts.repeats < 1:
        raise SertkError(f"--repeats {opts.repeats}: must be at least 1")
    bounds = np.cumsum(ratios)[:2]
    folds = []
    for k in range(opts.repeats):
        rng = np.random.default_rng(opts.seed + k)
        test: set[str] = set()
        valid: set[str] = set()
        for _, members in sorted(_by_class(data, data.utts).items()):
            order = [members[i] for i in rng.permutation(len(members))]
            # Cumulative rounding keeps every class's three parts summing to its size.
            cut_train, cut_valid = np.rint(bounds * len(order)).astype(int)
            valid.update(order[cut_train:cut_valid])
            test.update(order[cut_valid:])
        folds.append(_fold(f"fold{k + 1}", data, test, valid))
    return folds, []


def leave_one_speaker_out_next_valid(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """One fold per speaker: test that speaker, validate on the next speaker (sorted ids), train the rest.

    EmoDB's usual protocol (10 speakers, no sessions): see ``sertk.data.protocols_corpora``.
    """
    return protocols_corpora.leave_one_speaker_out(data["utt2spk"], valid="next"), []


def speaker_kfold(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """k = ``repeats`` sex-balanced speaker groups: test group i, validate group i+1 (RAVDESS 6, CREMA-D 5)."""
    genders = data.tables.get("utt2gender")
    folds = protocols_corpora.speaker_group_kfold(data["utt2spk"], genders, k=opts.repeats, valid="next")
    return folds, protocols_corpora.classes_missing_from_train(folds, data["utt2emo"], data.classes)


def official(data: DataDir, opts: FoldOptions) -> tuple[list[dict], list[str]]:
    """The corpus's own partitions (MSP-Podcast: Train / Development / Test1, Test2), one fold per test part."""
    if "utt2session" not in data.tables:
        raise SertkError(f"{data.path}: no partition table (utt2session), which --protocol official needs")
    return protocols_corpora.official_partitions(data.tables["utt2session"], tests=opts.test_partitions), []


Protocol = Callable[[DataDir, FoldOptions], tuple[list[dict], list[str]]]

# name -> (function, one line for `sertk folds --help`, whether test speakers are unseen in train/valid)
PROTOCOLS: dict[str, tuple[Protocol, str, bool]] = {
    "loso-session": (
        leave_one_session_out,
        "test 1 session, train the other 4 less a stratified --valid-ratio for validation (lstm_attention, SUPERB)",
        True,
    ),
    "loso-session-nextval": (
        leave_one_session_out_next_valid,
        "test 1 session, validate on the next session, train the other 3 (sertk's speaker-independent variant)",
        True,
    ),
    "loso-speaker": (
        leave_one_speaker_out,
        "test 1 speaker, validate on its session partner, train the other 8 (cnn_blstm_vtlp)",
        True,
    ),
    "loso-speaker-noval": (
        leave_one_speaker_out_no_valid,
        "test 1 speaker, train the other 9, no validation: select the last epoch (attention_pooling_cnn)",
        True,
    ),
    "kfold": (
        stratified_kfold,
        "k = --repeats disjoint stratified test parts covering the data once; --ratios train,valid,test "
        "(crnn_discriminative 0.55/0.25/0.2 x5, rlc_gca_lstm 0.8/0.1/0.1 x10)",
        False,
    ),
    "random": (
        stratified_random,
        "--repeats independent stratified random splits in --ratios (test parts overlap)",
        False,
    ),
    "loso-speaker-nextval": (
        leave_one_speaker_out_next_valid,
        "test 1 speaker, validate on the next speaker, train the rest (EmoDB)",
        True,
    ),
    "speaker-kfold": (
        speaker_kfold,
        "--repeats sex-balanced speaker groups: test one, validate the next, train the rest (RAVDESS 6, CREMA-D 5)",
        True,
    ),
    "official": (
        official,
        "the corpus's own Train / Development / --test-partitions (MSP-Podcast)",
        False,
    ),
}


def make_folds(data: DataDir, protocol: str, opts: FoldOptions | None = None) -> dict:
    """Folds of ``data`` under ``protocol`` (a name of ``PROTOCOLS``) as a folds.json dict."""
    opts = opts or FoldOptions()
    if protocol not in PROTOCOLS:
        raise SertkError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    folds, notes = PROTOCOLS[protocol][0](data, opts)
    out: dict = {"protocol": protocol, "seed": opts.seed}
    if protocol in ("kfold", "random"):
        out["ratios"] = list(check_ratios(opts.ratios))
        out["repeats"] = opts.repeats
    if protocol == "loso-session":
        out["valid_ratio"] = opts.valid_ratio
    if protocol == "speaker-kfold":
        out["repeats"] = opts.repeats
    if protocol == "official":
        out["test_partitions"] = list(opts.test_partitions)
    if notes:
        out["notes"] = [f"{protocol}: {note}" for note in notes]
    out["folds"] = folds
    return out


def check_folds(folds: dict, data: DataDir | None = None, where: str = "folds") -> None:
    """Raise SertkError unless ``folds`` has the folds.json shape and its invariants hold.

    Invariants: fold names unique; train and test non-empty; no utterance twice in a fold; with ``data``:
    every id is in the data dir and, for speaker-independent protocols, no test speaker in train or valid.
    """
    if not isinstance(folds, dict) or not isinstance(folds.get("folds"), list):
        raise SertkError(f"{where}: not a folds file (expected {{'protocol': ..., 'folds': [...]}})")
    protocol = folds.get("protocol")
    if not isinstance(protocol, str) or not protocol:
        raise SertkError(f"{where}: no protocol name")
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
        owner = _part_of_each_utterance(fold, where)
        for part in ("train", "test"):
            if not fold[part]:
                raise SertkError(f"{where}: {name}.{part} is empty")
        if known is not None and not known.issuperset(owner):
            missing = sorted(set(owner) - known)
            raise SertkError(f"{where}: {name}: {len(missing)} ids not in {data.path}, first {missing[0]}")
        if data is not None and PROTOCOLS.get(protocol, (None, "", False))[2]:
            _check_speaker_independent(fold, owner, data, where)


def _part_of_each_utterance(fold: dict, where: str) -> dict[str, str]:
    owner: dict[str, str] = {}
    for part in PARTS:
        utts = fold.get(part)
        if not isinstance(utts, list) or not all(isinstance(u, str) for u in utts):
            raise SertkError(f"{where}: {fold['name']}.{part} must be a list of utterance ids")
        for utt in utts:
            if utt in owner:
                raise SertkError(
                    f"{where}: {fold['name']}: utterance {utt} is in both {owner[utt]} and {part}"
                )
            owner[utt] = part
    return owner


def _check_speaker_independent(fold: dict, owner: dict[str, str], data: DataDir, where: str) -> None:
    spk = data["utt2spk"]
    test_speakers = {spk[u] for u, part in owner.items() if part == "test"}
    for utt, part in owner.items():
        if part != "test" and spk[utt] in test_speakers:
            raise SertkError(f"{where}: {fold['name']}: test speaker {spk[utt]} is also in {part}")


def folds_record(data: DataDir, protocol: str, opts: FoldOptions) -> provenance.Record:
    """What a folds file is made from: the data dir's content and the protocol's options."""
    options = {"protocol": protocol, "ratios": list(opts.ratios), "repeats": opts.repeats}
    options.update(
        {"valid_ratio": opts.valid_ratio, "seed": opts.seed, "test_partitions": list(opts.test_partitions)}
    )
    return provenance.Record(stage="folds", inputs={"data": data_dir_digest(data.path)}, options=options)


def write_folds(path: Path, folds: dict, data: DataDir, record: provenance.Record | None = None) -> None:
    """Check the invariants of ``folds`` against ``data`` and write them (then their record) atomically."""
    path = Path(path)
    if path.is_dir():
        raise SertkError(f"{path}: is a directory; give the folds file to write (e.g. {path / 'folds.json'})")
    check_folds(folds, data, where=str(path))
    record_file = provenance.record_path(path)
    provenance.remove_record(record_file)
    write_json(path, folds)
    if record is not None:
        provenance.write_record(record_file, record, [path])
    for note in folds.get("notes", []):
        console.print(f"note: {note}", markup=False, soft_wrap=True)


def read_folds(path: Path, data: DataDir | None = None) -> dict:
    """Read and validate a folds.json (ids and speaker independence are checked against ``data`` if given)."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text())
    except IsADirectoryError:
        raise SertkError(f"{path}: is a directory, not a folds file") from None
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
