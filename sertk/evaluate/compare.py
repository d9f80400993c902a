"""Compare scored systems in the layout of crnn_discriminative.txt Table 2, and say which differences are
significant (formulas and choices: docs/statistics.md; the tests: sertk.evaluate.stats; the Markdown and
HTML rendering: sertk.evaluate.report).

``sertk compare EXP... --out table.md`` writes one row per experiment dir: UA and WA (mean ± std over
folds), pooled UA and WA with a 95% bootstrap interval, the paper's UA and WA, the pooled recall of each
class (so that "focal loss helps happy" can be checked row by row), and a second table of paired tests
against a reference row (``--baseline EXP``, default: the best mean UA):

- Paired tests over folds (t-test and exact sign-flip test) on per-fold UA and WA, only for systems on
  the same folds: the same classes, the same fold names and, fold by fold, the same test utterance ids
  with the same labels, checked from each fold's posteriors.tsv. Folds are paired by name. Any other pair
  is reported as not paired, with the reason, and gets no fold test.
- Holm's correction over the rows compared with the reference, separately for each test and metric.
- A paired bootstrap interval of the pooled UA and WA differences, where both systems scored the same test
  utterances (the same folds, or the same set of utterance ids when each id occurs once per system).
- Marks: the best row by mean UA is bold. Column "vs REF" says, for per-fold UA and the test chosen with
  ``--test`` (default ``t``), whether the Holm-adjusted p is below ``--alpha`` (0.05): "better"/"worse",
  else "n.s." (not significantly different); with the default reference these "n.s." rows are the ones
  not significantly different from the best.

Beside the Markdown: OUT-stem_confusions.png (all systems' pooled confusion matrices) and a self-contained
HTML report (default OUT with the suffix .html, or ``--html PATH``) with both tables, per-system confusion
matrices and learning curves, and per-class recall bars.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sertk.errors import SertkError
from sertk.evaluate.plots import plot_confusion_grid
from sertk.evaluate.posteriors import read_posteriors
from sertk.evaluate.report import render_markdown, render_report, report_heading
from sertk.evaluate.score import read_learning_curve, score_experiment
from sertk.evaluate.stats import (
    PAIRED_METRICS,
    TESTS,
    PairedTest,
    bootstrap_confusions,
    holm,
    paired_tests,
    percentile_interval,
    recall_ua_wa,
)
from sertk.utils import atomic_write_text, console, read_json


def load_results(exp: Path) -> dict[str, Any]:
    """EXP/results.json, (re)scoring the experiment first when it is missing or older than a posteriors.tsv."""
    path = exp / "results.json"
    posteriors = list(exp.glob("*/posteriors.tsv"))
    if not path.is_file() or any(p.stat().st_mtime > path.stat().st_mtime for p in posteriors):
        console.print(f"scoring {exp} (results.json missing or stale)")
        return score_experiment(exp)
    results = read_json(path)
    if not isinstance(results, dict) or not {"classes", "mean", "std", "pooled", "folds"} <= results.keys():
        raise SertkError(f"{path}: not a sertk results.json (expected classes, folds, mean, std, pooled)")
    return results


def system_label(exp: Path) -> str:
    """The grid config's file stem when experiment.json records one, else the exp dir's name."""
    experiment_path = exp / "experiment.json"
    experiment = read_json(experiment_path) if experiment_path.is_file() else {}
    config = experiment.get("config") if isinstance(experiment, dict) else None
    return Path(config).stem if isinstance(config, str) and config else exp.name


@dataclass
class Fold:
    """One fold's test predictions, read from its posteriors.tsv."""

    utts: list[str]
    labels: np.ndarray
    preds: np.ndarray


@dataclass
class System:
    """One row: an experiment dir, its results.json and its folds' predictions (in results order)."""

    exp: Path
    label: str
    results: dict[str, Any]
    folds: dict[str, Fold]
    interval: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.results["classes"])

    @property
    def provenance(self) -> str:
        """``synthetic``, ``real`` or ``unknown`` (results.json's flag null or missing)."""
        flag = self.results.get("synthetic")
        return "unknown" if flag is None else "synthetic" if flag else "real"

    def fold_values(self, metric: str) -> dict[str, float]:
        return {f["name"]: f[metric] for f in self.results["folds"]}

    def learning_curves(self) -> dict[str, dict[str, np.ndarray]]:
        """Each fold's metrics.csv (scored or not), empty cells as NaN."""
        names = list(self.folds) + list(self.results.get("missing_folds") or [])
        paths = {name: self.exp / name / "metrics.csv" for name in names}
        return {name: read_learning_curve(path) for name, path in paths.items() if path.is_file()}

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([f.labels for f in self.folds.values()]),
            np.concatenate([f.preds for f in self.folds.values()]),
        )


@dataclass
class Versus:
    """One row against the reference: the fold tests, their Holm-adjusted p, the pooled differences."""

    fold_problem: str | None = None
    tests: dict[str, PairedTest] = field(default_factory=dict)
    holm: dict[tuple[str, str], float] = field(default_factory=dict)
    pooled_problem: str | None = None
    pooled_difference: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    verdict: str = "not paired"


