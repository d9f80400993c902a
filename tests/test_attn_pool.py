"""attn-pool: Eq. 9/10 by hand, GAP and bilinear values, gradients, padding invariance, configs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sertk.errors import SertkError
from sertk.models import MODELS, SYSTEMS, build_model, count_parameters
from sertk.models.attn_pool import AttnPool, attention_pool, bilinear_pool, global_average_pool
from sertk.train.config import load_experiment_config

CONF = Path(__file__).resolve().parents[1] / "egs" / "iemocap" / "conf"


def small_model(pooling: str, **overrides) -> AttnPool:
    torch.manual_seed(0)
    cfg = AttnPool.Config(pooling=pooling, channels=[6, 6, 8, 8], **overrides)
    return AttnPool(cfg, input_dim=24, num_classes=3)


def test_attention_pooling_equals_eq9_by_hand():
    rng = np.random.default_rng(0)
    channels, classes, height, width = 5, 2, 3, 2
    x = rng.normal(size=(height, width, channels))
    a = rng.normal(size=(channels, classes))
    bias = rng.normal(size=classes)
    b = rng.normal(size=channels)
    top = nn.Conv2d(channels, classes, 1)
    bottom = nn.Conv2d(channels, 1, 1, bias=False)
    with torch.no_grad():
        top.weight.copy_(torch.tensor(a.T).reshape(classes, channels, 1, 1))
        top.bias.copy_(torch.tensor(bias))
        bottom.weight.copy_(torch.tensor(b).reshape(1, channels, 1, 1))
    image = torch.tensor(x, dtype=torch.float32).permute(2, 0, 1)[None]
    for valid_width in (2, 1):
        scores = attention_pool(top(image), bottom(image), torch.tensor([valid_width]))[0].detach().numpy()
        # Eq. 9 with the bottom-up map softmaxed over the valid positions: score(k) = (X a_k)^T softmax(X b).
        positions = [(h, w) for h in range(height) for w in range(valid_width)]
        bottom_up = [sum(x[h, w, c] * b[c] for c in range(channels)) for h, w in positions]
        total = sum(math.exp(v) for v in bottom_up)
        for k in range(classes):
            expected = 0.0
            for (h, w), logit in zip(positions, bottom_up, strict=True):
                top_down = sum(x[h, w, c] * a[c, k] for c in range(channels)) + bias[k]
                expected += top_down * math.exp(logit) / total
            assert scores[k] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_gap_hand_values_ignore_padding():
    x = torch.tensor([[[[1.0, 2.0, 50.0], [3.0, 6.0, 50.0]], [[0.0, 4.0, -9.0], [8.0, 0.0, -9.0]]]])
    torch.testing.assert_close(global_average_pool(x, torch.tensor([2])), torch.tensor([[3.0, 3.0]]))


def test_bilinear_hand_values_ignore_padding():
    # Two valid positions with 2-channel features (1, 2) and (3, 0); the third position is padding.
    x = torch.tensor([[[[1.0, 3.0, 100.0]], [[2.0, 0.0, 100.0]]]])
    # mean of outer products [[1, 2], [2, 4]] and [[9, 0], [0, 0]] = [[5, 1], [1, 2]];
    # signed sqrt [√5, 1, 1, √2]; its l2 norm is sqrt(5 + 1 + 1 + 2) = 3.
    expected = torch.tensor([[math.sqrt(5) / 3, 1 / 3, 1 / 3, math.sqrt(2) / 3]])
    torch.testing.assert_close(bilinear_pool(x, torch.tensor([2])), expected)


@pytest.mark.parametrize(("pooling", "head_in"), [("gap", 8), ("bilinear", 64), ("attention", None)])
def test_output_shapes(pooling, head_in):
    model = small_model(pooling)
    logits = model(torch.randn(2, 40, 24), torch.tensor([40, 40]))
    assert logits.shape == (2, 3)
    if head_in is None:
        assert not hasattr(model, "head") and model.top_down.out_channels == 3
    else:
        assert model.head.in_features == head_in


def test_gradients_reach_both_attention_maps_and_both_first_layer_groups():
    model = small_model("attention")
    model.train()
    logits = model(torch.randn(3, 40, 24), torch.tensor([40, 31, 17]))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    for param in [model.top_down.weight, model.bottom_up.weight] + [g[1].weight for g in model.first_layer]:
        assert param.grad is not None and param.grad.abs().sum() > 0
    # Padded columns are exact zeros before batch norm; their statistics must not produce NaN gradients.
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("pooling", ["gap", "bilinear", "attention"])
def test_padding_does_not_change_eval_output(pooling):
    model = small_model(pooling).eval()
    feats = torch.randn(2, 40, 24)
    feats[1, 27:] = 5.0  # garbage in the padding (odd length: exercises the ceil pooling)
    lengths = torch.tensor([40, 27])
    batch = model(feats, lengths)
    alone = model(feats[1:, :27], torch.tensor([27]))
    torch.testing.assert_close(batch[1], alone[0], rtol=1e-4, atol=1e-5)
    feats[1, 27:] = -3.0
    torch.testing.assert_close(model(feats, lengths), batch, rtol=1e-4, atol=1e-5)


def test_lengths_past_the_width_or_zero_are_clamped_to_one_and_t():
    """A length beyond the segment counts as the segment and a length 0 as one frame: no NaN, no over-count."""
    model = small_model("gap").eval()
    feats = torch.randn(2, 12, 24)
    with torch.no_grad():
        out = model(feats, torch.tensor([15, 0]))
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, model(feats, torch.tensor([12, 1])), rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["gap", "attention"])
def test_inference_path_gives_the_layer_by_layer_eval_outputs(pooling):
    """Full segments without autograd: batch norm folded into the convs, ReLU after pooling; same logits."""
    model = small_model(pooling, pool_after=[0, 2]).double()
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2.0)
            norm.weight.normal_(), norm.bias.normal_()
    model.eval()
    feats, lengths = torch.randn(3, 41, 24, dtype=torch.float64), torch.full((3,), 41)
    reference = model(feats, lengths)  # autograd on: the path training takes
    with torch.inference_mode():
        fast = model(feats, lengths)
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-10, atol=1e-10)


def test_padding_does_not_change_training_output_or_batch_statistics():
    # Widening the batch adds padded steps to every row; batch-norm statistics must not see them.
    feats = torch.randn(2, 40, 24)
    wider = torch.cat([feats, torch.full((2, 8, 24), 7.0)], dim=1)
    lengths = torch.tensor([40, 23])
    outputs, means = [], []
    for batch in (feats, wider):
        model = small_model("attention").train()
        outputs.append(model(batch, lengths))
        means.append(model.norms[0].running_mean.clone())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(means[0], means[1])


def test_attention_rejects_cosine_head_but_gap_accepts_it():
    with pytest.raises(SertkError, match="model.head"):
        small_model("attention", head="cosine")
    model = small_model("gap", head="cosine")
    assert model(torch.randn(1, 16, 24), torch.tensor([16])).abs().max() <= 30.0 + 1e-4


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"pooling": "max"}, "model.pooling"),
        ({"pool_after": [4]}, "model.pool_after"),
        ({"first_layer": [[10, 2]]}, "model.first_layer"),
    ],
)
def test_bad_config_is_one_line_error(config, key):
    with pytest.raises(SertkError, match=key):
        build_model("attn-pool", config, 400, 4)


def test_registry_names_the_canonical_system():
    assert MODELS["attn-pool"] is AttnPool and SYSTEMS["attn-pool"] == "attention_pooling_cnn"
    assert os.path.realpath(CONF / "attention_pooling_cnn.yaml") == str(
        CONF / "attention_pooling_cnn" / "attention.yaml"
    )


@pytest.mark.parametrize(
    ("name", "pooling", "params"),
    [("gap", "gap", 93_252), ("bilinear", "bilinear", 118_532), ("attention", "attention", 93_332)],
)
def test_table1_configs_build_and_run(name, pooling, params):
    cfg = load_experiment_config(CONF / "attention_pooling_cnn" / f"{name}.yaml")
    assert cfg.arch == "attn-pool" and cfg.feat == "spec-li2018" and cfg.input.segment_frames == 200
    model = build_model(cfg.arch, cfg.model, 400, 4).eval()
    assert model.cfg.pooling == pooling
    # 16-channel Conv1 (8·10·2 + 8·2·8 = 288 weights), four 3×3 convs, BN pairs, then the pooling's own layer.
    backbone = 288 + 9 * (16 * 32 + 32 * 48 + 48 * 64 + 64 * 80) + 2 * (16 + 32 + 48 + 64 + 80)
    head = {"gap": 80 * 4 + 4, "bilinear": 6400 * 4 + 4, "attention": 80 * 4 + 4 + 80}[pooling]
    assert count_parameters(model) == backbone + head == params
    with torch.no_grad():
        assert model(torch.randn(2, 200, 400), torch.tensor([200, 120])).shape == (2, 4)
