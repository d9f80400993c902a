"""Fold protocols of the acted and podcast corpora, as pure functions of utterance tables.

Each returns a list of folds.json fold dicts ``{"name", "train", "valid", "test", ...}`` (ids sorted):

- ``leave_one_speaker_out(utt2spk)``: one fold per speaker, that speaker tested; validation is the next
  speaker in sorted order (EmoDB: 10 folds of 1 test and 1 validation speaker, 8 training speakers).
- ``speaker_group_kfold(utt2spk, utt2gender, k)``: the speakers dealt into k groups balanced by sex (sorted
  by sex then id, dealt round robin, so group sizes and sex counts differ by one at most); fold i tests
  group i and validates on group i+1. RAVDESS: k=6 (4 actors a fold, 2 female and 2 male, as EmoBox's 6
  folds of 4 actors); CREMA-D: k=5 (18-19 of its 91 actors a fold), the speaker-independent 5-fold
  cross-validation most CREMA-D papers report.
- ``official_partitions(utt2part)``: a corpus's own split (MSP-Podcast: train Train, valid Development,
  one fold per test set: fold1 tests Test1, fold2 Test2).

In the cross-validation protocols every utterance is tested exactly once and no speaker is in two parts of
a fold; ``valid="none"`` leaves validation empty (the trainer then selects the last epoch) and gives the
speakers to training. ``classes_missing_from_train`` lists what a fold's training part lacks.
"""

from __future__ import annotations

import re
from collections import Counter

from sertk.errors import SertkError

VALID_CHOICES = ("next", "none")


def _check_valid(valid: str) -> None:
    if valid not in VALID_CHOICES:
        raise SertkError(f"validation {valid!r}: expected one of {', '.join(VALID_CHOICES)}")


def _speaker_fold(name: str, utt2spk: dict[str, str], test: set[str], valid: set[str]) -> dict:
    parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for utt in sorted(utt2spk):
        spk = utt2spk[utt]
        parts["test" if spk in test else "valid" if spk in valid else "train"].append(utt)
    if not parts["train"]:
        raise SertkError(
            f"{name}: no training speakers left (test {sorted(test)}, validation {sorted(valid)})"
        )
    return {"name": name, **parts, "test_speakers": sorted(test), "valid_speakers": sorted(valid)}


def leave_one_speaker_out(utt2spk: dict[str, str], valid: str = "next") -> list[dict]:
    """One fold per speaker (sorted ids): test that speaker, validate on the next one (or none)."""
    _check_valid(valid)
    speakers = sorted(set(utt2spk.values()))
    if len(speakers) < (3 if valid == "next" else 2):
        raise SertkError(f"leave-one-speaker-out needs at least 3 speakers, the data has {len(speakers)}")
    folds = []
    for i, spk in enumerate(speakers):
        valid_speakers = {speakers[(i + 1) % len(speakers)]} if valid == "next" else set()
        folds.append(_speaker_fold(f"fold{i + 1}", utt2spk, {spk}, valid_speakers))
    return folds


def speaker_genders(utt2spk: dict[str, str], utt2gender: dict[str, str] | None) -> dict[str, str]:
    """Speaker -> the gender most of its utterances have (``U`` without utt2gender)."""
    votes: dict[str, Counter[str]] = {}
    for utt, spk in utt2spk.items():
        votes.setdefault(spk, Counter())[(utt2gender or {}).get(utt, "U")] += 1
    return {spk: counts.most_common(1)[0][0] for spk, counts in votes.items()}


def speaker_groups(genders: dict[str, str], k: int) -> list[list[str]]:
    """The speakers sorted by (gender, id) and dealt round robin into k groups: balanced sizes and sexes."""
    groups: list[list[str]] = [[] for _ in range(k)]
    for i, spk in enumerate(sorted(genders, key=lambda s: (genders[s], s))):
        groups[i % k].append(spk)
    return [sorted(g) for g in groups]


def speaker_group_kfold(
    utt2spk: dict[str, str], utt2gender: dict[str, str] | None = None, k: int = 5, valid: str = "next"
) -> list[dict]:
    """k speaker-independent folds over sex-balanced speaker groups: test group i, validate group i+1."""
    _check_valid(valid)
    genders = speaker_genders(utt2spk, utt2gender)
    if k < (3 if valid == "next" else 2) or k > len(genders):
        raise SertkError(
            f"speaker group k-fold: k={k} needs 3 <= k <= {len(genders)} speakers (2 without validation)"
        )
    groups = speaker_groups(genders, k)
    folds = []
    for i, group in enumerate(groups):
        valid_speakers = set(groups[(i + 1) % k]) if valid == "next" else set()
        folds.append(_speaker_fold(f"fold{i + 1}", utt2spk, set(group), valid_speakers))
    return folds


def official_partitions(
    utt2part: dict[str, str],
    tests: tuple[str, ...] = ("Test1",),
    train: tuple[str, ...] = ("Train",),
    valid: tuple[str, ...] = ("Development",),
) -> list[dict]:
    """One fold per test partition: train = ``train`` partitions, valid = ``valid``, test = that one.

    A fold is named after its test partition's number (``Test2`` -> fold2). Utterances of partitions
    named nowhere (Test3 with withheld labels) are in no part.
    """
    by_part: dict[str, list[str]] = {}
    for utt in sorted(utt2part):
        by_part.setdefault(utt2part[utt], []).append(utt)
    for part in (*train, *valid, *tests):
        if part not in by_part:
            raise SertkError(
                f"official partitions: no utterance in partition {part!r} (have: {', '.join(sorted(by_part))})"
            )
    folds = []
    for position, test in enumerate(tests, 1):
        number = re.search(r"(\d+)$", test)
        folds.append(
            {
                "name": f"fold{number[1] if number else position}",
                "train": sorted(u for p in train for u in by_part[p]),
                "valid": sorted(u for p in valid for u in by_part[p]),
                "test": by_part[test],
                "partitions": {"train": list(train), "valid": list(valid), "test": test},
            }
        )
    return folds


def classes_missing_from_train(folds: list[dict], utt2label: dict[str, str], classes: list[str]) -> list[str]:
    """One note per fold whose training part lacks some of ``classes`` (empty when every fold has all)."""
    notes = []
    for fold in folds:
        missing = sorted(set(classes) - {utt2label[u] for u in fold["train"]})
        if missing:
            notes.append(f"{fold['name']}: no training utterance of {', '.join(missing)}")
    return notes
