"""``sertk train``: resolve an arch's defaults, check provenance, then train every selected fold into the exp dir.

An experiment is one config on one data dir, one folds file and one feature dump; ``EXP/experiment.json``
names them and ``EXP/experiment.provenance.json`` holds their digests. Each finished fold has
``EXP/<fold>/train.provenance.json`` (the experiment's key + the fold's utterance lists). A fold is reused
only when its record matches; a mismatch stops with one line naming what changed, unless ``--overwrite``
(then every stale output of the exp dir that sertk wrote is removed first, so the dir never mixes
experiments). ``--resume`` continues an unfinished fold only when its checkpoint has the same provenance.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sertk import provenance
from sertk.config import from_dict, read_yaml, to_dict, write_yaml
from sertk.data.datadir import DataDir, data_dir_digest, read_data_dir
from sertk.data.folds import read_folds, select_folds
from sertk.data.labels import soft_labels
from sertk.errors import SertkError
from sertk.features.io import feature_info, feature_record_key, load_features
from sertk.inputs.batch import Normalizer, norm_stats
from sertk.inputs.featureset import attach_words, build_feature_set, load_frames
from sertk.losses import LossConfig, balanced_class_weights, build_loss
from sertk.models import (
    MODELS,
    SYSTEMS,
    build_model,
    built_config,
    count_parameters,
    fit_model_config,
    model_config,
    model_input_digests,
)
from sertk.models.trained import load_checkpoint
from sertk.train import distributed
from sertk.train.config import ExperimentConfig, load_experiment_config
from sertk.train.distributed import SINGLE, Dist
from sertk.train.launch import in_distributed_job
from sertk.train.loop import FoldData, FoldRun, fit
from sertk.utils import atomic_path, console, resolve_device, run_environment, write_json

# Everything sertk train and sertk eval write into a fold dir (removed by --overwrite, nothing else is).
FOLD_OUTPUTS = (
    "checkpoint.pt",
    "best.pt",
    "metrics.csv",
    "train.log",
    "env.json",
    "config.yaml",
    "posteriors.tsv",
    "train.provenance.json",
    "eval.provenance.json",
    "attention",
    ".done",
)
# What sertk score writes into the exp dir (stale once the experiment changes).
SCORE_OUTPUTS = (
    "results.json",
    "RESULTS.md",
    "ANALYSIS.md",
    "analysis.json",
    "confusion.png",
    "learning_curves.png",
    "score.provenance.json",
)


@dataclass
class TrainOptions:
    """The options of ``sertk train`` (None = the arch's default path or the config's value)."""

    arch: str | None = None
    train_config: Path | None = None
    data: Path | None = None
    feats: Path | None = None
    folds: Path | None = None
    fold: str = "all"
    exp: Path | None = None
    epochs: int | None = None
    precision: str | None = None
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    lexical_feats: Path | None = None
    memory_gb: float = 8.0
    overrides: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE, dotted config keys
    ssl_encoder: Path | None = None  # an ssl feature YAML whose keys become model.encoder (on-the-fly SSL)
    nproc: int = 1  # data-parallel processes (sertk train --nproc N starts them; each runs this with N)
    plan: bool = False  # open the experiment, clear stale folds, write replay.sh; train nothing
    planned: bool = False  # one job of a planned experiment: write nothing outside the fold dirs


@dataclass
class Experiment:
    """A resolved experiment: config, inputs, and the provenance record of the exp dir."""

    cfg: ExperimentConfig
    config_path: Path
    system: str
    data: DataDir
    feats: Path
    folds_path: Path
    folds: dict
    exp: Path
    lexical_feats: Path | None
    record: provenance.Record

    @property
    def key(self) -> str:
        return self.record.key


def resolve_config(opts: TrainOptions) -> tuple[ExperimentConfig, Path]:
    """The experiment config: ``--train-config``, else ``conf/<system>.yaml`` of ``--arch``; they must agree."""
    train_config = opts.train_config
    if train_config is None:
        if opts.arch is None:
            raise SertkError("sertk train: pass --arch NAME or --train-config FILE")
        if opts.arch not in MODELS:
            raise SertkError(f"--arch {opts.arch}: unknown arch (known: {', '.join(MODELS)})")
        train_config = Path("conf") / f"{SYSTEMS[opts.arch]}.yaml"
        if not train_config.is_file():
            raise SertkError(
                f"{train_config}: no config for arch {opts.arch} here (run inside the recipe dir or pass --train-config)"
            )
    overrides = {**opts.overrides, "train.epochs": opts.epochs, "train.precision": opts.precision}
    cfg = load_experiment_config(train_config, overrides)
    if opts.arch is not None and opts.arch != cfg.arch:
        raise SertkError(f"{train_config}: arch {cfg.arch} disagrees with --arch {opts.arch}")
    if cfg.arch not in MODELS:
        raise SertkError(f"{train_config}: unknown arch {cfg.arch} (known: {', '.join(MODELS)})")
    from_dict(LossConfig, cfg.loss, where=f"{train_config}: loss")
    if opts.ssl_encoder is not None:
        cfg.model = with_encoder(cfg, Path(opts.ssl_encoder))
    return cfg, Path(train_config)


def with_encoder(cfg: ExperimentConfig, encoder_yaml: Path) -> dict:
    """The config's model section with ``encoder`` set from an ssl feature YAML (its keys over the config's
    own ``model.encoder`` keys): how a recipe hands the user's checkpoint to an on-the-fly config."""
    fields = {f.name for f in dataclasses.fields(MODELS[cfg.arch].Config)}
    if "encoder" not in fields:
        raise SertkError(
            f"--ssl-encoder: arch {cfg.arch} runs no encoder (only ssl-pool does, with feat wave)"
        )
    keys = read_yaml(encoder_yaml)
    return {**cfg.model, "encoder": {**(cfg.model.get("encoder") or {}), **keys}}


