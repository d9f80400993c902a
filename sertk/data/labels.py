"""Raters' votes (the ``utt2votes`` table): parsing, soft labels and rater agreement.

``utt2votes`` holds one token per external rater; a rater who gave several labels joins them with ``,``
(``neu,sad oth neu``: three raters). Labels map onto classes through the data dir's ``class_map`` (a label
absent from it counts as itself), so ``exc`` votes count for ``hap`` on a hap+exc data dir.
"""

from __future__ import annotations

import numpy as np


def parse_votes(line: str) -> list[list[str]]:
    """``"neu,sad oth neu"`` -> ``[["neu", "sad"], ["oth"], ["neu"]]``: each rater's labels."""
    return [[name for name in rater.split(",") if name] for rater in line.split()]


def vote_classes(line: str, class_map: dict[str, str]) -> list[list[str]]:
    """Each rater's labels mapped onto classes (``class_map``; an unmapped label is itself)."""
    return [[class_map.get(name, name) for name in rater] for rater in parse_votes(line)]


def soft_labels(
    votes: list[str], hard: list[int], classes: list[str], class_map: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels and sample weights from raters' votes (cnn_blstm_vtlp.txt §3.3, Table 5).

    Each rater's vote is split equally among its labels. The soft label is the vote mass on each class over
    the mass inside the classes; the weight is the share of the votes inside the classes. An utterance
    without votes keeps its one-hot hard label with weight 1; one whose votes all fall outside the classes
    keeps its hard label with weight 0.
    """
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(votes), len(classes)), dtype=np.float64)
    weights = np.ones(len(votes), dtype=np.float64)
    for row, (line, label) in enumerate(zip(votes, hard, strict=True)):
        raters = vote_classes(line, class_map)
        for names in raters:
            for name in names:
                if name in index:
                    targets[row, index[name]] += 1.0 / len(names)
        inside = targets[row].sum()
        if inside > 0:
            weights[row] = inside / len(raters)
            targets[row] /= inside
        else:
            weights[row] = 0.0 if raters else 1.0
            targets[row, label] = 1.0
    return targets.astype(np.float32), weights.astype(np.float32)


def agreement(
    votes: list[str], labels: np.ndarray, classes: list[str], class_map: dict[str, str]
) -> np.ndarray:
    """Per utterance: 1 unanimous, 0 ambiguous, -1 no votes (cnn_blstm_vtlp.txt §3.3, Table 5 "Subset").

    Unanimous when every rater's vote contains the utterance's class.
    """
    out = np.full(len(votes), -1, dtype=np.int64)
    for row, (line, label) in enumerate(zip(votes, labels, strict=True)):
        raters = vote_classes(line, class_map)
        if raters:
            out[row] = int(all(classes[label] in names for names in raters))
    return out