@dataclass(frozen=True)
class CompareOptions:
    """The choices behind the tests and intervals (``sertk compare`` options of the same names)."""

    baseline: str | None = None  # reference row: an exp dir or row name; None: the best mean UA
    n_boot: int = 1000  # bootstrap resamples; 0: no intervals
    seed: int = 0
    alpha: float = 0.05
    test: str = "t"  # the test on per-fold UA whose Holm-adjusted p decides the marks

    def check(self) -> None:
        if self.test not in TESTS:
            raise SertkError(f"compare: --test {self.test}: expected one of {', '.join(TESTS)}")
        if not 0 < self.alpha < 1:
            raise SertkError(f"compare: --alpha {self.alpha}: expected a level between 0 and 1")
        if self.n_boot < 0:
            raise SertkError(
                f"compare: --bootstrap {self.n_boot}: expected 0 (no intervals) or more resamples"
            )


@dataclass
class Comparison:
    title: str
    systems: list[System]
    reference: int
    best: int
    versus: list[Versus | None]
    classes: list[str]
    options: CompareOptions


def read_folds(exp: Path, results: dict[str, Any]) -> dict[str, Fold]:
    """Each scored fold's utterances, labels and predictions, from EXP/<fold>/posteriors.tsv."""
    folds = {}
    for entry in results["folds"]:
        table = read_posteriors(exp / entry["name"] / "posteriors.tsv", results["classes"])
        folds[entry["name"]] = Fold(table.utts, table.labels, table.preds)
    return folds


def fold_mismatch(a: System, b: System) -> str | None:
    """Why ``a`` and ``b`` cannot be paired fold by fold, or None when they share classes, fold names and,
    per fold, the test utterance ids and their labels."""
    if a.classes != b.classes:
        return f"classes differ ({' '.join(a.classes)} vs {' '.join(b.classes)})"
    if set(a.folds) != set(b.folds):
        return f"fold names differ ({' '.join(a.folds)} vs {' '.join(b.folds)})"
    for name, fold in a.folds.items():
        other = b.folds[name]
        if len(set(fold.utts)) != len(fold.utts) or len(set(other.utts)) != len(other.utts):
            return f"{name}: an utterance id occurs twice in one posteriors.tsv"
        if set(fold.utts) != set(other.utts):
            shared = len(set(fold.utts) & set(other.utts))
            return (
                f"{name}: test utterances differ ({len(fold.utts)} vs {len(other.utts)}, {shared} in common)"
            )
        label = dict(zip(other.utts, other.labels.tolist(), strict=True))
        wrong = sum(label[u] != y for u, y in zip(fold.utts, fold.labels.tolist(), strict=True))
        if wrong:
            return f"{name}: labels differ on {wrong} test utterance(s)"
    return None


def pooled_alignment(a: System, b: System) -> tuple[np.ndarray | None, str | None]:
    """Indices putting ``b``'s pooled utterances in ``a``'s pooled order, or (None, why not).

    Keys are (fold, utt) when the two share folds, else utt when each id occurs once in each system.
    """
    if a.classes != b.classes:
        return None, "classes differ"
    if fold_mismatch(a, b) is None:
        keys_a = [(n, u) for n, f in a.folds.items() for u in f.utts]
        keys_b = [(n, u) for n, f in b.folds.items() for u in f.utts]
    else:
        keys_a = [u for f in a.folds.values() for u in f.utts]
        keys_b = [u for f in b.folds.values() for u in f.utts]
        if len(set(keys_a)) != len(keys_a) or len(set(keys_b)) != len(keys_b) or set(keys_a) != set(keys_b):
            return None, "test utterances differ"
    position = {key: i for i, key in enumerate(keys_b)}
    order = np.array([position[key] for key in keys_a])
    if not np.array_equal(b.pooled()[0][order], a.pooled()[0]):
        return None, "labels differ"
    return order, None


def _interval(samples: np.ndarray) -> tuple[float, float]:
    return percentile_interval(samples) if len(samples) else (float("nan"), float("nan"))


def _bootstrap_system(system: System, n_boot: int, seed: int) -> dict[str, Any]:
    """Pooled UA and WA intervals and per-class recall intervals (2, C) of one system."""
    sizes = [len(f.utts) for f in system.folds.values()]
    cms = bootstrap_confusions([system.pooled()], sizes, len(system.classes), n_boot, seed)[0]
    recall, ua, wa = recall_ua_wa(cms)
    with warnings.catch_warnings():
        # A class absent from every resample (never in the test set) has no interval: NaN, drawn as none.
        warnings.simplefilter("ignore", RuntimeWarning)
        recall_interval = np.nanpercentile(recall, [2.5, 97.5], axis=0)
    return {"ua": _interval(ua), "wa": _interval(wa), "recall": recall_interval}


