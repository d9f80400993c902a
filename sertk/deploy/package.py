"""Model packages: one directory holding everything inference needs, loadable without unpickling objects.

Layout of a package directory::

    manifest.json   {"format", "sertk_version", "arch", "model_config", "classes", "feat", "feat_config",
                     "input", "input_dim", "normalized", "source"}
    weights.pt      {"model": state_dict, "norm_mean": (D,) or None, "norm_std": (D,) or None},
                    a plain dict of tensors read with ``torch.load(weights_only=True)``

An ensemble package (``sertk package EXP OUT``) is a directory of such packages, one per fold, plus
``ensemble.json`` (``{"format", "members": [fold names]}``), which marks the directory as sertk's to replace.

A model that runs a pretrained encoder (ssl-pool with ``model.encoder``) gets a copy of the encoder's
checkpoint files (those its pinned sha256 covers) in ``encoder-<sha256[:12]>/`` beside manifest.json, once
per ``sertk package`` output (the folds of an ensemble share one copy at its top), and its manifest names
that copy by a relative path: a package stays self-contained and movable, at the price of the
checkpoint's size (~0.4 GB base, ~1.2 GB large). A frozen encoder's weights are only in that copy; a
fine-tuned one's are also in weights.pt, and the copy gives the architecture.
``load_models`` reads packages, ensembles, and also training outputs directly (a ``best.pt``, a fold dir,
an exp dir), so every deployment command accepts any of them as MODEL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from sertk.config import from_dict, to_dict
from sertk.errors import SertkError
from sertk.features.ssl import SslConfig, checkpoint_files
from sertk.inputs.config import InputConfig
from sertk.models.trained import TrainedModel
from sertk.utils import console, fresh_tmp_dir, publish_dir, read_json, write_json

PACKAGE_FORMAT = 1
MANIFEST = "manifest.json"
ENSEMBLE = "ensemble.json"
WEIGHTS = "weights.pt"
CHECKPOINT = "best.pt"
ENCODER_PREFIX = "encoder-"


def manifest(model: TrainedModel) -> dict[str, Any]:
    """manifest.json of a package: everything but the tensors."""
    return {
        "format": PACKAGE_FORMAT,
        "sertk_version": model.version,
        "arch": model.arch,
        "model_config": model.model_config,
        "classes": model.classes,
        "feat": model.feat,
        "feat_config": model.feat_config,
        "input": to_dict(model.input),
        "input_dim": model.input_dim,
        "normalized": model.norm_mean is not None,
        "source": model.source,
    }


def from_checkpoint(path: Path) -> TrainedModel:
    """A training checkpoint as a deployable model; lexical models are refused (no transcripts at inference)."""
    model = TrainedModel.from_checkpoint(path)
    if model.lexical:
        raise SertkError(
            f"{path}: a model with a lexical branch; packaging, sertk infer and sertk export support only "
            "acoustic models"
        )
    return model


def read_package(path: Path) -> TrainedModel:
    """Load one package directory; a missing, foreign or damaged file is a one-line SertkError."""
    manifest_path = Path(path) / MANIFEST
    try:
        meta = json.loads(manifest_path.read_text())
    except OSError as err:
        raise SertkError(f"{manifest_path}: cannot read ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise SertkError(f"{manifest_path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(meta, dict) or meta.get("format") != PACKAGE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise SertkError(f"{manifest_path}: package format {found!r}, this sertk reads {PACKAGE_FORMAT}")
    weights_path = Path(path) / WEIGHTS
    if not weights_path.is_file():
        raise SertkError(f"{weights_path}: weights file missing")
    try:
        weights = torch.load(weights_path, map_location="cpu", weights_only=True)
        return TrainedModel(
            arch=meta["arch"],
            model_config=_located_encoder(meta["model_config"], Path(path)),
            classes=list(meta["classes"]),
            feat=meta["feat"],
            feat_config=meta["feat_config"],
            input=from_dict(InputConfig, meta["input"], where=f"{manifest_path}: input"),
            input_dim=int(meta["input_dim"]),
            state=weights["model"],
            norm_mean=weights["norm_mean"],
            norm_std=weights["norm_std"],
            source=str(path),
            version=meta["sertk_version"],
        )
    except KeyError as err:
        raise SertkError(f"{path}: package lacks {err.args[0]!r}") from None
    except Exception as err:  # torch raises many types (pickle, zip, runtime) for a damaged or foreign file
        raise SertkError(f"{weights_path}: cannot load weights ({type(err).__name__}: {err})") from None


def _located_encoder(model_config: dict, package_dir: Path) -> dict:
    """The model config with a packaged encoder's relative checkpoint path made absolute."""
    encoder = model_config.get("encoder")
    if not encoder or Path(encoder["checkpoint"]).is_absolute():
        return model_config
    return {
        **model_config,
        "encoder": {**encoder, "checkpoint": str((package_dir / encoder["checkpoint"]).resolve())},
    }


