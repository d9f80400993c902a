"""A trained model and everything its inputs need, loaded once from a checkpoint or a package.

``sertk eval``, the attention plots, ``sertk package``, ``sertk infer`` and ``sertk export`` all go through
``TrainedModel``: arch + weights, the feature (name and config) it was trained on, the input config
(crop, segments, scaling, padding), the normalisation statistics and the class list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import sertk
from sertk.config import from_dict
from sertk.errors import SertkError
from sertk.inputs.batch import Normalizer
from sertk.inputs.config import InputConfig
from sertk.models import build_model

CHECKPOINT_KEYS = ("model", "arch", "model_config", "classes", "feat", "feat_config", "input", "input_dim")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as a plain dict (``weights_only=True``), with a one-line error when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise SertkError(f"{path}: checkpoint not found (run stage 5 (sertk train) first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, runtime) for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SertkError(f"{path}: cannot load checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(state, dict):
        raise SertkError(f"{path}: not a sertk checkpoint (a {type(state).__name__}, not a mapping)")
    return state


@dataclass
class TrainedModel:
    """One trained network with its front end: weights, feature config, input config, normalisation, classes."""

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

    @classmethod
    def from_checkpoint(cls, path: Path) -> TrainedModel:
        """The model saved by ``sertk train`` in ``best.pt``/``checkpoint.pt``; one-line errors for foreign files."""
        ckpt = load_checkpoint(path)
        missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
        if missing:
            raise SertkError(f"{path}: not a sertk checkpoint with model info (missing {', '.join(missing)})")
        try:
            return cls(
                arch=str(ckpt["arch"]),
                model_config=dict(ckpt["model_config"]),
                classes=[str(c) for c in ckpt["classes"]],
                feat=str(ckpt["feat"]),
                feat_config=dict(ckpt["feat_config"] or {}),
                input=from_dict(InputConfig, dict(ckpt["input"]), where=f"{path}: input"),
                input_dim=int(ckpt["input_dim"]),
                state=ckpt["model"],
                norm_mean=ckpt.get("norm_mean"),
                norm_std=ckpt.get("norm_std"),
                source=str(path),
            )
        except (TypeError, ValueError) as err:
            raise SertkError(f"{path}: malformed checkpoint ({err})") from None

    @property
    def lexical(self) -> bool:
        return bool(self.model_config.get("lexical_dim", 0))

    @property
    def encoder(self) -> dict[str, Any] | None:
        """The ssl feature config of a pretrained encoder the model runs itself (``model.encoder``), or None."""
        return self.model_config.get("encoder") or None

    @property
    def normalizer(self) -> Normalizer | None:
        return Normalizer.of(self.norm_mean, self.norm_std)

    def build(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The network with its trained weights, in eval mode on ``device``."""
        model = build_model(self.arch, self.model_config, self.input_dim, len(self.classes))
        try:
            model.load_state_dict(self.state)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[0]
            raise SertkError(f"{self.source}: weights do not fit arch {self.arch} ({reason})") from None
        return model.to(device).eval()
