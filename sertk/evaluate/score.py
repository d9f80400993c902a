"""Stage 7: score an experiment dir into results.json, RESULTS.md, confusion.png and learning_curves.png.

WA is the overall accuracy and UA the mean per-class recall (crnn_discriminative.txt §4.1), computed with
sertk.metrics per fold, then averaged over folds (mean and sample std) and pooled over all folds'
test predictions.
"""

from __future__ import annotations

import csv
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from sertk import provenance
from sertk.config import read_yaml
from sertk.errors import SertkError
from sertk.evaluate.analysis import analyze_experiment
from sertk.evaluate.plots import plot_confusion, plot_learning_curves
from sertk.evaluate.posteriors import read_posteriors
from sertk.metrics import confusion_matrix, per_class_recall, summarize
from sertk.utils import atomic_write_text, console, read_experiment, read_json, write_json

METRICS = ("wa", "ua", "macro_f1")
METRIC_NAMES = {"wa": "WA", "ua": "UA", "macro_f1": "macro-F1"}
CURVE_COLUMNS = ("epoch", "train_loss", "valid_loss", "valid_wa", "valid_ua")
# Any of these in a subdirectory marks it as a fold that training started.
FOLD_FILES = ("posteriors.tsv", "metrics.csv", "best.pt", "checkpoint.pt", "config.yaml", "train.log")
SYNTHETIC_BANNER = (
    "**SYNTHETIC data** — these numbers come from sertk's generated corpus, not IEMOCAP; "
    "they say nothing about real emotion recognition"
)
UNKNOWN_BANNER = (
    "**Data provenance unknown** — neither experiment.json nor the data dir's corpus.json says whether "
    "the corpus is real or synthetic; do not report these numbers as results on real data"
)


def read_learning_curve(path: Path) -> dict[str, np.ndarray]:
    """The columns of metrics.csv needed for the learning curves, as float arrays (empty cells -> NaN)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CURVE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SertkError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    try:
        return {
            c: np.array([float(r[c]) if r[c] not in ("", None) else math.nan for r in rows])
            for c in CURVE_COLUMNS
        }
    except ValueError as err:
        raise SertkError(f"{path}: not a number ({err})") from None


def _natural_key(name: str) -> list[Any]:
    """Sort fold10 after fold9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _folds_file(exp: Path, experiment: dict[str, Any]) -> dict[str, Any]:
    """folds.json as recorded in experiment.json, or {} when it can no longer be found.

    A relative path is tried from the cwd and from the recipe dir (the parent of ``exp/<system>``'s parent),
    since the trainer recorded it relative to where it ran.
    """
    recorded = experiment.get("folds")
    if not isinstance(recorded, str):
        return {}
    for path in (Path(recorded), exp.resolve().parent.parent / recorded):
        if path.is_file():
            data = read_json(path)
            return data if isinstance(data, dict) else {}
    return {}


def find_folds(exp: Path, folds_json: dict[str, Any]) -> list[str]:
    """Fold subdirectories of ``exp`` that training started, in folds.json order when known."""
    names = [d.name for d in exp.iterdir() if d.is_dir() and any((d / f).exists() for f in FOLD_FILES)]
    order = {f.get("name"): i for i, f in enumerate(folds_json.get("folds", [])) if isinstance(f, dict)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), _natural_key(n)))


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: undefined metrics (e.g. recall of an absent class) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _corpus_meta(exp: Path, experiment: dict[str, Any]) -> dict[str, Any] | None:
    """The corpus.json of the experiment's data dir (a relative path is tried from the cwd and from the
    recipe dir two levels above EXP), or None when it cannot be found."""
    data = experiment.get("data")
    for corpus in (
        (Path(data) / "corpus.json", exp.resolve().parent.parent / data / "corpus.json") if data else ()
    ):
        if corpus.is_file():
            meta = read_json(corpus)
            return meta if isinstance(meta, dict) else {}
    return None