def copy_encoder(package: TrainedModel, root: Path, member: Path) -> TrainedModel:
    """Copy the encoder checkpoint of ``package`` into ``root/encoder-<sha>/`` (once) and point the model
    config of the package written at ``member`` to it by a relative path; unchanged without an encoder."""
    encoder = package.encoder
    if encoder is None:
        return package
    cfg = from_dict(SslConfig, encoder, where=f"{package.source}: model.encoder")
    files = checkpoint_files(cfg)
    folder = root / f"{ENCODER_PREFIX}{cfg.checkpoint_sha256[:12]}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, folder / file.name)
    # A weight file is named by the file, a Hugging Face dir by the folder (its files keep their names,
    # so the copy has the pinned sha256).
    target = folder / files[0].name if cfg.torchaudio_builder else folder
    relative = Path(os.path.relpath(target, member))
    config = {**package.model_config, "encoder": {**encoder, "checkpoint": relative.as_posix()}}
    return dataclasses.replace(package, model_config=config)


def owned_by_package(out: Path):
    """What ``sertk package`` may replace at ``out``: a package's files and encoder copy, or an ensemble's
    listed members."""
    listed = set(read_json(out / ENSEMBLE).get("members", [])) if (out / ENSEMBLE).is_file() else set()

    def owned(entry: Path) -> bool:
        if entry.name in (MANIFEST, WEIGHTS, ENSEMBLE):
            return True
        if entry.name.startswith(ENCODER_PREFIX) and entry.is_dir():
            return True
        return entry.name in listed and is_package(entry)

    return owned


def write_package(package: TrainedModel, out: Path, root: Path | None = None) -> Path:
    """Write ``package`` as the directory ``out``: a temp dir renamed into place, replacing only a package.

    ``root``: where an encoder copy goes (an ensemble's top dir, already a temp dir); default inside ``out``.
    """
    out = Path(out)
    tmp = fresh_tmp_dir(out)
    try:
        # Relative paths are computed at the final location: tmp is renamed onto out.
        package = copy_encoder(package, tmp if root is None else root, tmp if root is None else out)
        (tmp / MANIFEST).write_text(json.dumps(manifest(package), indent=2) + "\n")
        weights = {"model": package.state, "norm_mean": package.norm_mean, "norm_std": package.norm_std}
        torch.save(weights, tmp / WEIGHTS)
        publish_dir(tmp, out, owned_by_package(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_ensemble(packages: list[TrainedModel], names: list[str], out: Path) -> list[Path]:
    """Write one package per fold under ``out`` plus ``ensemble.json`` listing them, as one rename.

    An existing ``out`` is replaced only when it is an ensemble sertk wrote, holding nothing but the
    packages its ensemble.json lists; anything else there is the user's and nothing is touched.
    """
    out = Path(out)
    owned = owned_by_package(out)
    tmp = fresh_tmp_dir(out)
    try:
        for package, name in zip(packages, names, strict=True):
            write_package(package, tmp / name, root=tmp)
        write_json(tmp / ENSEMBLE, {"format": PACKAGE_FORMAT, "members": names})
        publish_dir(tmp, out, owned)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in names]


def is_package(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def is_ensemble(path: Path) -> bool:
    return (Path(path) / ENSEMBLE).is_file()


def _fold_checkpoints(exp: Path) -> list[Path]:
    return sorted(p / CHECKPOINT for p in Path(exp).iterdir() if (p / CHECKPOINT).is_file())


def load_models(path: Path) -> list[TrainedModel]:
    """The model(s) named by ``path``: a package, an ensemble of packages, a best.pt, a fold or an exp dir.

    A directory with several fold models gives all of them (an ensemble, sorted by name); they must share
    one class list.
    """
    path = Path(path)
    if not path.exists():
        raise SertkError(f"{path}: model not found (expected a package, a best.pt, a fold or an exp dir)")
    if path.is_file():
        packages = [from_checkpoint(path)]
    elif is_package(path):
        packages = [read_package(path)]
    elif (path / CHECKPOINT).is_file():
        packages = [from_checkpoint(path / CHECKPOINT)]
    elif is_ensemble(path):
        members = read_json(path / ENSEMBLE).get("members", [])
        packages = [read_package(path / name) for name in members]
    elif _fold_checkpoints(path):
        packages = [from_checkpoint(p) for p in _fold_checkpoints(path)]
    else:
        raise SertkError(f"{path}: holds no model (no manifest.json, best.pt, or fold dirs with either)")
    classes = packages[0].classes
    for package in packages[1:]:
        if package.classes != classes:
            raise SertkError(
                f"{package.source}: classes {package.classes} differ from {packages[0].source}'s {classes}"
            )
    return packages


def make_package(model: Path, out: Path) -> list[Path]:
    """``sertk package``: a fold dir / best.pt -> one package at ``out``; an exp dir -> ``out/<fold>/`` each."""
    packages = load_models(model)
    if len(packages) == 1:
        written = [write_package(packages[0], out)]
    else:
        names = [
            Path(p.source).parent.name if p.source.endswith(CHECKPOINT) else Path(p.source).name
            for p in packages
        ]
        written = write_ensemble(packages, names, out)
    for package, path in zip(packages, written, strict=True):
        console.print(f"package: {package.arch} ({package.feat}, {len(package.classes)} classes) -> {path}")
    return written
