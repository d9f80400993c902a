"""The experiment config: one YAML per system, loaded into these dataclasses (unknown key = error).

The ``input`` section is ``sertk.inputs.config.InputConfig``: it belongs with the code that builds inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sertk.config import from_dict, read_yaml
from sertk.errors import SertkError
from sertk.inputs.config import InputConfig

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
    # best: best.pt = the epoch with the best select_metric on the validation part; last: the final epoch's
    # model (protocols without a validation part, e.g. attention_pooling_cnn.txt §3.1: the epoch-50 model).
    select: Literal["best", "last"] = "best"
    select_metric: Metric = "valid_wa"
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    seed: int = 0
    # Papers train in fp32; bf16 autocast runs on CPU and CUDA, fp16 (with loss scaling) on CUDA only.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # balanced: w_c = N / (C N_c) over the loss's samples (segments of a segment-trained model).
    class_weights: Literal["none", "balanced"] = "none"
    oversample: dict[str, float] = field(default_factory=dict)
    param_groups: list[ParamGroup] = field(default_factory=list)
    labels: Literal["hard", "soft"] = "hard"
    # Train a model's pretrained encoder too (ssl-pool with model.encoder): its own lr through a
    # param_groups entry with prefix "encoder."; runs on CPU (tiny checkpoints), meant for --device cuda.
    finetune: bool = False
    # torch.compile the model for training (the first batches of each new shape pay for compiling; worth it
    # on a GPU over many epochs, rarely on CPU); the checkpoints hold the plain model's weights either way.
    compile: bool = False

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
        if self.select == "last" and self.patience:
            raise ValueError("train.select last trains every epoch: set train.patience 0 (no early stopping)")

    @property
    def needs_validation(self) -> bool:
        """Whether a fold must have a validation part: to select or stop early on it."""
        return self.select == "best" or self.patience > 0


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


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Set dotted keys (``train.epochs``, ``input.specaugment.freq_masks``) in a config mapping.

    Only the path is created here; whether the key exists and the value fits is ``from_dict``'s check, so a
    misspelt override is the same one-line error as a misspelt YAML key.
    """
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise SertkError(f"{where}: --set {dotted}: {key} is not a section")
            node = child
        node[leaf] = value
    return data


def load_experiment_config(path: Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a system's YAML, then apply ``overrides`` (dotted keys: the CLI's --set, --epochs, --precision)."""
    data = apply_overrides(
        read_yaml(path), {k: v for k, v in (overrides or {}).items() if v is not None}, str(path)
    )
    return from_dict(ExperimentConfig, data, where=str(path))
