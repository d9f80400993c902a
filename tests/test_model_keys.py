"""Every model Config key changes the model it builds, and every dropout sits where its docstring says.

For each arch and each key of its ``Config`` a second value must change the parameter shapes or, with the
same weights, the logits: a key the model ignored would build the same model. The table must name every
key, so a new key cannot go untested.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from sertk.models import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_thread")

# arch -> (tiny base config, input dim)
BASES = {
    "crnn-att": ({"conv_channels": [8, 8, 6, 4], "lstm_cells": 5, "dropout": 0.0}, 12),
    "attn-pool": ({"channels": [6, 6, 8, 8], "first_layer": [[4, 2, 3], [2, 4, 3]]}, 16),
    "cnn-blstm": (
        # 5 cells: the BiLSTM's 2 x 5 outputs differ from the 4 channels x 3 bins it reads.
        {"conv_channels": [4, 4, 4], "freq_strides": [2, 2, 1], "time_strides": [2, 1, 1], "lstm_cells": 5},
        12,
    ),
    "lstm-attn": ({"dense_units": 8, "lstm_cells": 5, "yang_units": 6, "attention_cells": 4}, 3),
    "rlc": (
        dict(
            first_conv=[4, 4],
            groups=[[3, 8], [3, 8]],
            blocks=1,
            heads=2,
            lstm_units=6,
            iterations=2,
            dense=[5],
        ),
        3,
    ),
    "ssl-pool": ({"num_layers": 3, "projection_dim": 6}, 12),
}

# (arch, key, other value, extra base options the key needs). "train" marks keys seen only in training.
CHANGES = [
    ("crnn-att", "conv_channels", [8, 8, 6, 6], {}),
    ("crnn-att", "kernel", 5, {}),
    ("crnn-att", "pool", 3, {}),
    ("crnn-att", "pool_last", True, {}),
    ("crnn-att", "dropout", 0.5, {}),
    ("crnn-att", "lstm_cells", 7, {}),
    ("crnn-att", "pooling", "mean", {}),
    ("crnn-att", "pooling", "attention-mean-std", {}),
    ("crnn-att", "head", "cosine", {}),
    ("crnn-att", "head_scale", 10.0, {"head": "cosine"}),
    ("attn-pool", "first_layer", [[2, 4, 3], [4, 2, 3]], {}),
    ("attn-pool", "channels", [6, 6, 8], {}),
    ("attn-pool", "pool_after", [0], {}),
    ("attn-pool", "pool_after", [2, 3], {}),
    ("attn-pool", "pooling", "gap", {}),
    ("attn-pool", "pooling", "bilinear", {"pooling": "gap"}),
    ("attn-pool", "head", "cosine", {"pooling": "gap"}),
    ("attn-pool", "head_scale", 10.0, {"pooling": "gap", "head": "cosine"}),
    ("cnn-blstm", "conv_channels", [4, 4, 6], {}),
    ("cnn-blstm", "kernel", 5, {}),
    ("cnn-blstm", "freq_strides", [2, 1, 1], {}),
    ("cnn-blstm", "time_strides", [1, 1, 2], {}),
    ("cnn-blstm", "dropout", 0.5, {}),
    ("cnn-blstm", "lstm_layers", 2, {}),
    ("cnn-blstm", "lstm_cells", 6, {}),
    ("cnn-blstm", "recurrent_norm", "layer-batch", {}),
    ("cnn-blstm", "head", "cosine", {}),
    ("cnn-blstm", "head_scale", 10.0, {"head": "cosine"}),
    ("lstm-attn", "dense_layers", 2, {}),
    ("lstm-attn", "dense_units", 9, {}),
    ("lstm-attn", "lstm_cells", 6, {}),
    ("lstm-attn", "pooling", "mean", {}),
    ("lstm-attn", "pooling", "zhou", {"pooling": "mean"}),
    ("lstm-attn", "pooling", "yang", {"pooling": "zhou"}),
    ("lstm-attn", "yang_units", 7, {"pooling": "yang"}),
    ("lstm-attn", "attention_cells", 5, {}),
    ("lstm-attn", "normalize_sigmoid", True, {}),
    ("lstm-attn", "dropout", 0.5, {}),
    ("lstm-attn", "head", "cosine", {}),
    ("lstm-attn", "head_scale", 10.0, {"head": "cosine"}),
    ("rlc", "residual_cnn", False, {"heads": 0}),
    ("rlc", "first_conv", [6, 4], {}),
    ("rlc", "groups", [[5, 8], [3, 8]], {}),
    ("rlc", "blocks", 2, {}),
    ("rlc", "stride", 1, {}),
    ("rlc", "heads", 4, {}),  # same parameters (4C² + 4C whatever r), other attention
    ("rlc", "heads", 0, {}),
    ("rlc", "dropout", 0.2, {}),
    ("rlc", "recurrent", "lstm", {}),
    ("rlc", "lstm_units", 7, {}),
    ("rlc", "lstm_layers", 3, {"recurrent": "lstm"}),
    ("rlc", "iterations", 3, {}),
    ("rlc", "dense", [8, 8], {}),
    ("rlc", "head", "cosine", {}),
    ("rlc", "head_scale", 10.0, {"head": "cosine"}),
    ("rlc", "lexical_dim", 4, {}),
    ("rlc", "lexical_cells", 3, {"lexical_dim": 4}),
    ("ssl-pool", "num_layers", 2, {}),
    ("ssl-pool", "layer_norm", True, {}),
    ("ssl-pool", "projection_dim", 7, {}),
    ("ssl-pool", "pooling", "mean-std", {}),
    ("ssl-pool", "pooling", "attention", {}),
    ("ssl-pool", "dropout", 0.5, {}),
    ("ssl-pool", "head", "cosine", {}),
    ("ssl-pool", "head_scale", 10.0, {"head": "cosine"}),
    ("ssl-pool", "use_layers", [0, 2], {}),
    ("ssl-pool", "activation", "relu", {}),
]
# Keys whose change needs more than a config: model.encoder builds an SSL encoder from a checkpoint file,
# tested in tests/test_ssl_onthefly.py (on the fly equals the dumped layers; frozen vs fine-tuned).
ELSEWHERE = {("ssl-pool", "encoder")}


def test_every_config_key_has_a_change():
    for arch, cls in MODELS.items():
        keys = {f.name for f in dataclasses.fields(cls.Config)} - {k for a, k in ELSEWHERE if a == arch}
        assert keys == {key for a, key, _, _ in CHANGES if a == arch}, arch


def _inputs(arch: str, dim: int, lexical_dim: int) -> tuple[tuple, dict]:
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 40, dim, generator=gen)
    lengths = torch.tensor([40, 29, 13])
    words = {}
    if lexical_dim:
        words = {
            "words": torch.randn(3, 5, lexical_dim, generator=gen),
            "word_lengths": torch.tensor([5, 2, 4]),
        }
    return (feats, lengths), words


def _logits(model: nn.Module, args: tuple, words: dict, train: bool) -> torch.Tensor:
    model.train(train)
    torch.manual_seed(7)  # the same dropout draws for both models
    with torch.no_grad():
        return model(*args, **words)


@pytest.mark.parametrize(
    ("arch", "key", "value", "needs"), CHANGES, ids=[f"{a}-{k}={v}" for a, k, v, _ in CHANGES]
)
def test_config_key_changes_the_model(arch, key, value, needs):
    base, dim = BASES[arch]
    base = {**base, **needs}
    torch.manual_seed(0)
    model = build_model(arch, base, dim, 4)
    torch.manual_seed(0)
    changed = build_model(arch, {**base, key: value}, dim, 4)
    assert getattr(changed.cfg, key) == value and getattr(model.cfg, key) != value
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if {k: v.shape for k, v in changed.state_dict().items()} != shapes:
        return  # a different architecture
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():  # sharper self-attention: at init its softmax is nearly uniform for any head count
        for attention in [
            m for m in [*model.modules(), *changed.modules()] if isinstance(m, nn.MultiheadAttention)
        ]:
            attention.in_proj_weight.mul_(8.0)
    args, words = _inputs(arch, dim, getattr(model.cfg, "lexical_dim", 0))
    train = key == "dropout"  # dropout only acts in training
    before, after = _logits(model, args, words, train), _logits(changed, args, words, train)
    # Well above float noise; an ignored key gives bit-identical logits (same weights, inputs, dropout draws).
    assert (before - after).abs().max() > 1e-5, f"{arch}: {key} = {value} changed nothing"


def _dropout_calls(model: nn.Module, *args, **kwargs) -> dict[str, int]:
    """How often each nn.Dropout module of ``model`` runs in one training forward pass."""
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            calls[name] = 0
            handles.append(
                module.register_forward_hook(
                    lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1)
                )
            )
    model.train()
    model(*args, **kwargs)
    for handle in handles:
        handle.remove()
    return calls


def test_dropout_placement():
    args = (torch.randn(2, 40, 12), torch.tensor([40, 21]))
    # crnn-att (§3.1): every conv sub-module ends with dropout; none after the BLSTM or the pooling.
    crnn = build_model("crnn-att", {"conv_channels": [4, 4, 4], "lstm_cells": 3, "dropout": 0.3}, 12, 4)
    assert _dropout_calls(crnn, *args) == {f"blocks.{i}.dropout": 1 for i in range(3)}
    assert all(m.p == 0.3 for m in crnn.modules() if isinstance(m, nn.Dropout))
    # cnn-blstm: one dropout module after each of the 3 convs and before the dense layer.
    cnn = build_model("cnn-blstm", BASES["cnn-blstm"][0] | {"dropout": 0.3}, 12, 4)
    assert _dropout_calls(cnn, *args) == {"dropout": 3 + 1} and cnn.dropout.p == 0.3
    # lstm-attn (§3): after each dense layer and on the pooled vector, never inside the attention.
    lstm = build_model("lstm-attn", BASES["lstm-attn"][0] | {"dropout": 0.3}, 12, 4)
    assert _dropout_calls(lstm, *args) == {"dense.2": 1, "dense.5": 1, "dense.8": 1, "dropout": 1}
    # rlc: after group 1's conv, after every residual block and after every hidden dense layer.
    rlc = build_model("rlc", BASES["rlc"][0] | {"dense": [8, 8], "dropout": 0.3}, 12, 4)
    expected = {
        "rcn.0.dropout": 1,
        "rcn.1.dropout": 1,
        "rcn.2.dropout": 1,
        "classifier.2": 1,
        "classifier.5": 1,
    }
    assert _dropout_calls(rlc, *args) == expected
    assert all(m.p == 0.3 for m in rlc.modules() if isinstance(m, nn.Dropout))


def test_lstm_attention_weights_see_no_dropout():
    model = build_model("lstm-attn", BASES["lstm-attn"][0] | {"dropout": 0.9}, 3, 4).train()
    frames, lengths = torch.randn(2, 9, 10), torch.tensor([9, 5])
    with torch.no_grad():
        torch.testing.assert_close(model.attend(frames, lengths), model.attend(frames, lengths))


@pytest.mark.parametrize(
    ("arch", "key", "value", "needs"), CHANGES, ids=[f"{a}-{k}={v}" for a, k, v, _ in CHANGES]
)
def test_every_parameter_reaches_the_logits(arch, key, value, needs):
    # A layer that is built but skipped (or whose output is dropped) gets no gradient. Eval mode: dropout
    # could silence the few live units of a tiny model.
    base, dim = BASES[arch]
    torch.manual_seed(0)
    model = build_model(arch, {**base, **needs, key: value}, dim, 4).double().eval()
    args, words = _inputs(arch, dim, getattr(model.cfg, "lexical_dim", 0))
    args = (args[0].double(), args[1])
    words = {k: v.double() if v.is_floating_point() else v for k, v in words.items()}
    model(*args, **words).square().sum().backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
            assert torch.isfinite(param.grad).all(), name
