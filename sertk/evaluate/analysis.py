"""Per-fold and rater-agreement breakdowns of an evaluated experiment (cnn_blstm_vtlp.txt Tables 2 and 6).

``sertk analyze EXP`` reads each fold's posteriors.tsv and the data dir's utt2spk / utt2session /
utt2gender / utt2votes, and writes ``EXP/analysis.json`` and ``EXP/ANALYSIS.md``:

- Table 2 layout: one row per fold with its session, the test speaker's gender, WA and UA, and the mean over
  folds ("Total" in the paper is that mean: 64.5 / 61.7).
- Table 6 layout: over the pooled test sets of all folds, per-class accuracy of the first choice (argmax)
  and of the second choice (the share of a class's utterances whose second-ranked class is the true one,
  so 1st + 2nd = top-2 accuracy), weighted and unweighted, on all utterances and on the unanimous and
  ambiguous subsets. Unanimous (§3.3, Table 5): every rater's vote contains the utterance's class (after
  the corpus' class map); ambiguous: the other utterances with votes. Utterances without votes are in
  neither subset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from sertk.data.datadir import DataDir, read_data_dir
from sertk.data.labels import agreement
from sertk.errors import SertkError
from sertk.evaluate.posteriors import read_posteriors
from sertk.metrics import summarize
from sertk.utils import atomic_write_text, console, read_experiment, write_json

SUBSETS = ("all", "unanimous", "ambiguous")


def second_choice(posteriors: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The class with the highest posterior other than the prediction (ties: the lowest class index).

    With VTLP voting, ``posteriors`` is the copies' mean softmax (posteriors.tsv ``softmax_*``), so the
    second choice is ranked by the network's outputs, not by vote counts (cnn_blstm_vtlp.txt Table 6).
    """
    masked = posteriors.copy()
    masked[np.arange(len(preds)), preds] = -np.inf
    return masked.argmax(axis=1)


