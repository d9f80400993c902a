"""Classification metrics used throughout SER papers.

WA (weighted accuracy) is the overall accuracy; UA (unweighted accuracy) is the mean of per-class recalls,
as defined in e.g. crnn_discriminative.txt §4.1 ("Metrics"). Classes absent from the reference are left
out of UA and macro-F1 rather than counted as zero.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of utterances of true class i predicted as class j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def weighted_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no reference utterances."""
    support = cm.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def unweighted_accuracy(cm: np.ndarray) -> float:
    recall = per_class_recall(cm)
    return float(np.nanmean(recall)) if np.any(~np.isnan(recall)) else float("nan")


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denom = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else float("nan")


def summarize(y_true, y_pred, num_classes: int) -> dict[str, float]:
    """WA, UA and macro-F1 of one set of predictions."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {
        "n": int(cm.sum()),
        "wa": weighted_accuracy(cm),
        "ua": unweighted_accuracy(cm),
        "macro_f1": macro_f1(cm),
    }
