"""``sertk train``: resolve the defaults of an arch, then train every selected fold into the exp dir."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import torch

from sertk.config import from_dict, read_yaml, to_dict, write_yaml
from sertk.data.datadir import DataDir, read_data_dir
from sertk.data.folds import read_folds, select_folds
from sertk.errors import SertkError
from sertk.evaluate.inference import prepare_split, resolve_device
from sertk.features.io import feature_info, load_features
from sertk.losses import LossConfig, build_loss
from sertk.models import MODELS, SYSTEMS, build_model, count_parameters, model_config
from sertk.train.config import ExperimentConfig, load_experiment_config
from sertk.train.dataset import attach_words, class_weights_balanced, crop_frames, norm_stats, soft_labels
from sertk.train.loop import fit
from sertk.utils import atomic_path, console, run_environment, write_json


def resolve_config(
    arch: str | None, train_config: Path | None, epochs: int | None
) -> tuple[ExperimentConfig, Path]:
    """The experiment config: ``--train-config``, else ``conf/<system>.yaml`` of ``--arch``; they must agree."""
    if train_config is None:
        if arch is None:
            raise SertkError("sertk train: pass --arch NAME or --train-config FILE")
        if arch not in MODELS:
            raise SertkError(f"--arch {arch}: unknown arch (known: {', '.join(MODELS)})")
        train_config = Path("conf") / f"{SYSTEMS[arch]}.yaml"
        if not train_config.is_file():
            raise SertkError(
                f"{train_config}: no config for arch {arch} here (run inside the recipe dir or pass --train-config)"
            )
    cfg = load_experiment_config(train_config, epochs)
    if arch is not None and arch != cfg.arch:
        raise SertkError(f"{train_config}: arch {cfg.arch} disagrees with --arch {arch}")
    if cfg.arch not in MODELS:
        raise SertkError(f"{train_config}: unknown arch {cfg.arch} (known: {', '.join(MODELS)})")
    return cfg, train_config


def check_input(path: Path, what: str, stage: str) -> Path:
    if not path.exists():
        raise SertkError(f"{path}: {what} not found (run {stage} first)")
    return path.resolve()


def fold_inputs(
    cfg: ExperimentConfig, data: DataDir, spec: dict, feats_dir: Path, lexical_feats: Path | None = None
) -> dict:
    """Train and valid FeatureSets of one fold plus the normalisation stats of its train part.

    With ``lexical_feats`` (a ``--feat lexical`` dump) both sets also carry their utterances' word vectors.
    """
    name = spec["name"]
    if not spec["train"] or not spec["valid"]:
        raise SertkError(
            f"fold {name}: needs train and valid utterances (has {len(spec['train'])}/{len(spec['valid'])})"
        )
    train_utts, valid_utts = list(spec["train"]), list(spec["valid"])
    feats = load_features(feats_dir, train_utts + valid_utts)
    train_labels, valid_labels = data.labels(train_utts), data.labels(valid_utts)
    inp, classes = cfg.input, data.classes
    mean = std = None
    if inp.normalize != "none":
        # Statistics of exactly the frames the model sees (after cropping), train part only.
        cropped = crop_frames([feats[u] for u in train_utts], inp.max_frames, inp.crop, cfg.train.seed)
        select = None
        if inp.normalize == "neutral":
            if "neu" not in classes:
                raise SertkError(f"input.normalize neutral: no class neu in {data.path}'s classes {classes}")
            select = [label == classes.index("neu") for label in train_labels]
        mean_np, std_np = norm_stats(cropped, select, scalar=inp.normalize == "global-scalar")
        mean, std = torch.from_numpy(mean_np), torch.from_numpy(std_np)
    shift_train = inp.segment_shift_train
    train_set = prepare_split(feats, train_utts, train_labels, inp, shift_train, cfg.train.seed)
    valid_set = prepare_split(feats, valid_utts, valid_labels, inp, inp.segment_shift_test)
    if lexical_feats is not None:
        words = load_features(lexical_feats, train_utts + valid_utts)
        attach_words(train_set, words)
        attach_words(valid_set, words)
    if cfg.train.labels == "soft":
        votes = data["utt2votes"]
        class_map = data.meta.get("class_map", {})
        for fset, labels in ((train_set, train_labels), (valid_set, valid_labels)):
            targets, weights = soft_labels([votes.get(u, "") for u in fset.utts], labels, classes, class_map)
            fset.targets, fset.weights = torch.from_numpy(targets), torch.from_numpy(weights)
    return {"train": train_set, "valid": valid_set, "mean": mean, "std": std, "train_labels": train_labels}


def train_fold(
    cfg: ExperimentConfig,
    data: DataDir,
    spec: dict,
    feats_dir: Path,
    fold_dir: Path,
    device: torch.device,
    resume: bool,
    lexical_feats: Path | None = None,
) -> dict:
    """Train one fold into ``fold_dir`` and mark it done; returns its summary."""
    info_feat = feature_info(feats_dir)
    inputs = fold_inputs(cfg, data, spec, feats_dir, lexical_feats)
    classes = data.classes
    # Seeded so that the initial weights, like everything after them, are reproducible.
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.arch, cfg.model, info_feat["dim"], len(classes))
    resolved = model_config(cfg.arch, cfg.model)
    class_weights = None
    if cfg.train.class_weights == "balanced":
        class_weights = class_weights_balanced(inputs["train_labels"], len(classes))
    loss_fn = build_loss(
        cfg.loss,
        len(classes),
        head=getattr(resolved, "head", "linear"),
        class_weights=class_weights,
        head_scale=getattr(resolved, "head_scale", None),
    )
    if cfg.train.labels == "soft" and not getattr(loss_fn, "soft_targets", False):
        raise SertkError(
            f"train.labels soft needs a soft-label loss (loss.name: soft-ce), not {cfg.loss.get('name')}"
        )
    train_set, valid_set = inputs["train"], inputs["valid"]
    console.print(
        f"{spec['name']}: {cfg.arch}, {count_parameters(model):,} parameters; "
        f"train {len(train_set.utts)} utts ({len(train_set)} rows), valid {len(valid_set.utts)} utts "
        f"({len(valid_set)} rows), input dim {info_feat['dim']}, device {device}"
    )
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(fold_dir / "config.yaml", cfg)
    write_json(fold_dir / "env.json", run_environment(str(device)))
    info = {
        "arch": cfg.arch,
        "model_config": to_dict(resolved),
        "classes": classes,
        "feat": info_feat["feat"],
        "feat_config": info_feat["config"],
        "norm_mean": inputs["mean"],
        "norm_std": inputs["std"],
        "input": to_dict(cfg.input),
        "loss": to_dict(cfg.loss),
    }
    summary = fit(
        model,
        loss_fn,
        train_set,
        valid_set,
        cfg.train,
        fold_dir,
        device,
        info,
        cfg.input.white_noise_std,
        resume,
    )
    summary = {"name": spec["name"], **summary}
    write_json(fold_dir / ".done", summary)
    return summary


def check_lexical(resolved: object, train_config: Path, lexical_feats: Path | None) -> Path | None:
    """The lexical feature dir, checked against the model's ``lexical_dim`` (0 or absent = acoustic only)."""
    dim = getattr(resolved, "lexical_dim", 0)
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