def check_input(path: Path, what: str, stage: str) -> Path:
    if not path.exists():
        raise SertkError(f"{path}: {what} not found (run {stage} first)")
    return path.resolve()


def check_lexical(cfg: ExperimentConfig, train_config: Path, lexical_feats: Path | None) -> Path | None:
    """The lexical feature dir, checked against the model's ``lexical_dim`` (0 or absent = acoustic only)."""
    dim = getattr(model_config(cfg.arch, cfg.model), "lexical_dim", 0)
    if lexical_feats is None:
        if dim:
            raise SertkError(
                f"{train_config}: model.lexical_dim {dim} needs word vectors: pass --lexical-feats DIR "
                "(a sertk feats --feat lexical dump)"
            )
        return None
    if not dim:
        raise SertkError(
            f"--lexical-feats: {train_config}'s model has no lexical branch (model.lexical_dim 0)"
        )
    lexical_feats = check_input(Path(lexical_feats), "lexical feature dir", "sertk feats --feat lexical")
    info = feature_info(lexical_feats)
    if info["feat"] != "lexical" or info["dim"] != dim:
        raise SertkError(
            f"{lexical_feats}: holds {info['feat']} of dim {info['dim']}, but {train_config} wants "
            f"lexical word vectors of dim {dim} (model.lexical_dim)"
        )
    return lexical_feats


