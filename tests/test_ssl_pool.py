"""ssl-pool: the SUPERB ER downstream reading, a hand-computed forward, masking, errors, and a toy task on
dumped layers where only one layer tells the classes apart."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import make_feature_dir

from sertk.errors import SertkError
from sertk.features.io import load_features
from sertk.models import MODELS, SYSTEMS, build_model, count_parameters
from sertk.models.ssl_pool import SslPool


def test_default_is_the_superb_er_downstream():
    model = build_model("ssl-pool", {"num_layers": 13}, 13 * 768, 4)
    assert MODELS["ssl-pool"] is SslPool and SYSTEMS["ssl-pool"] == "ssl"
    assert model.cfg.pooling == "mean" and model.cfg.projection_dim == 256 and not model.cfg.layer_norm
    # 13 layer logits + Linear(768, 256) + Linear(256, 4); uniform layer weights at the start.
    assert count_parameters(model) == 13 + (768 * 256 + 256) + (256 * 4 + 4) == 197_905
    assert torch.allclose(model.layer_weights(), torch.full((13,), 1 / 13))


def test_forward_by_hand():
    model = build_model("ssl-pool", {"num_layers": 2, "projection_dim": 2}, 4, 2).double()
    with torch.no_grad():
        model.layer_logits.copy_(torch.tensor([0.0, math.log(3.0)], dtype=torch.float64))  # weights 1/4, 3/4
        model.projection.weight.copy_(torch.eye(2))
        model.projection.bias.zero_()
        model.head.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        model.head.bias.copy_(torch.tensor([0.0, 10.0]))
    # Two frames, each [layer 0 | layer 1]; a third, padded frame of garbage.
    feats = torch.tensor([[[1.0, 0.0, 0.0, 2.0], [3.0, 0.0, 0.0, 6.0], [99.0, 99.0, 99.0, 99.0]]]).double()
    logits = model(feats, torch.tensor([2]))[0]
    # mixed frames: 1/4 [1, 0] + 3/4 [0, 2] = [0.25, 1.5] and [0.75, 4.5]; mean [0.5, 3.0].
    assert logits.tolist() == pytest.approx([0.5, 0.5 + 3.0 + 10.0], rel=1e-12)


@pytest.mark.parametrize("pooling", ["mean", "mean-std", "attention", "attention-mean-std"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_padded_rows_equal_the_utterance_alone(pooling, layer_norm):
    torch.manual_seed(0)
    options = {"num_layers": 3, "projection_dim": 8, "pooling": pooling, "layer_norm": layer_norm}
    model = build_model("ssl-pool", options, 3 * 5, 4).double().eval()
    with torch.no_grad():
        model.layer_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    lengths = [9, 4, 1]
    feats = torch.randn(3, 9, 15, dtype=torch.float64)
    for row, n in enumerate(lengths):
        feats[row, n:] = 50.0 + 10 * torch.randn(9 - n, 15).double()  # garbage, not zeros
    batched = model(feats, torch.tensor(lengths))
    for row, n in enumerate(lengths):
        alone = model(feats[row : row + 1, :n], torch.tensor([n]))
        assert torch.allclose(batched[row], alone[0], atol=1e-10)
    assert model.pooling.out_dim == (16 if pooling.endswith("std") else 8)


def test_statistics_pooling_by_hand():
    model = build_model("ssl-pool", {"num_layers": 1, "projection_dim": 1, "pooling": "mean-std"}, 1, 2)
    frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    # Over the two real frames: mean 2, variance ((1-2)^2 + (3-2)^2) / 2 = 1.
    assert model.pooling(frames, torch.tensor([2]))[0].tolist() == pytest.approx([2.0, 1.0], rel=1e-6)


def test_bad_configs_are_one_line_errors():
    with pytest.raises(SertkError, match="num_layers: 13 layers do not split 1000-dim frames"):
        build_model("ssl-pool", {"num_layers": 13}, 1000, 4)
    with pytest.raises(SertkError, match="num_layers: 0 layers .*sertk train does when it is 0"):
        build_model("ssl-pool", None, 1000, 4)
    with pytest.raises(SertkError, match="unknown pooling 'max'.*mean-std"):
        build_model("ssl-pool", {"num_layers": 2, "pooling": "max"}, 8, 4)
    with pytest.raises(SertkError, match="unknown key"):
        build_model("ssl-pool", {"layers": 2}, 8, 4)


def _toy_dump(tmp_path, informative: int, num_layers: int = 4, dim: int = 8, per_class: int = 32):
    """An HDF5 dump of (T, L·D) float16 frames where only layer ``informative`` carries the class: it
    holds +-1 along a fixed direction plus frame noise; every other layer holds a large per-utterance
    offset plus frame noise, the same for both classes."""
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    arrays, labels = {}, {}
    for i in range(2 * per_class):
        label = i % 2
        frames = int(rng.integers(20, 41))
        layers = 3.0 * rng.standard_normal((1, num_layers, dim)) + rng.standard_normal(
            (frames, num_layers, dim)
        )
        layers[:, informative] = (2 * label - 1) * direction + rng.standard_normal((frames, dim))
        utt = f"utt{i:03d}"
        arrays[utt] = layers.reshape(frames, num_layers * dim).astype(np.float16)
        labels[utt] = label
    make_feature_dir(
        tmp_path, arrays, feat="ssl", config={"layers": list(range(num_layers)), "layer_dim": dim}
    )
    return labels


def test_learns_to_weight_the_one_informative_layer(tmp_path, one_thread):
    informative = 2
    labels = _toy_dump(tmp_path, informative)
    feats = load_features(tmp_path)
    utts = sorted(labels)
    lengths = torch.tensor([len(feats[u]) for u in utts])
    batch = torch.zeros(len(utts), int(lengths.max()), 32)
    for row, utt in enumerate(utts):
        batch[row, : lengths[row]] = torch.from_numpy(feats[utt])
    targets = torch.tensor([labels[u] for u in utts])
    torch.manual_seed(0)
    model = build_model("ssl-pool", {"num_layers": 4, "projection_dim": 16}, 32, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch, lengths), targets)
        loss.backward()
        optimizer.step()
    weights = model.layer_weights().detach()
    print(f"layer weights after training: {weights.numpy().round(3)}, loss {loss.item():.4f}")
    with torch.no_grad():
        accuracy = (model(batch, lengths).argmax(dim=1) == targets).float().mean().item()
    assert accuracy == 1.0
    assert int(weights.argmax()) == informative and weights[informative] > 0.5


def test_layer_norm_dropout_and_statistics_floor_by_hand():
    model = build_model("ssl-pool", {"num_layers": 1, "projection_dim": 2, "layer_norm": True}, 2, 2).double()
    with torch.no_grad():
        model.projection.weight.copy_(torch.eye(2))
        model.projection.bias.zero_()
        model.head.weight.copy_(torch.eye(2))
        model.head.bias.zero_()
    # One frame [1, 3]: mean 2, variance 1, so LayerNorm (no affine, eps 1e-5) gives -+1 / sqrt(1 + 1e-5).
    logits = model(torch.tensor([[[1.0, 3.0]]], dtype=torch.float64), torch.tensor([1]))[0]
    assert logits.tolist() == pytest.approx([-((1 + 1e-5) ** -0.5), (1 + 1e-5) ** -0.5], rel=1e-12)
    # Dropout acts on the pooled vector: at p = 1 a training forward leaves only the head's bias.
    dropped = build_model("ssl-pool", {"num_layers": 1, "projection_dim": 2, "dropout": 1.0}, 2, 2).train()
    assert torch.equal(dropped(torch.ones(1, 3, 2), torch.tensor([3]))[0], dropped.head.bias)
    # A constant track has sigma = sqrt(0 + 1e-8) = 1e-4, not 0 (finite gradients).
    stats = build_model(
        "ssl-pool", {"num_layers": 1, "projection_dim": 1, "pooling": "mean-std"}, 1, 2
    ).pooling
    assert stats(torch.full((1, 4, 1), 2.0), torch.tensor([4]))[0].tolist() == pytest.approx([2.0, 1e-4])


def test_projection_and_layer_choices_are_checked():
    with pytest.raises(SertkError, match="model.projection_dim: must be positive, got 0"):
        build_model("ssl-pool", {"num_layers": 2, "projection_dim": 0}, 8, 4)
    with pytest.raises(SertkError, match=r"model.use_layers: distinct positions in 0..1 .*got \[1, -1\]"):
        build_model("ssl-pool", {"num_layers": 2, "use_layers": [1, -1]}, 8, 4)
    model = build_model("ssl-pool", {"num_layers": 3, "use_layers": [-1, 0]}, 12, 4)
    assert model.use_layers == [2, 0] and model.layer_logits.shape == (2,)
