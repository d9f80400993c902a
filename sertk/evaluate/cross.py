"""Cross-corpus evaluation: every fold model of an experiment scored on another corpus's data dir.

``sertk eval EXP --data OTHER --feats OTHER_FEATS`` writes ``OUT/<fold>/posteriors.tsv`` (each fold's model on
every utterance of OTHER whose class the model knows) and ``OUT/results.json`` + ``RESULTS.md``, where OUT
defaults to ``EXP/cross_<other data dir name>``. The classes are the intersection of the model's and the
other corpus's, in the model's order; each model's posteriors are renormalised over them (the prediction is
the argmax among them), and how many utterances fell outside is stated. Per-fold numbers are those of each
fold's model on the same test set; "pooled" counts every (model, utterance) pair, and "ensemble" scores the
mean posteriors of the fold models.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sertk import provenance
from sertk.data.datadir import DataDir, data_dir_digest, read_data_dir
from sertk.data.folds import select_folds
from sertk.errors import SertkError
from sertk.evaluate.inference import EvalOptions, experiment_inputs, fold_posteriors
from sertk.evaluate.posteriors import read_posteriors, write_posteriors
from sertk.evaluate.score import fold_statistics, pooled_scores, render_markdown, score_folds
from sertk.features.io import feature_info, feature_record_key
from sertk.inputs.featureset import build_feature_set, load_frames
from sertk.metrics import summarize
from sertk.models.trained import TrainedModel
from sertk.utils import atomic_write_text, console, resolve_device, write_json


def shared_classes(model_classes: list[str], data: DataDir) -> list[str]:
    """The model's classes that the other corpus has, in the model's order; SertkError when none."""
    shared = [c for c in model_classes if c in data.classes]
    if not shared:
        raise SertkError(
            f"{data.path}: none of its classes {data.classes} is a class of the model {model_classes}"
        )
    return shared


def check_features(model: TrainedModel, feats: Path) -> None:
    """The other corpus's dump must be the feature, with the config, the model was trained on."""
    info = feature_info(feats)
    if info["feat"] != model.feat or info["config"] != model.feat_config:
        raise SertkError(
            f"{feats}: holds {info['feat']} with another config than {model.source} was trained on "
            f"({model.feat}); dump it with the training recipe's conf/feats/{model.feat}.yaml"
        )


def restrict(scores: np.ndarray, model_classes: list[str], shared: list[str]) -> np.ndarray:
    """Posteriors over the shared classes only, renormalised to sum to 1."""
    kept = scores[:, [model_classes.index(c) for c in shared]]
    return kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-12)


def cross_record(fold_dir: Path, data: Path, feats: Path, opts: EvalOptions, tta: str) -> provenance.Record:
    train_key = provenance.recorded_key(provenance.record_path(fold_dir, "train"), "the trained fold")
    return provenance.Record(
        stage="cross-eval",
        inputs={
            "train": train_key,
            "checkpoint": provenance.stat_digest([fold_dir / opts.checkpoint]),
            "data": data_dir_digest(data),
            "feats": feature_record_key(feats),
        },
        options={"checkpoint": opts.checkpoint, "tta": tta},
    )


def evaluate_cross(
    exp: Path, data: Path, feats: Path, out: Path | None = None, opts: EvalOptions | None = None
) -> dict:
    """Score each selected fold model of ``exp`` on data dir ``data`` (features ``feats``); returns results."""
    opts = opts or EvalOptions()
    exp, data, feats = Path(exp), Path(data), Path(feats)
    info, _, folds = experiment_inputs(exp)
    other = read_data_dir(data)
    out = Path(out or exp / f"cross_{data.name}")
    device = resolve_device(opts.device)
    names, shared, utts, labels = [], None, None, None
    for spec in select_folds(folds, opts.fold):
        model = TrainedModel.from_checkpoint(exp / spec["name"] / opts.checkpoint)
        check_features(model, feats)
        if shared is None:
            shared = shared_classes(model.classes, other)
            utts = [u for u in other.utts if other["utt2emo"][u] in shared]
            labels = [shared.index(other["utt2emo"][u]) for u in utts]
        tta = model.input.tta if opts.tta is None else opts.tta
        fold_out = out / spec["name"]
        record = cross_record(exp / spec["name"], data, feats, opts, tta)
        if provenance.check(provenance.record_path(fold_out, "eval"), record):
            provenance.remove_record(provenance.record_path(fold_out, "eval"))
            store = load_frames(feats, utts, int(opts.memory_gb * 2**30))
            fset = build_feature_set(store, utts, labels, model.input, training=False)
            post = fold_posteriors(model, fset, tta, device, opts.batch_size)
            scores = restrict(post.scores.numpy(), model.classes, shared)
            fold_out.mkdir(parents=True, exist_ok=True)
            write_posteriors(
                fold_out / "posteriors.tsv", utts, labels, (scores.argmax(1), scores, None), shared
            )
            provenance.write_record(
                provenance.record_path(fold_out, "eval"), record, [fold_out / "posteriors.tsv"]
            )
        else:
            console.print(f"{fold_out}: posteriors up to date, skipped")
        names.append(spec["name"])
    return write_cross_results(out, exp, info, other, names, shared, labels)


def write_cross_results(
    out: Path, exp: Path, info: dict, other: DataDir, names: list[str], shared: list[str], labels: list[int]
) -> dict:
    """results.json and RESULTS.md of a cross-corpus evaluation (the fields of a normal results.json, plus
    ``cross_corpus`` and ``ensemble``)."""
    folds, y_true, y_pred = score_folds(out, names, shared, {})
    mean, std, ddof = fold_statistics(folds)
    mean_scores = np.mean([read_posteriors(out / n / "posteriors.tsv", shared).scores for n in names], axis=0)
    ensemble = summarize(labels, mean_scores.argmax(axis=1), len(shared))
    results: dict[str, Any] = {
        "system": f"{info.get('system', exp.name)} -> {other.meta.get('corpus', other.path.name)}",
        "protocol": "cross-corpus",
        "classes": shared,
        "synthetic": other.synthetic,
        "folds": folds,
        "mean": mean,
        "std": std,
        "pooled": pooled_scores(y_true, y_pred, shared),
        "ensemble": ensemble,
        "n_folds": len(folds),
        "missing_folds": [],
        "std_ddof": ddof,
        "arch": info.get("arch"),
        "feat": info.get("feat"),
        "paper": {},
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cross_corpus": {
            "experiment": str(exp.resolve()),
            "trained_on": info.get("data"),
            "tested_on": str(other.path.resolve()),
            "model_classes": info.get("classes"),
            "test_classes": other.classes,
            "utterances": len(labels),
            "left_out": len(other.utts) - len(labels),
        },
        "provenance": {"experiment": info.get("provenance_key")},
    }
    write_json(out / "results.json", results)
    atomic_write_text(out / "RESULTS.md", render_markdown(results))
    console.print(
        f"cross-corpus: {results['system']}: {len(labels)} utterances of classes {' '.join(shared)} "
        f"({results['cross_corpus']['left_out']} of other classes left out), mean UA {mean['ua']:.4f}, "
        f"ensemble UA {ensemble['ua']:.4f} -> {out / 'results.json'}"
    )
    return results
