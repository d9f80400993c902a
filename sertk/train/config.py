"""The experiment config: one YAML per system, loaded into these dataclasses (unknown key = error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sertk.config import from_dict, read_yaml

METRICS = ("valid_wa", "valid_ua", "valid_ua_wa", "valid_loss")
Metric = Literal["valid_wa", "valid_ua", "valid_ua_wa", "valid_loss"]


@dataclass
class ParamGroup:
    """Parameters whose name starts with ``prefix`` get their own lr / L2 (cnn_blstm_vtlp.txt, layer-wise lr)."""

    prefix: str
    lr: float | None = None
    weight_decay: float | None = None


@dataclass
class TrainConfig:
    """Optimiser, schedule, batching, early stopping and label options of the training loop."""

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1.0e-4
    momentum: float = 0.9  # sgd momentum, or adam's beta1
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 100
    scheduler: Literal["none", "multistep"] = "none"
    milestones: list[int] = field(
        default_factory=list
    )  # epochs counted from 1: lr *= gamma from that epoch on
    gamma: float = 0.1
    patience: int = 10  # 0 = no early stopping
    early_stop_metric: Metric = "valid_wa"
    select_metric: Metric = "valid_wa"
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    seed: int = 0
    amp: bool = True  # only takes effect on CUDA
    class_weights: Literal["none", "balanced"] = "none"
    oversample: dict[str, float] = field(default_factory=dict)
    param_groups: list[ParamGroup] = field(default_factory=list)
    labels: Literal["hard", "soft"] = "hard"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("train.batch_size and train.epochs must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.patience < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("train.patience, train.grad_clip and train.weight_decay must be >= 0")
        if self.milestones != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ValueError(f"train.milestones must be increasing epochs >= 1, got {self.milestones}")
        if any(f <= 0 for f in self.oversample.values()):
            raise ValueError(f"train.oversample factors must be > 0, got {self.oversample}")


@dataclass
class InputConfig:
    """How utterances become model input: cropping, normalisation, fixed-length segments, noise."""

    max_frames: int = 0  # 0 = no limit
    crop: Literal["head", "random", "center"] = "head"
    normalize: Literal["none", "global", "global-scalar", "neutral"] = "none"
    segment_frames: int = 0  # 0 = whole utterances (attention_pooling_cnn.txt: 200 = 2 s)
    segment_shift_train: int = 100
    segment_shift_test: int = 40
    white_noise_std: float = 0.0  # on normalised training features (lstm_attention.txt: sigma^2 = 0.4)
    # VTLP of a linear-frequency spectrogram (cnn_blstm_vtlp.txt §2): "utterance" = one alpha per spectrogram
    # on train and validation (the paper's best), "epoch" = one alpha per epoch for all training rows only.
    vtlp: Literal["none", "utterance", "epoch"] = "none"
    vtlp_range: list[float] = field(default_factory=lambda: [0.9, 1.1])  # alpha ~ U(low, high)
    vtlp_boundary: float = 0.9  # f0 / f_max of Eq. 4
    tta: Literal["none", "vtlp"] = "none"  # sertk eval's default: vtlp = 11 copies, majority vote

    def __post_init__(self) -> None:
        if len(self.vtlp_range) != 2 or not 0 < self.vtlp_range[0] <= self.vtlp_range[1]:
            raise ValueError(
                f"input.vtlp_range must be [low, high] with 0 < low <= high, got {self.vtlp_range}"
            )
        if not 0 < self.vtlp_boundary < 1 or self.vtlp_boundary * max(self.vtlp_range[1], 1.1) >= 1:
            # alpha * f0 must stay below f_max (for training and the TTA copies up to 1.1) or Eq. 4 folds over.
            raise ValueError(
                f"input.vtlp_boundary must be in (0, 1) with boundary * max(alpha) < 1, got {self.vtlp_boundary}"
            )
        if self.max_frames < 0 or self.segment_frames < 0 or self.white_noise_std < 0:
            raise ValueError("input.max_frames, input.segment_frames and input.white_noise_std must be >= 0")
        if self.segment_frames and (self.segment_shift_train < 1 or self.segment_shift_test < 1):
            raise ValueError("input.segment_shift_train and input.segment_shift_test must be >= 1")


@dataclass
class ExperimentConfig:
    """One system: arch and its model config, feature name, loss, training and input options."""

    arch: str = ""
    feat: str = ""
    protocol: str = ""  # the paper's protocol, informative: folds.json decides what is run
    paper: dict[str, float] = field(default_factory=dict)  # the paper's reported numbers
    model: dict[str, Any] = field(default_factory=dict)  # validated by sertk.models.build_model
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "ce"})  # validated by sertk.losses
    train: TrainConfig = field(default_factory=TrainConfig)
    input: InputConfig = field(default_factory=InputConfig)

    def __post_init__(self) -> None:
        if not self.arch:
            raise ValueError("arch is missing")
        if not self.feat:
            raise ValueError("feat is missing")


def load_experiment_config(path: Path, epochs: int | None = None) -> ExperimentConfig:
    """Read a system's YAML; ``epochs`` (the CLI's --epochs) overrides ``train.epochs``."""
    data = read_yaml(path)
    train = data.get("train") or {}
    if epochs is not None and isinstance(train, dict):
        data["train"] = {**train, "epochs": epochs}
    return from_dict(ExperimentConfig, data, where=str(path))
