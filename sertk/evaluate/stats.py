"""Significance tests and confidence intervals for comparing SER systems (docs/statistics.md).

Paired tests over folds. For systems A and B scored on the same k folds, d_i = m_A,i - m_B,i is the
difference of a metric (UA or WA) on fold i.

- Paired t-test (Student 1908; Dietterich 1998, the k-fold cross-validated paired t test): t = mean(d) / (sd(d) / sqrt(k)) with the sample
  standard deviation sd (ddof = 1), df = k - 1, two-sided p = 2 * P(T_{k-1} >= |t|). Computed by
  ``scipy.stats.ttest_rel``; when every d_i is equal, sd = 0 and t is ±inf (p = 0), or 0 (p = 1) when
  every d_i is 0.
- Exact sign-flip permutation test (Fisher 1935, ch. III): under H0 each d_i is as likely to have
  been -d_i, so p = #{s in {-1, +1}^k : |sum_i s_i d_i| >= |sum_i d_i|} / 2^k, enumerating all 2^k
  flips (1,024 for 10 folds). Computed by ``scipy.stats.permutation_test`` (paired "samples"
  permutations, exact when n_resamples covers all of them). Its smallest possible p is 2 / 2^k: 0.125
  for 4 folds, 0.0625 for 5, so with 5 folds or fewer it can never reach p < 0.05.
- Holm's step-down correction (Holm 1979) over m comparisons: with p_(1) <= ... <= p_(m) sorted,
  p~_(j) = min(1, max_{i <= j} (m - i + 1) p_(i)); rejecting where p~ < alpha keeps the family-wise error
  rate <= alpha.

Bootstrap over test utterances (Efron & Tibshirani 1993, ch. 13; Bisani & Ney 2004 for the paired form).
Each of B replicates draws every fold's test utterances with replacement, n_f from fold f (stratified by
fold, so each fold keeps its size), and scores the pooled confusion matrix; the percentile interval is
the 2.5th and 97.5th percentiles of the B replicate values. For two systems on the same utterances the
same draws are applied to both (paired bootstrap) and the interval is that of the B differences. UA in a
replicate leaves out a class that the draw happens to miss, as sertk.metrics does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

# The tests that can decide the marks (sertk compare --test), and the metrics the fold tests run on.
TESTS = {"t": "paired t-test", "sign-flip": "exact sign-flip permutation test"}
PAIRED_METRICS = ("ua", "wa")
# Flips are enumerated exactly up to this many folds (2^20 ~ 1e6 sums); beyond, a seeded Monte Carlo sample.
EXACT_FLIP_FOLDS = 20
# Bootstrap index matrices are built this many elements at a time, whatever B and N.
BOOTSTRAP_BLOCK = 1 << 22


@dataclass(frozen=True)
class PairedTest:
    """The two paired tests over folds of one metric: A - B."""

    k: int
    mean_difference: float
    t: float
    t_pvalue: float
    flip_pvalue: float


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test of A - B over folds, df = k - 1 (Student 1908)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    if len(d) < 2:
        raise ValueError("a paired t-test needs at least 2 folds")
    if np.ptp(d) <= 1e-12:
        # sd(d) = 0 (up to the rounding of differences of fractions): t is infinite, or 0/0 when nothing
        # differs; scipy would divide rounding noise by rounding noise.
        return (0.0, 1.0) if abs(d[0]) <= 1e-12 else (math.copysign(math.inf, d[0]), 0.0)
    result = scipy.stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def sign_flip_pvalue(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """Two-sided p of the sign-flip permutation test of mean(A - B) = 0 over folds (Fisher 1935).

    Exact (all 2^k flips) for k <= EXACT_FLIP_FOLDS; scipy compares with a relative tolerance, so flips
    whose sum equals the observed one up to rounding count as "at least as extreme".
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 1:
        raise ValueError("a sign-flip test needs at least 1 fold")
    if np.all(a == b):
        return 1.0
    n_resamples = np.inf if len(a) <= EXACT_FLIP_FOLDS else 100_000
    result = scipy.stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def paired_tests(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Both paired tests of A - B over k >= 2 folds (values in the same fold order)."""
    t, t_p = paired_t(a, b)
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return PairedTest(len(d), float(d.mean()), t, t_p, sign_flip_pvalue(a, b))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (Holm 1979), in the input order; None entries are not tested and stay None."""
    tested = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    m, running = len(tested), 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def bootstrap_indices(fold_sizes: Sequence[int], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) row indices into the pooled utterances; fold f's columns draw only from fold f."""
    offsets = np.concatenate([[0], np.cumsum(fold_sizes)])
    blocks = [
        rng.integers(start, stop, size=(n_boot, stop - start))
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    return np.concatenate(blocks, axis=1)


def confusion_counts(
    y_true: np.ndarray, y_pred: np.ndarray, index: np.ndarray, num_classes: int
) -> np.ndarray:
    """(B, C, C) confusion matrices of the B resamples ``index`` (B, N), by one bincount (no loop over B)."""
    n_boot = index.shape[0]
    cells = num_classes * num_classes
    code = y_true[index] * num_classes + y_pred[index] + cells * np.arange(n_boot)[:, None]
    return np.bincount(code.ravel(), minlength=n_boot * cells).reshape(n_boot, num_classes, num_classes)


def recall_ua_wa(cms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class recall (..., C; NaN for an absent class), UA and WA of a stack of (..., C, C) confusion matrices."""
    support = cms.sum(axis=-1)
    diag = np.diagonal(cms, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, diag / np.maximum(support, 1), np.nan)
    ua = np.nanmean(recall, axis=-1)
    wa = diag.sum(axis=-1) / cms.sum(axis=(-2, -1))
    return recall, ua, wa


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval: the (1 - level)/2 and (1 + level)/2 quantiles of ``samples``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_confusions(
    systems: Sequence[tuple[np.ndarray, np.ndarray]],
    fold_sizes: Sequence[int],
    num_classes: int,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """(S, B, C, C) bootstrap confusion matrices of S systems on the same N pooled utterances (stratified
    by ``fold_sizes``); every system sees the same draws, so differences between systems are paired.

    The generator is seeded afresh with ``seed`` on each call: the same folds give the same draws.
    """
    total = int(sum(fold_sizes))
    for y_true, y_pred in systems:
        if len(y_true) != total or len(y_pred) != total:
            raise ValueError(f"every system needs {total} predictions (the sum of the fold sizes)")
    rng = np.random.default_rng(seed)
    per_block = max(1, BOOTSTRAP_BLOCK // max(total, 1))
    out = np.empty((len(systems), n_boot, num_classes, num_classes), dtype=np.int64)
    for start in range(0, n_boot, per_block):
        index = bootstrap_indices(fold_sizes, min(per_block, n_boot - start), rng)
        for s, (y_true, y_pred) in enumerate(systems):
            out[s, start : start + len(index)] = confusion_counts(y_true, y_pred, index, num_classes)
    return out