def resolve_experiment(opts: TrainOptions) -> Experiment:
    """Config, paths (the arch's defaults for what is not given) and the exp dir's provenance record."""
    cfg, config_path = resolve_config(opts)
    system = SYSTEMS.get(cfg.arch, cfg.arch)
    data_path = check_input(Path(opts.data or Path("data") / system), "data dir", "stage 1 (sertk prep)")
    folds_path = check_input(
        Path(opts.folds or data_path / "folds.json"), "folds file", "stage 2 (sertk folds)"
    )
    feats = check_input(
        Path(opts.feats or Path("dump") / system / cfg.feat), "feature dir", "stage 3 (sertk feats)"
    )
    info = feature_info(feats)
    if info["feat"] != cfg.feat:
        raise SertkError(f"{feats}: holds feature {info['feat']}, but {config_path} wants feat {cfg.feat}")
    # Values the model reads off the dump (an ssl dump's layer count) are settled, and checked, here.
    written = model_config(cfg.arch, cfg.model)
    fitted = fit_model_config(cfg.arch, written, cfg.feat, info["config"])
    changed = {k: v for k, v in to_dict(fitted).items() if to_dict(written)[k] != v}
    cfg.model = {**cfg.model, **changed}  # the config as written, plus what the dump settled
    lexical_feats = check_lexical(cfg, config_path, opts.lexical_feats)
    data = read_data_dir(data_path)
    folds = read_folds(folds_path, data)
    inputs = {
        "data": data_dir_digest(data_path),
        "feats": feature_record_key(feats),
        "folds": provenance.file_digest(folds_path),
        # A pretrained encoder the model loads (its checkpoint's sha256): other weights under the same
        # path make another experiment.
        **model_input_digests(cfg.arch, fitted),
    }
    if lexical_feats is not None:
        inputs["lexical"] = feature_record_key(lexical_feats)
    record = provenance.Record(stage="experiment", inputs=inputs, options={"config": to_dict(cfg)})
    exp = Path(opts.exp or Path("exp") / system).resolve()
    return Experiment(cfg, config_path, system, data, feats, folds_path, folds, exp, lexical_feats, record)


def fold_record(xp: Experiment, spec: dict) -> provenance.Record:
    """A fold's record: the experiment's key plus the digest of the fold's train/valid/test lists."""
    parts = {p: spec[p] for p in ("train", "valid", "test")}
    return provenance.Record(
        stage="train",
        inputs={"experiment": xp.key, "fold": provenance.json_digest(parts)},
        options={"fold": spec["name"]},
    )


def clear_outputs(folder: Path, names: tuple[str, ...]) -> None:
    """Remove the named outputs sertk wrote in ``folder``; anything else there is left alone."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def open_experiment(xp: Experiment, overwrite: bool) -> None:
    """Make ``xp.exp`` hold this experiment only: refuse (or, with overwrite, clear) another one's outputs."""
    record_path = provenance.record_path(xp.exp, "experiment")
    if xp.exp.is_dir() and provenance.read_record(record_path) is not None:
        changes = provenance.check(record_path, xp.record)
        if changes:
            if not overwrite:
                raise SertkError(
                    f"{xp.exp}: holds an experiment made from other inputs ({'; '.join(changes[:4])}); "
                    "pass --overwrite to retrain it, or choose another --exp"
                )
            console.print(f"{xp.exp}: inputs changed ({'; '.join(changes[:4])}): removing its old outputs")
            for fold_dir in (d for d in xp.exp.iterdir() if d.is_dir()):
                clear_outputs(fold_dir, FOLD_OUTPUTS)
            clear_outputs(xp.exp, SCORE_OUTPUTS)
    xp.exp.mkdir(parents=True, exist_ok=True)
    write_yaml(xp.exp / "config.yaml", xp.cfg)
    write_json(xp.exp / "experiment.json", experiment_json(xp))
    provenance.write_record(record_path, xp.record)


def check_planned(xp: Experiment) -> None:
    """A job of a planned experiment (``sertk train --plan`` opened it) may train folds only if it still matches:
    concurrent fold jobs then write nothing but their own fold dirs."""
    changes = provenance.check(provenance.record_path(xp.exp, "experiment"), xp.record)
    if changes:
        raise SertkError(
            f"{xp.exp}: not planned for these inputs ({'; '.join(changes[:4])}); run sertk train --plan first"
        )


def experiment_json(xp: Experiment) -> dict:
    """experiment.json (docs/architecture.md): what the experiment was made from, for eval and score."""
    info = {
        "system": xp.system,
        "arch": xp.cfg.arch,
        "data": str(xp.data.path.resolve()),
        "feats": str(xp.feats),
        "folds": str(xp.folds_path),
        "protocol": xp.folds.get("protocol", xp.cfg.protocol),
        "classes": xp.data.classes,
        "synthetic": xp.data.synthetic,
        "feat": xp.cfg.feat,
        "paper": xp.cfg.paper,
        "config": str(xp.config_path.resolve()),
        "provenance_key": xp.key,
    }
    if xp.lexical_feats is not None:
        info["lexical_feats"] = str(xp.lexical_feats)
    encoder = xp.cfg.model.get("encoder")
    if encoder:
        info["encoder"] = {"checkpoint": encoder["checkpoint"], "sha256": xp.record.inputs["encoder"]}
    return info


