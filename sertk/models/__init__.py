"""Model registry: arch name -> class, arch -> canonical system, and building a model from its config.

Every model has a ``Config`` dataclass (with ``head`` and ``head_scale``), is built as
``cls(cfg, input_dim, num_classes)`` and maps ``(feats (B, T, D), lengths (B,))`` to logits ``(B, C)``,
masking padded frames itself. Optional hooks, for models whose config depends on their input: a classmethod
``fit_to_features(cfg, feat, feat_config) -> cfg`` (values read off the feature dump, checked before
anything trains), a staticmethod ``input_digests(cfg) -> {name: digest}`` (files the model reads when built,
e.g. a pretrained encoder, which become inputs of the experiment's provenance), a ``cfg`` attribute on the
built model when building resolves the config further, and ``set_finetune(bool)`` (``train.finetune``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sertk.config import from_dict
from sertk.errors import SertkError
from sertk.models.attn_pool import AttnPool
from sertk.models.cnn_blstm import CnnBlstm
from sertk.models.crnn_att import CrnnAtt
from sertk.models.lstm_attn import LstmAttn
from sertk.models.rlc import Rlc
from sertk.models.ssl_pool import SslPool

MODELS: dict[str, type[nn.Module]] = {
    "crnn-att": CrnnAtt,
    "attn-pool": AttnPool,
    "cnn-blstm": CnnBlstm,
    "lstm-attn": LstmAttn,
    "rlc": Rlc,
    "ssl-pool": SslPool,
}

SYSTEMS: dict[str, str] = {
    "crnn-att": "crnn_discriminative",
    "attn-pool": "attention_pooling_cnn",
    "cnn-blstm": "cnn_blstm_vtlp",
    "lstm-attn": "lstm_attention",
    "rlc": "rlc_gca_lstm",
    "ssl-pool": "ssl",  # egs/iemocap/run_ssl.sh (SUPERB ER downstream)
}


def _model_class(arch: str) -> type[nn.Module]:
    if arch not in MODELS:
        raise SertkError(f"unknown arch {arch!r} (known: {', '.join(MODELS)})")
    return MODELS[arch]


def model_config(arch: str, config: dict | Any | None) -> Any:
    """The arch's Config instance from a dict (unknown keys are errors), an instance, or None (defaults)."""
    config_cls = _model_class(arch).Config
    if isinstance(config, config_cls):
        return config
    if config is None or isinstance(config, dict):
        return from_dict(config_cls, config or {}, where="model")
    raise SertkError(f"model: expected a mapping of {arch} options, got {type(config).__name__}")


def build_model(arch: str, config: dict | Any | None, input_dim: int, num_classes: int) -> nn.Module:
    """Build arch ``arch`` for ``input_dim`` features per frame and ``num_classes`` classes."""
    return _model_class(arch)(model_config(arch, config), input_dim, num_classes)


def fit_model_config(arch: str, config: Any, feat: str, feat_config: dict) -> Any:
    """The arch's config fitted to the feature dump it trains on (``fit_to_features``; unchanged without one)."""
    fit = getattr(_model_class(arch), "fit_to_features", None)
    return config if fit is None else fit(config, feat, feat_config)


def model_input_digests(arch: str, config: Any) -> dict[str, str]:
    """Digests of the files the arch reads when it is built with ``config`` (``input_digests``), or {}."""
    digests = getattr(_model_class(arch), "input_digests", None)
    return {} if digests is None else digests(config)


def built_config(model: nn.Module, config: Any) -> Any:
    """The config a built model resolved for itself (its ``cfg``: e.g. an encoder's layers and sha256)."""
    resolved = getattr(model, "cfg", config)
    return resolved if isinstance(resolved, type(config)) else config


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