def _paper_numbers(config: dict[str, Any], path: Path, style: str | None = None) -> dict[str, float]:
    """The paper's reported numbers (fractions) from config.yaml's ``paper:`` mapping ({} when absent).

    A paper that reports a second table for the improvised subset gives it as ``impro_<metric>``; on a
    data dir prepared with ``--style impro`` those become the numbers to compare with.
    """
    paper = config.get("paper") or {}
    if not isinstance(paper, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in paper.values()
    ):
        raise SertkError(
            f"{path}: 'paper' must map names to fractions, e.g. {{ua: 0.623, wa: 0.610}} for 62.3%/61.0%"
        )
    numbers = {str(k): float(v) for k, v in paper.items()}
    if style == "impro":
        numbers.update({k[len("impro_") :]: v for k, v in numbers.items() if k.startswith("impro_")})
    return {k: v for k, v in numbers.items() if not k.startswith("impro_")}


def _is_synthetic(experiment: dict[str, Any], corpus: dict[str, Any] | None, exp: Path) -> bool | None:
    """experiment.json's flag, else the data dir's corpus.json; None (unknown) when neither says true or false.

    Unknown is never reported as real data: results.json gets ``"synthetic": null`` and RESULTS.md a banner.
    """
    for source in (experiment, corpus or {}):
        if isinstance(source.get("synthetic"), bool):
            return source["synthetic"]
    console.print(
        f"[yellow]warning:[/] {exp / 'experiment.json'}: no 'synthetic' flag and no corpus.json says it: "
        "data provenance unknown"
    )
    return None


def check_fold_provenance(exp: Path, experiment: dict[str, Any], folds: list[str]) -> dict[str, str]:
    """Each scored fold's eval key, after checking its posteriors come from this experiment's training.

    A fold trained under another config, data, folds file or features (another experiment key), or whose
    posteriors were made from another checkpoint, is refused: one exp dir, one experiment.
    """
    wanted = experiment.get("provenance_key")
    keys = {}
    for name in folds:
        fold_dir = exp / name
        train = provenance.read_record(provenance.record_path(fold_dir, "train"))
        if train is None:
            raise SertkError(f"{fold_dir}: no valid train.provenance.json: the fold never finished training")
        if wanted is not None and train.inputs.get("experiment") != wanted:
            raise SertkError(
                f"{fold_dir}: trained in another experiment than {exp / 'experiment.json'} describes "
                "(other config, data, folds or features); retrain it (sertk train --overwrite)"
            )
        eval_path = provenance.record_path(fold_dir, "eval")
        record = provenance.read_record(eval_path)
        if (
            record is None
            or record.inputs.get("train") != train.key
            or provenance.stale_outputs(eval_path, record)
        ):
            raise SertkError(
                f"{fold_dir / 'posteriors.tsv'}: not made from this fold's model: rerun stage 6 (sertk eval)"
            )
        keys[name] = record.key
    return keys


