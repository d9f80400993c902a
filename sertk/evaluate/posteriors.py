"""posteriors.tsv, the one file between evaluation and scoring: writer and reader.

Header ``utt label pred <class...>`` then one line per test utterance: names of the true and predicted
class and the utterance's scores per class (6 decimals). When the scores are vote shares of test-time
copies (``--tta vtlp``), ``softmax_<class>`` columns follow with the copies' mean softmax, from which the
first and second choices are ranked (cnn_blstm_vtlp.txt Table 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sertk.errors import SertkError
from sertk.utils import atomic_write_text


@dataclass
class PosteriorTable:
    """One fold's test predictions: ids, label/prediction indices, scores and mean softmax (N, C)."""

    utts: list[str]
    labels: np.ndarray
    preds: np.ndarray
    scores: np.ndarray
    softmax: np.ndarray


def write_posteriors(
    path: Path,
    utts: list[str],
    labels: list[int],
    table: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    classes: list[str],
) -> None:
    """Write posteriors.tsv atomically; ``table`` = (preds (N,), scores (N, C), softmax (N, C) or None)."""
    preds, scores, softmax = table
    header = ["utt", "label", "pred", *classes]
    if softmax is not None:
        header += [f"softmax_{c}" for c in classes]
    lines = ["\t".join(header)]
    for row, (utt, label, pred) in enumerate(zip(utts, labels, preds, strict=True)):
        values = list(scores[row]) + ([] if softmax is None else list(softmax[row]))
        lines.append("\t".join([utt, classes[label], classes[int(pred)], *(f"{p:.6f}" for p in values)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_posteriors(path: Path, classes: list[str]) -> PosteriorTable:
    """Read a posteriors.tsv whose class columns must be ``classes``; one-line errors naming file and line."""
    try:
        lines = Path(path).read_text().splitlines()
    except IsADirectoryError:
        raise SertkError(f"{path}: is a directory, not a posteriors.tsv") from None
    except OSError as err:
        raise SertkError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise SertkError(f"{path}: not a UTF-8 text file") from None
    expected = ["utt", "label", "pred", *classes]
    header = lines[0].split() if lines else []
    with_softmax = header == expected + [f"softmax_{c}" for c in classes]
    if header != expected and not with_softmax:
        raise SertkError(f"{path}: line 1: header {' '.join(header)!r} is not {' '.join(expected)!r}")
    index = {name: i for i, name in enumerate(classes)}
    width = len(header)
    utts, labels, preds, values = [], [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise SertkError(f"{path}: line {lineno}: expected {width} fields, got {len(fields)}")
        unknown = next((v for v in fields[1:3] if v not in index), None)
        if unknown is not None:
            raise SertkError(
                f"{path}: line {lineno}: unknown class {unknown!r} (classes: {' '.join(classes)})"
            )
        try:
            values.append([float(v) for v in fields[3:]])
        except ValueError:
            raise SertkError(f"{path}: line {lineno}: posteriors must be numbers") from None
        utts.append(fields[0])
        labels.append(index[fields[1]])
        preds.append(index[fields[2]])
    if not utts:
        raise SertkError(f"{path}: no utterances after the header")
    numbers = np.array(values, dtype=np.float64)
    scores = numbers[:, : len(classes)]
    softmax = numbers[:, len(classes) :] if with_softmax else scores
    return PosteriorTable(utts, np.array(labels), np.array(preds), scores, softmax)
