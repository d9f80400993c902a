"""Compare scored systems in the layout of crnn_discriminative.txt Table 2, with per-class recall (Fig. 2).

One row per experiment dir: UA and WA (mean ± std over folds), the paper's UA and WA beside them, and the
pooled recall of each class, so that claims such as "focal loss helps happy" can be checked row by row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sertk.errors import SertkError
from sertk.evaluate.plots import plot_confusion_grid
from sertk.evaluate.score import (
    SYNTHETIC_BANNER,
    format_mean_std,
    format_pct,
    markdown_table,
    score_experiment,
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
    if not isinstance(results, dict) or not {"classes", "mean", "std", "pooled"} <= results.keys():
        raise SertkError(f"{path}: not a sertk results.json (expected classes, mean, std, pooled)")
    return results


def system_label(exp: Path) -> str:
    """The grid config's file stem when experiment.json records one, else the exp dir's name."""
    experiment_path = exp / "experiment.json"
    experiment = read_json(experiment_path) if experiment_path.is_file() else {}
    config = experiment.get("config") if isinstance(experiment, dict) else None
    return Path(config).stem if isinstance(config, str) and config else exp.name


def compare_experiments(exps: list[Path], out: Path, title: str | None = None) -> str:
    """Write (and return) a Markdown table comparing ``exps``, plus OUT-stem_confusions.png beside it."""
    if not exps:
        raise SertkError("compare: no experiment dirs given")
    exps = [Path(e) for e in exps]
    out = Path(out)
    entries = [(system_label(exp), load_results(exp)) for exp in exps]
    labels = [label for label, _ in entries]
    if len(set(labels)) < len(labels):
        # Two dirs with the same name (e.g. exp/a/crnn and exp/b/crnn): the paths tell them apart.
        labels = [str(exp) for exp in exps]

    classes: list[str] = []
    for _, results in entries:
        classes += [c for c in results["classes"] if c not in classes]
    synthetic = [bool(results.get("synthetic")) for _, results in entries]
    mixed = any(synthetic) and not all(synthetic)

    rows = []
    for label, (_, results), is_synthetic in zip(labels, entries, synthetic, strict=True):
        paper = {str(k).lower(): v for k, v in (results.get("paper") or {}).items()}
        recall = results["pooled"].get("per_class_recall", {})
        name = f"{label} (synthetic)" if mixed and is_synthetic else label
        rows.append(
            [
                name,
                format_mean_std(results, "ua"),
                format_mean_std(results, "wa"),
                format_pct(paper.get("ua")),
                format_pct(paper.get("wa")),
                *(format_pct(recall.get(c)) for c in classes),
            ]
        )
    header = [
        "system",
        "UA (%)",
        "WA (%)",
        "paper UA (%)",
        "paper WA (%)",
        *(f"{c} recall (%)" for c in classes),
    ]
    heading = title or "System comparison"
    if any(synthetic):
        heading += " (SYNTHETIC data)"
    confusions = out.with_name(f"{out.stem}_confusions.png")
    lines = [f"# {heading}", ""]
    if any(synthetic):
        lines += [SYNTHETIC_BANNER, ""]
    lines += [
        *markdown_table(header, rows, "r"),
        "",
        "UA/WA: mean ± std over folds; class recall: pooled over all folds' test utterances; "
        "paper: as reported (— where the paper gives none).",
        "",
        f"![pooled confusion matrices]({confusions.name})",
        "",
    ]
    text = "\n".join(lines)
    plot_confusion_grid(
        [
            (label, np.array(r["pooled"]["confusion"]), r["classes"])
            for label, (_, r) in zip(labels, entries, strict=True)
        ],
        confusions,
        heading,
    )
    atomic_write_text(out, text)
    console.print(f"wrote {out} and {confusions}")
    return text