def load_fold(xp: Experiment, spec: dict, budget_bytes: int) -> FoldData:
    """Train and validation rows of one fold, normalisation from the train part only, labels and targets."""
    cfg, data = xp.cfg, xp.data
    train_utts, valid_utts = list(spec["train"]), list(spec["valid"])
    train_store = load_frames(xp.feats, train_utts, budget_bytes)
    train = build_feature_set(
        train_store, train_utts, data.labels(train_utts), cfg.input, True, cfg.train.seed
    )
    valid = None
    if valid_utts:
        valid_store = load_frames(xp.feats, valid_utts, max(budget_bytes - train_store.nbytes, 0))
        valid = build_feature_set(valid_store, valid_utts, data.labels(valid_utts), cfg.input, False)
    normalizer = fold_normalizer(cfg, data, train)
    for fset in (s for s in (train, valid) if s is not None):
        if xp.lexical_feats is not None:
            attach_words(fset, load_features(xp.lexical_feats, fset.utts))
        if cfg.train.labels == "soft":
            votes = data["utt2votes"]
            hard = fset.labels.tolist()
            targets, weights = soft_labels(
                [votes.get(u, "") for u in fset.utts], hard, data.classes, data.class_map
            )
            fset.targets, fset.weights = torch.from_numpy(targets), torch.from_numpy(weights)
    return FoldData(train, valid, normalizer, data.classes)


def fold_normalizer(cfg: ExperimentConfig, data: DataDir, train) -> Normalizer | None:
    """``input.normalize`` statistics of the train part's kept frames (neutral utterances only for neutral)."""
    mode = cfg.input.normalize
    if mode == "none":
        return None
    select = None
    if mode == "neutral":
        if "neu" not in data.classes:
            raise SertkError(f"input.normalize neutral: no class neu in {data.path}'s classes {data.classes}")
        select = (train.labels == data.classes.index("neu")).tolist()
    return Normalizer(*norm_stats(train, select, scalar=mode == "global-scalar"))


def train_fold(
    xp: Experiment, spec: dict, device: torch.device, resume: bool, budget_bytes: int, ranks: Dist = SINGLE
) -> dict:
    """Train one fold into ``EXP/<fold>`` and write its provenance record last; returns its summary.

    Under DDP every rank loads the fold and trains its share; rank 0 alone writes.
    """
    cfg = xp.cfg
    if not spec["valid"] and cfg.train.needs_validation:
        raise SertkError(
            f"{xp.folds_path}: {spec['name']} has no validation part, but the config selects or stops on it "
            "(set train.select: last and train.patience: 0 for a protocol without validation)"
        )
    fold_dir = xp.exp / spec["name"]
    data = load_fold(xp, spec, budget_bytes)
    dim = data.train.dim
    torch.manual_seed(cfg.train.seed)  # the initial weights, like everything after them, are reproducible
    model = build_model(cfg.arch, cfg.model, dim, len(xp.data.classes))
    resolved = built_config(model, model_config(cfg.arch, cfg.model))
    if cfg.train.finetune:
        if not hasattr(model, "set_finetune"):
            raise SertkError(f"train.finetune: arch {cfg.arch} has no pretrained encoder to fine-tune")
        model.set_finetune(True)
        if device.type == "cpu":
            console.print(
                f"{spec['name']}: fine-tuning the encoder on CPU (fine for tiny checkpoints; use --device cuda)"
            )
    weights = None
    if cfg.train.class_weights == "balanced":
        weights = balanced_class_weights(data.train.row_labels.tolist(), len(xp.data.classes))
    loss_fn = build_loss(
        cfg.loss,
        len(xp.data.classes),
        head=getattr(resolved, "head", "linear"),
        class_weights=weights,
        head_scale=getattr(resolved, "head_scale", None),
    )
    soft = cfg.train.labels == "soft" or cfg.input.mixup.enabled
    if soft and not getattr(loss_fn, "soft_targets", False):
        raise SertkError(
            f"train.labels soft and input.mixup need a loss on distributions (loss.name: ce), not {cfg.loss.get('name')}"
        )
    valid = data.valid
    console.print(
        f"{spec['name']}: {cfg.arch}, {count_parameters(model):,} parameters; train {len(data.train.utts)} "
        f"utts ({len(data.train)} rows), valid {0 if valid is None else len(valid.utts)} utts, "
        f"input dim {dim}, device {device}, {cfg.train.precision}"
    )
    if ranks.main:
        fold_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(fold_dir / "config.yaml", cfg)
        write_json(fold_dir / "env.json", {**run_environment(str(device)), "processes": ranks.world})
    record = fold_record(xp, spec)
    info = checkpoint_info(xp, resolved, data, dim, record.key)
    run = FoldRun(fold_dir, device, info, resume, ranks)
    summary = {"name": spec["name"], **fit(model, loss_fn, data, cfg.train, cfg.input, run)}
    if ranks.main:
        outputs = [fold_dir / n for n in ("best.pt", "checkpoint.pt", "metrics.csv")]
        provenance.write_record(provenance.record_path(fold_dir, "train"), record, outputs, summary=summary)
    distributed.barrier(ranks)
    return summary


