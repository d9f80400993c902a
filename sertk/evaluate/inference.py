"""Stage 6: each fold's trained model over its test set -> ``<fold>/posteriors.tsv``.

A fold is evaluated only when its training finished with a valid provenance record, and re-evaluated only
when what its posteriors were made from changed (the training record, the checkpoint file, the TTA):
``<fold>/eval.provenance.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sertk import provenance
from sertk.augment.vtlp import tta_copies
from sertk.data.datadir import DataDir, read_data_dir
from sertk.data.folds import read_folds, select_folds
from sertk.errors import SertkError
from sertk.evaluate.posteriors import write_posteriors
from sertk.features.io import load_features
from sertk.inputs.featureset import attach_words, build_feature_set, load_frames
from sertk.metrics import summarize
from sertk.models.predict import Posteriors, utterance_posteriors
from sertk.models.trained import TrainedModel
from sertk.utils import console, read_experiment, resolve_device

TTA_CHOICES = ("none", "vtlp")


@dataclass
class EvalOptions:
    """The options of ``sertk eval``: which folds, device, checkpoint file, TTA (None = the config's)."""

    fold: str = "all"
    device: str = "auto"
    checkpoint: str = "best.pt"
    tta: str | None = None
    batch_size: int = 64
    memory_gb: float = 8.0


def experiment_inputs(exp: Path) -> tuple[dict, DataDir, dict]:
    """experiment.json, the data dir and the folds file it names (one-line errors when any is missing)."""
    info = read_experiment(exp)
    missing = [k for k in ("data", "feats", "folds") if not isinstance(info.get(k), str)]
    if missing:
        raise SertkError(
            f"{exp / 'experiment.json'}: missing key(s) {', '.join(missing)} (retrain with sertk train)"
        )
    data = read_data_dir(info["data"])
    return info, data, read_folds(Path(info["folds"]), data)


def test_set(model: TrainedModel, info: dict, spec: dict, data: DataDir, budget: int):
    """The fold's test rows under the model's input config (crop, segments at the test shift, scaling)."""
    utts = list(spec["test"])
    labels = data.labels(utts)
    store = load_frames(Path(info["feats"]), utts, budget)
    fset = build_feature_set(store, utts, labels, model.input, training=False)
    if info.get("lexical_feats"):
        attach_words(fset, load_features(Path(info["lexical_feats"]), utts))
    return utts, labels, fset


def fold_posteriors(model: TrainedModel, fset, tta: str, device: torch.device, batch_size: int) -> Posteriors:
    """Utterance posteriors of one fold's test set, with the 11 VTLP copies and a vote for ``tta`` vtlp."""
    transforms = tta_copies(tta, model.input.vtlp_boundary)
    network = model.build(device)
    return utterance_posteriors(
        network, fset, device, batch_size, model.normalizer, transforms, vote=tta == "vtlp"
    )


def eval_record(fold_dir: Path, checkpoint: str, tta: str) -> provenance.Record:
    """What a fold's posteriors are made from: its training record, the checkpoint file, the TTA."""
    train_key = provenance.recorded_key(provenance.record_path(fold_dir, "train"), "the trained fold")
    return provenance.Record(
        stage="eval",
        inputs={"train": train_key, "checkpoint": provenance.stat_digest([fold_dir / checkpoint])},
        options={"checkpoint": checkpoint, "tta": tta},
    )


def evaluate(exp: Path, opts: EvalOptions | None = None) -> list[dict]:
    """Write ``<exp>/<fold>/posteriors.tsv`` for each selected fold; return per-fold {name, n, wa, ua}."""
    opts = opts or EvalOptions()
    if opts.tta not in (None, *TTA_CHOICES):
        raise SertkError(f"--tta {opts.tta}: expected config, none or vtlp")
    exp = Path(exp)
    info, data, folds = experiment_inputs(exp)
    device = resolve_device(opts.device)
    results = []
    for spec in select_folds(folds, opts.fold):
        fold_dir = exp / spec["name"]
        model = TrainedModel.from_checkpoint(fold_dir / opts.checkpoint)
        if model.classes != data.classes:
            raise SertkError(
                f"{model.source}: classes {model.classes} differ from {data.path}'s {data.classes}"
            )
        tta = model.input.tta if opts.tta is None else opts.tta
        record = eval_record(fold_dir, opts.checkpoint, tta)
        if not provenance.check(provenance.record_path(fold_dir, "eval"), record):
            console.print(f"{spec['name']}: posteriors up to date, skipped")
            continue
        provenance.remove_record(provenance.record_path(fold_dir, "eval"))
        utts, labels, fset = test_set(model, info, spec, data, int(opts.memory_gb * 2**30))
        post = fold_posteriors(model, fset, tta, device, opts.batch_size)
        preds = post.pred.numpy()
        softmax = post.softmax.numpy() if post.voted else None
        write_posteriors(
            fold_dir / "posteriors.tsv", utts, labels, (preds, post.scores.numpy(), softmax), data.classes
        )
        provenance.write_record(
            provenance.record_path(fold_dir, "eval"), record, [fold_dir / "posteriors.tsv"]
        )
        scores = summarize(labels, preds, len(data.classes))
        results.append({"name": spec["name"], "n": scores["n"], "wa": scores["wa"], "ua": scores["ua"]})
        console.print(
            f"{spec['name']}: {scores['n']} test utterances, WA {scores['wa']:.4f} UA {scores['ua']:.4f}"
        )
    return results
