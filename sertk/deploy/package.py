"""Model packages: one directory holding everything inference needs, loadable without unpickling objects.

Layout of a package directory::

    manifest.json   {"format", "sertk_version", "arch", "model_config", "classes", "feat", "feat_config",
                     "input", "input_dim", "normalized", "source"}
    weights.pt      {"model": state_dict, "norm_mean": (D,) or None, "norm_std": (D,) or None},
                    a plain dict of tensors read with ``torch.load(weights_only=True)``

An ensemble package (``sertk package EXP OUT``) is a directory of such packages, one per fold.
``load_models`` reads packages, ensembles, and also training outputs directly (a ``best.pt``, a fold dir,
an exp dir), so every deployment command accepts any of them as MODEL.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import sertk
from sertk.config import from_dict, to_dict
from sertk.errors import SertkError
from sertk.evaluate.inference import load_checkpoint
from sertk.models import build_model
from sertk.train.config import InputConfig
from sertk.utils import atomic_path, console

PACKAGE_FORMAT = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
CHECKPOINT = "best.pt"


@dataclass
class ModelPackage:
    """One trained model and its front end: arch + weights, feature config, normalisation, classes."""

    arch: str
    model_config: dict[str, Any]
    classes: list[str]
    feat: str
    feat_config: dict[str, Any]
    input: InputConfig
    input_dim: int
    state: dict[str, torch.Tensor]
    norm_mean: torch.Tensor | None
    norm_std: torch.Tensor | None
    source: str
    version: str = sertk.__version__

    def build(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The network with its trained weights, in eval mode on ``device``."""
        model = build_model(self.arch, self.model_config, self.input_dim, len(self.classes))
        try:
            model.load_state_dict(self.state)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[0]
            raise SertkError(f"{self.source}: weights do not fit arch {self.arch} ({reason})") from None
        return model.to(device).eval()

    def manifest(self) -> dict[str, Any]:
        return {
            "format": PACKAGE_FORMAT,
            "sertk_version": self.version,
            "arch": self.arch,
            "model_config": self.model_config,
            "classes": self.classes,
            "feat": self.feat,
            "feat_config": self.feat_config,
            "input": to_dict(self.input),
            "input_dim": self.input_dim,
            "normalized": self.norm_mean is not None,
            "source": self.source,
        }


def input_dim_of(feat: str, feat_config: dict) -> int:
    """Feature dimension D of a model: from the feature extractor its features came from."""
    from sertk.features import build_feature

    return build_feature(feat, feat_config).dim


def package_from_checkpoint(path: Path) -> ModelPackage:
    """A ModelPackage from a training checkpoint (``best.pt``), read with ``weights_only=True``."""
    ckpt = load_checkpoint(path)
    missing = [
        k
        for k in ("model", "arch", "model_config", "classes", "feat", "feat_config", "input")
        if k not in ckpt
    ]
    if missing:
        raise SertkError(f"{path}: not a sertk checkpoint with model info (missing {', '.join(missing)})")
    if dict(ckpt["model_config"]).get("lexical_dim", 0):
        raise SertkError(
            f"{path}: a model with a lexical branch; packaging, sertk infer and sertk export support only "
            "acoustic models"
        )
    feat_config = dict(ckpt["feat_config"] or {})
    return ModelPackage(
        arch=ckpt["arch"],
        model_config=dict(ckpt["model_config"]),
        classes=list(ckpt["classes"]),
        feat=ckpt["feat"],
        feat_config=feat_config,
        input=from_dict(InputConfig, dict(ckpt["input"]), where=f"{path}: input"),
        input_dim=input_dim_of(ckpt["feat"], feat_config),
        state=ckpt["model"],
        norm_mean=ckpt.get("norm_mean"),
        norm_std=ckpt.get("norm_std"),
        source=str(path),
        version=sertk.__version__,
    )


def read_package(path: Path) -> ModelPackage:
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
        return ModelPackage(
            arch=meta["arch"],
            model_config=meta["model_config"],
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


def write_package(package: ModelPackage, out: Path) -> Path:
    """Write ``package`` as a directory ``out`` (replacing an older package there), atomically."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / MANIFEST).write_text(json.dumps(package.manifest(), indent=2) + "\n")
        weights = {"model": package.state, "norm_mean": package.norm_mean, "norm_std": package.norm_std}
        torch.save(weights, tmp / WEIGHTS)
        _clear_old_package(out)
    return out


def _clear_old_package(out: Path) -> None:
    """Remove a previous package at ``out`` so the new one can be renamed onto it; never other data."""
    if not out.exists():
        return
    if is_package(out) or is_ensemble(out):
        shutil.rmtree(out)
    elif out.is_dir() and not any(out.iterdir()):
        os.rmdir(out)
    else:
        raise SertkError(f"{out}: exists and is not a sertk package; choose another output path")


def is_package(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def is_ensemble(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and any(is_package(p) for p in path.iterdir())


def _fold_checkpoints(exp: Path) -> list[Path]:
    return sorted(p / CHECKPOINT for p in Path(exp).iterdir() if (p / CHECKPOINT).is_file())


def load_models(path: Path) -> list[ModelPackage]:
    """The model(s) named by ``path``: a package, an ensemble of packages, a best.pt, a fold or an exp dir.

    A directory with several fold models gives all of them (an ensemble, sorted by name); they must share
    one class list.
    """
    path = Path(path)
    if not path.exists():
        raise SertkError(f"{path}: model not found (expected a package, a best.pt, a fold or an exp dir)")
    if path.is_file():
        packages = [package_from_checkpoint(path)]
    elif is_package(path):
        packages = [read_package(path)]
    elif (path / CHECKPOINT).is_file():
        packages = [package_from_checkpoint(path / CHECKPOINT)]
    elif is_ensemble(path):
        packages = [read_package(p) for p in sorted(path.iterdir()) if is_package(p)]
    elif _fold_checkpoints(path):
        packages = [package_from_checkpoint(p) for p in _fold_checkpoints(path)]
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
        out = Path(out)
        names = [
            Path(p.source).parent.name if p.source.endswith(CHECKPOINT) else Path(p.source).name
            for p in packages
        ]
        with atomic_path(out) as tmp:
            tmp.mkdir()
            for package, name in zip(packages, names, strict=True):
                write_package(package, tmp / name)
            _clear_old_package(out)
        written = [out / name for name in names]
    for package, path in zip(packages, written, strict=True):
        console.print(f"package: {package.arch} ({package.feat}, {len(package.classes)} classes) -> {path}")
    return written