def checkpoint_info(xp: Experiment, resolved: object, data: FoldData, dim: int, key: str) -> dict:
    """What both checkpoints carry so that inference needs nothing else (docs/architecture.md)."""
    info_feat = feature_info(xp.feats)
    norm = data.normalizer
    return {
        "arch": xp.cfg.arch,
        "model_config": to_dict(resolved),
        "classes": xp.data.classes,
        "feat": info_feat["feat"],
        "feat_config": info_feat["config"],
        "input_dim": dim,
        "norm_mean": None if norm is None else norm.mean,
        "norm_std": None if norm is None else norm.std,
        "input": to_dict(xp.cfg.input),
        "loss": to_dict(xp.cfg.loss),
        "precision": xp.cfg.train.precision,
        "provenance_key": key,
    }


def fold_status(xp: Experiment, spec: dict, opts: TrainOptions) -> str:
    """``done`` (record matches), ``train`` (start or resume), after clearing a stale fold with --overwrite."""
    fold_dir = xp.exp / spec["name"]
    record_path = provenance.record_path(fold_dir, "train")
    if record_path.exists():
        changes = provenance.check(record_path, fold_record(xp, spec))
        if not changes:
            return "done"
        if not opts.overwrite:
            raise SertkError(
                f"{fold_dir}: trained from other inputs ({'; '.join(changes[:4])}); pass --overwrite"
            )
        clear_outputs(fold_dir, FOLD_OUTPUTS)
    elif fold_dir.is_dir() and any((fold_dir / n).exists() for n in FOLD_OUTPUTS):
        if opts.overwrite and not opts.resume:
            clear_outputs(fold_dir, FOLD_OUTPUTS)
        elif not opts.resume:
            raise SertkError(
                f"{fold_dir}: an unfinished fold is there; pass --resume to continue it or --overwrite"
            )
        elif opts.overwrite and not resumable(fold_dir, fold_record(xp, spec).key):
            clear_outputs(fold_dir, FOLD_OUTPUTS)
    return "train"


def resumable(fold_dir: Path, key: str) -> bool:
    """Whether the fold's checkpoint.pt was made with provenance ``key`` (so --resume may continue it)."""
    path = fold_dir / "checkpoint.pt"
    if not path.is_file():
        return False
    try:
        return load_checkpoint(path).get("provenance_key") == key
    except SertkError:
        return False