def _versus(ref: System, other: System, n_boot: int, seed: int) -> Versus:
    """Fold tests (when the folds match) and the paired bootstrap (when the utterances match) of other - ref."""
    out = Versus(fold_problem=fold_mismatch(ref, other))
    if out.fold_problem is None and len(ref.folds) < 2:
        out.fold_problem = "one fold: nothing to pair over"
        out.verdict = "one fold"
    if out.fold_problem is None:
        names = list(ref.folds)  # pair by fold name, in the reference's order
        for metric in PAIRED_METRICS:
            mine, theirs = other.fold_values(metric), ref.fold_values(metric)
            out.tests[metric] = paired_tests([mine[n] for n in names], [theirs[n] for n in names])
    order, out.pooled_problem = pooled_alignment(ref, other)
    if order is not None and n_boot > 0:
        y_true, y_pred = other.pooled()
        sizes = [len(f.utts) for f in ref.folds.values()]
        cms = bootstrap_confusions(
            [ref.pooled(), (y_true[order], y_pred[order])], sizes, len(ref.classes), n_boot, seed
        )
        _, ua, wa = recall_ua_wa(cms)
        for metric, values in (("ua", ua), ("wa", wa)):
            delta = other.results["pooled"][metric] - ref.results["pooled"][metric]
            out.pooled_difference[metric] = (delta, *_interval(values[1] - values[0]))
    return out


def _find_baseline(baseline: str, systems: list[System]) -> int:
    for k, system in enumerate(systems):
        if Path(baseline).resolve() == system.exp.resolve() or baseline == system.label:
            return k
    raise SertkError(f"--baseline {baseline}: not one of the compared experiment dirs or row names")


def build_comparison(
    exps: list[Path], title: str | None = None, options: CompareOptions | None = None
) -> Comparison:
    """Load ``exps``, run the paired tests against the reference and the bootstraps; render nothing."""
    options = options or CompareOptions()
    options.check()
    if not exps:
        raise SertkError("compare: no experiment dirs given")
    exps = [Path(e) for e in exps]
    entries = [(exp, system_label(exp), load_results(exp)) for exp in exps]
    labels = [label for _, label, _ in entries]
    if len(set(labels)) < len(labels):
        # Two dirs with the same name (e.g. exp/a/crnn and exp/b/crnn): the paths tell them apart.
        labels = [str(exp) for exp in exps]
    systems = [
        System(exp, label, results, read_folds(exp, results))
        for (exp, _, results), label in zip(entries, labels, strict=True)
    ]
    mean_ua = [s.results["mean"].get("ua") for s in systems]
    best = int(np.argmax([-np.inf if v is None else v for v in mean_ua]))
    reference = best if options.baseline is None else _find_baseline(options.baseline, systems)
    n_boot, seed = options.n_boot, options.seed
    if n_boot > 0:
        for system in systems:
            system.interval = _bootstrap_system(system, n_boot, seed)

    versus: list[Versus | None] = [
        None if k == reference else _versus(systems[reference], s, n_boot, seed)
        for k, s in enumerate(systems)
    ]
    # Holm over the rows compared with the reference, one family per (metric, test).
    for metric in PAIRED_METRICS:
        for name, attr in (("t", "t_pvalue"), ("sign-flip", "flip_pvalue")):
            raw = [getattr(v.tests[metric], attr) if v and metric in v.tests else None for v in versus]
            for v, adjusted in zip(versus, holm(raw), strict=True):
                if v is not None and adjusted is not None:
                    v.holm[(metric, name)] = adjusted
    for v in versus:
        if v is not None and "ua" in v.tests:
            significant = v.holm[("ua", options.test)] < options.alpha
            v.verdict = (
                ("better" if v.tests["ua"].mean_difference > 0 else "worse") if significant else "n.s."
            )

    classes: list[str] = []
    for system in systems:
        classes += [c for c in system.classes if c not in classes]
    return Comparison(
        title=title or "System comparison",
        systems=systems,
        reference=reference,
        best=best,
        versus=versus,
        classes=classes,
        options=options,
    )


def _check_output(path: Path, option: str) -> None:
    if path.is_dir():
        raise SertkError(f"{path}: {option} is a directory, expected a file name")


def compare_experiments(
    exps: list[Path],
    out: Path,
    title: str | None = None,
    html: Path | None = None,
    options: CompareOptions | None = None,
) -> str:
    """Write (and return) the Markdown comparison of ``exps`` to ``out``, OUT-stem_confusions.png beside it,
    and the HTML report to ``html`` (default: ``out`` with the suffix .html)."""
    out = Path(out)
    html = out.with_suffix(".html") if html is None else Path(html)
    _check_output(out, "--out")
    _check_output(html, "--html")
    if html.resolve() == out.resolve():
        raise SertkError(f"{html}: --html must differ from --out")
    comp = build_comparison(exps, title, options)
    confusions = out.with_name(f"{out.stem}_confusions.png")
    text = render_markdown(comp, confusions.name)
    plot_confusion_grid(
        [(s.label, np.array(s.results["pooled"]["confusion"]), s.classes) for s in comp.systems],
        confusions,
        report_heading(comp),
    )
    atomic_write_text(html, render_report(comp))
    atomic_write_text(out, text)
    console.print(f"wrote {out}, {confusions} and {html}")
    return text