def score_folds(
    exp: Path, names: list[str], classes: list[str], test_speakers: dict[str, Any]
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Per-fold WA/UA/macro-F1 from each posteriors.tsv, and all folds' labels and predictions pooled."""
    folds, all_true, all_pred = [], [], []
    for name in names:
        table = read_posteriors(exp / name / "posteriors.tsv", classes)
        fold = {"name": name, **summarize(table.labels, table.preds, len(classes))}
        if name in test_speakers:
            fold["test_speakers"] = test_speakers[name]
        folds.append(fold)
        all_true.append(table.labels)
        all_pred.append(table.preds)
    return folds, np.concatenate(all_true), np.concatenate(all_pred)


def fold_statistics(folds: list[dict]) -> tuple[dict[str, float], dict[str, float], int]:
    """Mean and sample std (ddof 1; 0 for a single fold, which has no spread) of each metric over folds."""
    ddof = 1 if len(folds) >= 2 else 0
    per_fold = {m: np.array([f[m] for f in folds], dtype=float) for m in METRICS}
    mean = {m: float(v.mean()) for m, v in per_fold.items()}
    return mean, {m: float(v.std(ddof=ddof)) for m, v in per_fold.items()}, ddof


def pooled_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """WA/UA/macro-F1 of all folds' test utterances together, per-class recall and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    pooled = summarize(y_true, y_pred, len(classes))
    pooled["per_class_recall"] = dict(zip(classes, per_class_recall(cm).tolist(), strict=True))
    pooled["confusion"] = cm.tolist()
    return pooled


def compute_results(exp: Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The results dict of an experiment dir, plus each fold's learning curve (for plotting)."""
    if not exp.is_dir():
        raise SertkError(f"{exp}: experiment dir not found")
    experiment = read_experiment(exp)
    if not isinstance(experiment.get("classes"), list):
        raise SertkError(f"{exp / 'experiment.json'}: expected a 'classes' list")
    classes = [str(c) for c in experiment["classes"]]
    config_path = exp / "config.yaml"
    config = read_yaml(config_path) if config_path.is_file() else {}
    folds_json = _folds_file(exp, experiment)
    test_speakers = {
        f["name"]: f["test_speakers"]
        for f in folds_json.get("folds", [])
        if isinstance(f, dict) and "name" in f and "test_speakers" in f
    }

    fold_names = find_folds(exp, folds_json)
    scored = [name for name in fold_names if (exp / name / "posteriors.tsv").is_file()]
    missing = [name for name in fold_names if name not in scored]
    if not scored:
        raise SertkError(f"{exp}: no posteriors.tsv: run stage 6 (sertk eval) first")
    for name in missing:
        console.print(f"[yellow]warning:[/] {exp / name}: no posteriors.tsv, fold left out of the results")

    fold_keys = check_fold_provenance(exp, experiment, scored) if experiment.get("provenance_key") else None
    folds, y_true, y_pred = score_folds(exp, scored, classes, test_speakers)
    histories = {
        name: read_learning_curve(exp / name / "metrics.csv")
        for name in fold_names
        if (exp / name / "metrics.csv").is_file()
    }
    mean, std, ddof = fold_statistics(folds)
    pooled = pooled_scores(y_true, y_pred, classes)
    corpus = _corpus_meta(exp, experiment)
    results = {
        "system": experiment.get("system", exp.name),
        "protocol": experiment.get("protocol", config.get("protocol", folds_json.get("protocol"))),
        "classes": classes,
        "synthetic": _is_synthetic(experiment, corpus, exp),
        "folds": folds,
        "mean": mean,
        "std": std,
        "pooled": pooled,
        "n_folds": len(folds),
        "missing_folds": missing,
        "std_ddof": ddof,
        "arch": experiment.get("arch", config.get("arch")),
        "feat": experiment.get("feat", config.get("feat")),
        "paper": _paper_numbers(config, config_path, (corpus or {}).get("style")),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # The experiment's key and each fold's eval key (sertk.provenance); null for a dir sertk did not make.
        "provenance": None
        if fold_keys is None
        else {"experiment": experiment["provenance_key"], "folds": fold_keys},
    }
    if "config" in experiment:
        results["config"] = experiment["config"]
    return _finite_or_none(results), histories


def format_pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, as the papers report; — when undefined."""
    return "—" if value is None else f"{100 * value:.1f}"


def format_mean_std(results: dict[str, Any], metric: str) -> str:
    """``mean ± std`` over folds of one metric, in percent."""
    mean, std = results["mean"].get(metric), results["std"].get(metric)
    return "—" if mean is None else f"{100 * mean:.1f} ± {100 * (std or 0.0):.1f}"


def data_flag(results: dict[str, Any]) -> str:
    """`` (SYNTHETIC data)``, `` (data provenance UNKNOWN)`` or ``""`` for real data."""
    synthetic = results.get("synthetic")
    return " (SYNTHETIC data)" if synthetic else " (data provenance UNKNOWN)" if synthetic is None else ""


def summary_line(results: dict[str, Any]) -> str:
    """One line for logs: ``UA 0.71 ± 0.04  WA 0.73 ± 0.03  (SYNTHETIC data)``."""
    parts = [f"{METRIC_NAMES[m]} {results['mean'][m]:.2f} ± {results['std'][m]:.2f}" for m in ("ua", "wa")]
    return "  ".join(parts) + data_flag(results)


def title_line(results: dict[str, Any]) -> str:
    """System and protocol, flagged when the data are synthetic or of unknown provenance."""
    return f"{results['system']} — protocol {results['protocol']}{data_flag(results)}"


def markdown_table(header: list[str], rows: list[list[str]], align: str = "l") -> list[str]:
    """A Markdown table; the first column left-aligned, the rest aligned by ``align``."""
    rule = ["---"] + [("---:" if align == "r" else "---")] * (len(header) - 1)
    return ["| " + " | ".join(r) + " |" for r in [header, rule, *rows]]


def _fold_section(results: dict[str, Any]) -> list[str]:
    """The per-fold table with mean ± std and pooled rows."""
    with_speakers = any("test_speakers" in f for f in results["folds"])
    header = ["fold", *(["test speakers"] if with_speakers else []), "n", "WA (%)", "UA (%)", "macro-F1 (%)"]
    rows = []
    for f in results["folds"]:
        listed = f.get("test_speakers", [])
        speakers = (
            [listed if isinstance(listed, str) else " ".join(map(str, listed))] if with_speakers else []
        )
        rows.append([f["name"], *speakers, str(f["n"]), *(format_pct(f[m]) for m in METRICS)])
    blank = [""] if with_speakers else []
    rows.append(["**mean ± std**", *blank, "", *(format_mean_std(results, m) for m in METRICS)])
    pooled = results["pooled"]
    rows.append(["pooled", *blank, str(pooled["n"]), *(format_pct(pooled[m]) for m in METRICS)])
    std_note = (
        "sample standard deviation over folds (ddof = 1)"
        if results["std_ddof"]
        else "0: a single fold has no spread"
    )
    return [
        "## Per fold",
        "",
        *markdown_table(header, rows, "r"),
        "",
        f"mean ± std: {std_note}; pooled: all folds' test utterances scored together.",
        "",
    ]


def _paper_section(results: dict[str, Any]) -> list[str]:
    """The paper's reported numbers beside sertk's (empty when the config names none)."""
    if not results["paper"]:
        return []
    recall = results["pooled"]["per_class_recall"]
    rows = []
    for key, value in results["paper"].items():
        metric = key.lower()
        ours = format_mean_std(results, metric) if metric in METRICS else format_pct(recall.get(key))
        rows.append([METRIC_NAMES.get(metric, key), f"{100 * value:.1f}", ours])
    return [
        "## Paper vs sertk",
        "",
        *markdown_table(["metric", "paper (%)", "sertk (%)"], rows, "r"),
        "",
        "sertk: mean ± std over folds; a class name means that class's pooled recall.",
        "",
    ]


def _confusion_section(results: dict[str, Any]) -> list[str]:
    """The pooled confusion matrix, counts and row percentages, with per-class recall."""
    classes = results["classes"]
    cm = np.array(results["pooled"]["confusion"])
    pct = 100 * cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    recall = results["pooled"]["per_class_recall"]
    rows = [
        [f"**{c}**", *(f"{cm[i, j]} ({pct[i, j]:.1f}%)" for j in range(len(classes))), format_pct(recall[c])]
        for i, c in enumerate(classes)
    ]
    return [
        "## Pooled confusion matrix",
        "",
        "Rows: true class; columns: predicted; cells: count (row %).",
        "",
        *markdown_table(["true \\ pred", *classes, "recall (%)"], rows, "r"),
        "",
    ]


def render_markdown(results: dict[str, Any]) -> str:
    """RESULTS.md: per-fold table, mean ± std, the paper's numbers, pooled confusion matrix, plots."""
    lines = [f"# {title_line(results)}", ""]
    if results["synthetic"] is not False:
        lines += [SYNTHETIC_BANNER if results["synthetic"] else UNKNOWN_BANNER, ""]
    lines += [
        f"arch `{results['arch']}`, features `{results['feat']}`, {results['n_folds']} fold(s) scored; "
        f"generated {results['generated']}.",
        "",
    ]
    if results["missing_folds"]:
        lines += [f"Missing (no posteriors.tsv, left out): {', '.join(results['missing_folds'])}.", ""]
    lines += _fold_section(results) + _paper_section(results) + _confusion_section(results)
    lines += [
        "## Plots",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    return "\n".join(lines)


def print_results(results: dict[str, Any]) -> None:
    """A compact rich table of the per-fold, mean and pooled numbers."""
    table = Table(
        title=title_line(results), title_style="bold" if results["synthetic"] is False else "bold red"
    )
    for col in ("fold", "n", "WA %", "UA %", "macro-F1 %"):
        table.add_column(col, justify="left" if col == "fold" else "right")
    for f in results["folds"]:
        table.add_row(f["name"], str(f["n"]), *(format_pct(f[m]) for m in METRICS))
    table.add_row("mean ± std", "", *(format_mean_std(results, m) for m in METRICS), style="bold")
    table.add_row("pooled", str(results["pooled"]["n"]), *(format_pct(results["pooled"][m]) for m in METRICS))
    console.print(table)


def score_record(results: dict[str, Any]) -> provenance.Record:
    """What a results.json is made from: the experiment and every scored fold's posteriors."""
    return provenance.Record(
        stage="score", inputs={"provenance": provenance.json_digest(results["provenance"])}
    )


def up_to_date(exp: Path) -> dict | None:
    """The results.json of ``exp`` when its score record still matches every fold's posteriors, else None."""
    path = provenance.record_path(exp, "score")
    experiment = read_experiment(exp)
    if provenance.read_record(path) is None or not experiment.get("provenance_key"):
        return None
    names = [
        n for n in find_folds(exp, _folds_file(exp, experiment)) if (exp / n / "posteriors.tsv").is_file()
    ]
    try:
        current = {
            "experiment": experiment["provenance_key"],
            "folds": check_fold_provenance(exp, experiment, names),
        }
    except SertkError:
        return None
    if provenance.check(path, score_record({"provenance": current})):
        return None
    return read_json(exp / "results.json")


def score_experiment(exp: Path) -> dict:
    """Score ``exp``: write results.json, RESULTS.md, ANALYSIS.md, confusion.png, learning_curves.png; return the results."""
    exp = Path(exp)
    if not exp.is_dir():
        raise SertkError(f"{exp}: experiment dir not found")
    previous = up_to_date(exp)
    if previous is not None:
        console.print(f"{exp / 'results.json'}: up to date with every fold's posteriors, skipped")
        console.print(summary_line(previous))
        return previous
    results, histories = compute_results(exp)
    synthetic = data_flag(results)
    plot_confusion(
        np.array(results["pooled"]["confusion"]),
        results["classes"],
        exp / "confusion.png",
        f"{results['system']}: pooled confusion{synthetic}",
    )
    plot_learning_curves(
        histories, exp / "learning_curves.png", f"{results['system']}: learning curves{synthetic}"
    )
    provenance.remove_record(provenance.record_path(exp, "score"))
    write_json(exp / "results.json", results)
    atomic_write_text(exp / "RESULTS.md", render_markdown(results))
    # The per-fold table and the unanimous/ambiguous breakdown (cnn_blstm_vtlp.txt Tables 2 and 6) are
    # informative for every system; they need the data dir (speakers, votes) the experiment was trained on.
    data_dir = read_experiment(exp).get("data")
    if data_dir and (Path(data_dir) / "utt2spk").is_file():
        analyze_experiment(exp)
    else:
        console.print(
            f"{exp}: data dir {data_dir} not found, so no ANALYSIS.md (unanimous/ambiguous breakdown)"
        )
    if results["provenance"] is not None:
        outputs = [exp / n for n in ("results.json", "RESULTS.md")]
        provenance.write_record(provenance.record_path(exp, "score"), score_record(results), outputs)
    print_results(results)
    console.print(f"wrote {exp / 'RESULTS.md'}")
    console.print(summary_line(results))
    return results