def write_replay(exp: Path, args: dict) -> None:
    """replay.sh: the ``sertk train`` command line with absolute paths, executable."""
    words = ["sertk", "train"]
    for key, value in args.items():
        if value is not None:
            words += [f"--{key.replace('_', '-')}", str(value)]
    text = "#!/usr/bin/env bash\n# Replays the training of this experiment.\nset -euo pipefail\n"
    text += " ".join(shlex.quote(w) for w in words) + ' "$@"\n'
    with atomic_path(exp / "replay.sh") as tmp:
        tmp.write_text(text)
        tmp.chmod(0o755)


def train(
    arch: str | None = None,
    train_config: Path | None = None,
    data: Path | None = None,
    feats: Path | None = None,
    folds: Path | None = None,
    fold: str = "all",
    exp: Path | None = None,
    epochs: int | None = None,
    device: str = "auto",
    resume: bool = False,
    lexical_feats: Path | None = None,
) -> list[dict]:
    """Train the selected folds; done folds are skipped; returns per-fold {name, best_epoch, valid_* ...}.

    ``lexical_feats``: a ``--feat lexical`` dump whose word vectors go to a model with a lexical branch
    (``model.lexical_dim`` > 0, rlc_gca_lstm.md §3.4); required by such a config, refused by any other.
    """
    cfg, train_config = resolve_config(arch, train_config, epochs)
    system = SYSTEMS.get(cfg.arch, cfg.arch)
    data = check_input(Path(data or Path("data") / system), "data dir", "stage 1 (sertk prep)")
    folds = check_input(Path(folds or data / "folds.json"), "folds file", "stage 2 (sertk folds)")
    feats = check_input(
        Path(feats or Path("dump") / system / cfg.feat), "feature dir", "stage 3 (sertk feats)"
    )
    if not (feats / ".done").is_file():
        raise SertkError(f"{feats}: feature dump incomplete, no .done (run stage 3 (sertk feats) first)")
    feat_name = feature_info(feats)["feat"]
    if feat_name != cfg.feat:
        raise SertkError(f"{feats}: holds feature {feat_name}, but {train_config} wants feat {cfg.feat}")
    exp = Path(exp or Path("exp") / system).resolve()
    dev = resolve_device(device)
    # Validate the model and loss sections before any fold starts.
    resolved = model_config(cfg.arch, cfg.model)
    lexical_feats = check_lexical(resolved, train_config, lexical_feats)
    from_dict(LossConfig, cfg.loss, where=f"{train_config}: loss")
    corpus = read_data_dir(data)
    folds_data = read_folds(folds, corpus)
    selected = select_folds(folds_data, fold)

    merged = to_dict(cfg)
    if (exp / "config.yaml").is_file() and read_yaml(exp / "config.yaml") != merged:
        if any((exp / s["name"]).exists() for s in selected):
            raise SertkError(
                f"{exp / 'config.yaml'}: this exp dir was trained with another config; use another --exp"
            )
    exp.mkdir(parents=True, exist_ok=True)
    write_yaml(exp / "config.yaml", merged)
    write_json(
        exp / "experiment.json",
        {
            "system": system,
            "arch": cfg.arch,
            "data": str(data),
            "feats": str(feats),
            "folds": str(folds),
            "protocol": folds_data.get("protocol", cfg.protocol),
            "classes": corpus.classes,
            "synthetic": corpus.synthetic,
            "feat": cfg.feat,
            "paper": cfg.paper,
            "config": str(Path(train_config).resolve()),
            # Only for a lexical model, so an acoustic experiment.json is what it always was.
            **({} if lexical_feats is None else {"lexical_feats": str(lexical_feats)}),
        },
    )
    replay = {"train_config": Path(train_config).resolve(), "data": data, "feats": feats, "folds": folds}
    replay.update(
        {"fold": fold, "exp": exp, "epochs": epochs, "device": device, "lexical_feats": lexical_feats}
    )
    write_replay(exp, replay)

    summaries = []
    for spec in selected:
        fold_dir = exp / spec["name"]
        if (fold_dir / ".done").is_file():
            summary = json.loads((fold_dir / ".done").read_text())
            console.print(f"{spec['name']}: done already (best epoch {summary['best_epoch']}), skipped")
            summaries.append(summary)
            continue
        if fold_dir.exists() and any(fold_dir.iterdir()) and not resume:
            raise SertkError(
                f"{fold_dir}: an unfinished fold is there; pass --resume to continue it or delete it"
            )
        summaries.append(train_fold(cfg, corpus, spec, feats, fold_dir, dev, resume, lexical_feats))
    if summaries:
        ua = np.mean([s["valid_ua"] for s in summaries])
        console.print(f"{system}: {len(summaries)} fold(s) trained, mean valid UA {ua:.4f} -> {exp}")
    return summaries