def write_replay(exp: Path, args: dict, overrides: dict[str, Any]) -> None:
    """replay.sh: the ``sertk train`` command line with absolute paths, executable."""
    words = ["sertk", "train"]
    for key, value in args.items():
        if value is not None:
            words += [f"--{key.replace('_', '-')}", str(value)]
    for key, value in overrides.items():
        words += ["--set", f"{key}={json.dumps(value)}"]
    text = "#!/usr/bin/env bash\n# Replays the training of this experiment.\nset -euo pipefail\n"
    text += " ".join(shlex.quote(w) for w in words) + ' "$@"\n'
    with atomic_path(exp / "replay.sh") as tmp:
        tmp.write_text(text)
        tmp.chmod(0o755)


def join_job(opts: TrainOptions) -> tuple[Dist, torch.device]:
    """This process's rank and device: a single process, or one rank of the job torchrun / --nproc started."""
    device = resolve_device(opts.device)
    if not in_distributed_job():
        if opts.nproc > 1:
            raise SertkError(
                f"nproc {opts.nproc}: start the processes with `sertk train --nproc {opts.nproc}` or torchrun"
            )
        return SINGLE, device
    ranks, device = distributed.join(device)
    if opts.nproc > 1 and opts.nproc != ranks.world:
        distributed.leave(ranks)
        raise SertkError(f"--nproc {opts.nproc}: this job has {ranks.world} processes (WORLD_SIZE)")
    console.quiet = not ranks.main  # one voice: rank 0 prints progress and epoch lines
    return ranks, device


def train(opts: TrainOptions) -> list[dict]:
    """Train the selected folds of the experiment ``opts`` describes; returns per-fold summaries."""
    xp = resolve_experiment(opts)
    selected = select_folds(xp.folds, opts.fold)
    if opts.plan:
        open_and_replay(xp, opts, opts.nproc if opts.nproc > 1 else None)
        todo = [spec["name"] for spec in selected if fold_status(xp, spec, opts) == "train"]
        console.print(
            f"{xp.exp}: planned; {len(todo)} of {len(selected)} fold(s) to train: {' '.join(todo) or '-'}"
        )
        return []
    ranks, device = join_job(opts)
    try:
        return train_folds(xp, selected, opts, ranks, device)
    finally:
        distributed.leave(ranks)


def open_and_replay(xp: Experiment, opts: TrainOptions, nproc: int | None) -> None:
    """Open the exp dir for this experiment and write replay.sh (a --planned job only checks its record)."""
    if opts.planned:
        check_planned(xp)
        return
    open_experiment(xp, opts.overwrite)
    replay = {"train_config": xp.config_path.resolve(), "data": xp.data.path.resolve(), "feats": xp.feats}
    replay.update({"folds": xp.folds_path, "fold": opts.fold, "exp": xp.exp, "epochs": opts.epochs})
    replay.update({"precision": opts.precision, "device": opts.device, "lexical_feats": xp.lexical_feats})
    replay["ssl_encoder"] = None if opts.ssl_encoder is None else Path(opts.ssl_encoder).resolve()
    replay["nproc"] = nproc
    write_replay(xp.exp, replay, opts.overrides)


def train_folds(xp: Experiment, selected: list[dict], opts: TrainOptions, ranks: Dist, device) -> list[dict]:
    """Open the exp dir (rank 0) and train or skip each selected fold; returns per-fold summaries."""
    if ranks.main:
        open_and_replay(xp, opts, ranks.world if ranks.active else None)
    budget = int(opts.memory_gb * 2**30)
    summaries = []
    for spec in selected:
        # Rank 0 decides (and clears a stale fold) before the others hear its decision.
        status = distributed.broadcast(ranks, fold_status(xp, spec, opts) if ranks.main else None)
        if status == "done":
            record = provenance.read_record(provenance.record_path(xp.exp / spec["name"], "train"))
            summary = record.made.get("summary", {"name": spec["name"]})
            console.print(f"{spec['name']}: up to date (best epoch {summary.get('best_epoch')}), skipped")
        else:
            summary = train_fold(xp, spec, device, opts.resume, budget, ranks)
        summaries.append(summary)
    scored = [s["valid_ua"] for s in summaries if s.get("valid_ua") is not None]
    if scored:
        console.print(
            f"{xp.system}: {len(summaries)} fold(s), mean valid UA {np.mean(scored):.4f} -> {xp.exp}"
        )
    return summaries