def choice_accuracies(
    y_true: np.ndarray, first: np.ndarray, second: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Per-class, weighted and unweighted accuracy of the first and second choice (Table 6 columns 1st, 2nd)."""
    per_class = {}
    for c, name in enumerate(classes):
        members = y_true == c
        count = int(members.sum())
        per_class[name] = {
            "n": count,
            "first": float((first[members] == c).mean()) if count else None,
            "second": float((second[members] == c).mean()) if count else None,
        }
    present = [v for v in per_class.values() if v["n"]]
    total = len(y_true)
    return {
        "n": total,
        "classes": per_class,
        "weighted": {
            "first": float((first == y_true).mean()) if total else None,
            "second": float((second == y_true).mean()) if total else None,
        },
        "unweighted": {
            "first": float(np.mean([v["first"] for v in present])) if present else None,
            "second": float(np.mean([v["second"] for v in present])) if present else None,
        },
    }


def _describe(values: list[str]) -> str:
    return "+".join(sorted(set(values))) or "?"


def _session_name(data: DataDir, utt: str) -> str:
    session = data.tables.get("utt2session", {}).get(utt)
    if session:
        return session.removeprefix("Session")
    speaker = data.tables["utt2spk"].get(utt, "")
    match = re.match(r"Ses0*(\d+)", speaker)
    return match[1] if match else "?"


def analyze(exp: Path) -> dict[str, Any]:
    """The Table 2 rows and Table 6 breakdowns of experiment ``exp`` (its folds with a posteriors.tsv)."""
    exp = Path(exp)
    info = read_experiment(exp)
    data = read_data_dir(info["data"])
    classes = data.classes
    fold_dirs = sorted(
        (d for d in exp.iterdir() if (d / "posteriors.tsv").is_file()),
        key=lambda d: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", d.name)],
    )
    if not fold_dirs:
        raise SertkError(f"{exp}: no fold has a posteriors.tsv (run stage 6 (sertk eval) first)")
    genders = data.tables.get("utt2gender", {})
    folds, pooled = [], {"labels": [], "first": [], "second": [], "utts": []}
    for fold_dir in fold_dirs:
        table = read_posteriors(fold_dir / "posteriors.tsv", classes)
        utts, labels, preds = table.utts, table.labels, table.preds
        speakers = [data.tables["utt2spk"].get(u, "?") for u in utts]
        scores = summarize(labels, preds, len(classes))
        folds.append(
            {
                "name": fold_dir.name,
                "session": _describe([_session_name(data, u) for u in utts]),
                "gender": _describe([genders.get(u, "?") for u in utts]),
                "speakers": sorted(set(speakers)),
                "n": scores["n"],
                "wa": scores["wa"],
                "ua": scores["ua"],
            }
        )
        pooled["labels"].append(labels)
        pooled["first"].append(preds)
        pooled["second"].append(second_choice(table.softmax, preds))
        pooled["utts"] += utts
    y_true, first, second = (np.concatenate(pooled[k]) for k in ("labels", "first", "second"))
    result: dict[str, Any] = {
        "system": info.get("system", exp.name),
        "synthetic": info.get("synthetic", data.synthetic),
        "classes": classes,
        "folds": folds,
        "mean": {m: float(np.mean([f[m] for f in folds])) for m in ("wa", "ua")},
        "subsets": {"all": choice_accuracies(y_true, first, second, classes)},
    }
    votes = data.tables.get("utt2votes")
    if votes is not None:
        subset = agreement([votes.get(u, "") for u in pooled["utts"]], y_true, classes, data.class_map)
        for name, code in (("unanimous", 1), ("ambiguous", 0)):
            keep = subset == code
            result["subsets"][name] = choice_accuracies(y_true[keep], first[keep], second[keep], classes)
        result["no_votes"] = int((subset < 0).sum())
    return result


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def render_analysis(result: dict[str, Any]) -> str:
    """ANALYSIS.md: the per-fold table (Table 2 layout) and the first/second-choice breakdown (Table 6 layout)."""
    lines = [f"# {result['system']}: per-fold and rater-agreement analysis", ""]
    if result["synthetic"]:
        lines += ["**SYNTHETIC data**: these numbers do not describe real emotion recognition.", ""]
    elif result["synthetic"] is None:
        lines += ["**Data provenance unknown**: do not report these as results on real data.", ""]
    lines += ["## Per fold (cnn_blstm_vtlp.txt Table 2 layout)", ""]
    lines += [
        "| Fold | Session | Gender | Speakers | N | WA (%) | UA (%) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for fold in result["folds"]:
        lines.append(
            f"| {fold['name']} | {fold['session']} | {fold['gender']} | {' '.join(fold['speakers'])} "
            f"| {fold['n']} | {_pct(fold['wa'])} | {_pct(fold['ua'])} |"
        )
    lines += [f"| Total (mean) | | | | | {_pct(result['mean']['wa'])} | {_pct(result['mean']['ua'])} |", ""]
    subsets = [s for s in SUBSETS if s in result["subsets"]]
    lines += [
        "## First and second choice by rater agreement (Table 6 layout, all folds' test sets pooled)",
        "",
    ]
    if "unanimous" not in result["subsets"]:
        lines += ["No utt2votes in the data dir: only the 'all' columns.", ""]
    header = ["Emotion"] + [f"{s} {k}" for s in subsets for k in ("N", "1st", "2nd")]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in result["classes"]:
        cells = []
        for s in subsets:
            row = result["subsets"][s]["classes"][name]
            cells += [str(row["n"]), _pct(row["first"]), _pct(row["second"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for avg in ("weighted", "unweighted"):
        cells = []
        for s in subsets:
            block = result["subsets"][s]
            cells += [
                str(block["n"]) if avg == "weighted" else "",
                _pct(block[avg]["first"]),
                _pct(block[avg]["second"]),
            ]
        lines.append(f"| {avg.capitalize()} | " + " | ".join(cells) + " |")
    if result.get("no_votes"):
        lines += ["", f"{result['no_votes']} test utterances have no votes and are in neither subset."]
    return "\n".join(lines) + "\n"


def analyze_experiment(exp: Path) -> dict[str, Any]:
    """Write ``exp/analysis.json`` and ``exp/ANALYSIS.md`` (atomically) and return the analysis."""
    exp = Path(exp)
    result = analyze(exp)
    write_json(exp / "analysis.json", result)
    atomic_write_text(exp / "ANALYSIS.md", render_analysis(result))
    console.print(
        f"{result['system']}: {len(result['folds'])} folds, mean WA {_pct(result['mean']['wa'])} "
        f"UA {_pct(result['mean']['ua'])} -> {exp / 'ANALYSIS.md'}"
    )
    return result
