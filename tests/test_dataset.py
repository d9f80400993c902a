"""Batching from memory: padding, segmentation, normalisation stats, soft labels, samplers."""

import numpy as np
import pytest
import torch

from sertk.evaluate.inference import segment_average
from sertk.train.dataset import (
    build_feature_set,
    class_weights_balanced,
    crop_frames,
    epoch_order,
    norm_stats,
    normalize_batch,
    segment_bounds,
    soft_labels,
)


def ramp(length, dim=3, offset=0.0):
    """Frames whose values encode (utterance offset, frame index) so gathers can be checked exactly."""
    return (offset + np.arange(length)[:, None] + np.zeros((1, dim))).astype(np.float32)


def test_padding_and_batch_trimming():
    feats = [ramp(5, offset=100), ramp(2, offset=200), ramp(4, offset=300)]
    fset = build_feature_set(feats, [0, 1, 2], ["a", "b", "c"])
    assert fset.feats.shape == (3, 5, 3)
    assert fset.lengths.tolist() == [5, 2, 4]
    np.testing.assert_array_equal(fset.feats[1, :2, 0].numpy(), [200, 201])
    assert torch.all(fset.feats[1, 2:] == 0) and torch.all(fset.feats[2, 4:] == 0)
    batch, lengths = fset.batch(torch.tensor([1, 2]))
    assert batch.shape == (2, 4, 3)  # trimmed to the longest row in the batch
    assert lengths.tolist() == [2, 4]
    np.testing.assert_array_equal(batch[1, :, 0].numpy(), [300, 301, 302, 303])


def test_segment_counts():
    owner, starts = segment_bounds(np.array([450, 150, 200]), 200, 100)
    assert owner.tolist() == [0, 0, 0, 1, 2]
    assert starts.tolist() == [0, 100, 200, 0, 0]
    owner, starts = segment_bounds(np.array([450]), 200, 40)
    assert len(owner) == 7
    assert starts.tolist() == [0, 40, 80, 120, 160, 200, 240]


def test_segments_carry_frames_lengths_and_labels():
    feats = [ramp(450, dim=2, offset=1000), ramp(150, dim=2, offset=5000)]
    fset = build_feature_set(feats, [3, 1], ["long", "short"], segment_frames=200, shift=100)
    assert fset.feats.shape == (4, 200, 2)
    assert fset.lengths.tolist() == [200, 200, 200, 150]
    assert fset.owner.tolist() == [0, 0, 0, 1]
    assert fset.row_labels.tolist() == [3, 3, 3, 1]
    assert fset.feats[1, 0, 0] == 1100 and fset.feats[2, 199, 0] == 1399
    assert fset.feats[3, 149, 0] == 5149 and torch.all(fset.feats[3, 150:] == 0)


def test_segment_average_equals_hand_computation():
    scores = torch.tensor([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.3, 0.7], [0.5, 0.5]])
    owner = torch.tensor([0, 0, 1, 0, 1])
    out = segment_average(scores, owner, 2)
    expected = [[(0.2 + 0.6 + 0.3) / 3, (0.8 + 0.4 + 0.7) / 3], [0.75, 0.25]]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_crop_modes():
    x = ramp(10)
    assert crop_frames([x], 4, "head")[0][:, 0].tolist() == [0, 1, 2, 3]
    assert crop_frames([x], 4, "center")[0][:, 0].tolist() == [3, 4, 5, 6]
    start = crop_frames([x], 4, "random", seed=3)[0][0, 0]
    assert crop_frames([x], 4, "random", seed=3)[0][0, 0] == start  # seeded
    assert crop_frames([ramp(3)], 4, "head")[0].shape == (3, 3)  # shorter ones untouched
    assert crop_frames([x], 0, "head")[0].shape == (10, 3)


def test_norm_stats_global_and_neutral_match_numpy():
    rng = np.random.default_rng(0)
    train = [rng.normal(i, 1 + i, size=(10 + i, 4)).astype(np.float32) for i in range(5)]
    mean, std = norm_stats(train)
    frames = np.concatenate(train)
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-5)
    neutral = [True, False, True, False, False]
    mean, std = norm_stats(train, neutral)
    frames = np.concatenate([train[0], train[2]])
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-5)


def test_normalize_keeps_padding_zero():
    feats = torch.ones(2, 3, 2) * 5
    out = normalize_batch(feats, torch.tensor([3, 1]), torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0]))
    np.testing.assert_allclose(out[0, 0].numpy(), [2.0, 1.0])
    assert torch.all(out[1, 1:] == 0)


# cnn_blstm_vtlp.txt Table 5: (votes of the three annotators, true label, soft label over neu/hap/sad/ang, weight)
TABLE5 = [
    ("oth neu,sad neu", "neu", [0.75, 0, 0.25, 0], 0.67),
    ("hap hap neu", "hap", [0.33, 0.67, 0, 0], 1.0),
    ("sad,ang sad sad", "sad", [0, 0, 0.83, 0.17], 1.0),
    ("ang oth,ang oth", "ang", [0, 0, 0, 1], 0.5),
]


def test_soft_labels_reproduce_table5():
    classes = ["neu", "hap", "sad", "ang"]
    class_map = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
    votes = [row[0] for row in TABLE5]
    hard = [classes.index(row[1]) for row in TABLE5]
    targets, weights = soft_labels(votes, hard, classes, class_map)
    np.testing.assert_allclose(targets, [row[2] for row in TABLE5], atol=0.005)
    np.testing.assert_allclose(weights, [row[3] for row in TABLE5], atol=0.005)
    # exc maps onto hap; an utterance without votes keeps its hard label
    targets, weights = soft_labels(["exc hap", ""], [1, 2], classes, class_map)
    np.testing.assert_allclose(targets, [[0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(weights, [1, 1])


def test_balanced_class_weights():
    weights = class_weights_balanced([0, 0, 0, 1], 3)
    np.testing.assert_allclose(weights.numpy(), [4 / 9, 4 / 3, 0.0], rtol=1e-6)


def test_epoch_order_is_a_seeded_permutation():
    labels = torch.tensor([0, 1, 2, 3] * 5)
    first = epoch_order(labels, seed=1, epoch=1)
    assert sorted(first.tolist()) == list(range(20))
    assert torch.equal(first, epoch_order(labels, seed=1, epoch=1))
    assert not torch.equal(first, epoch_order(labels, seed=1, epoch=2))


@pytest.mark.parametrize("factor, expected", [(2.0, 2.0), (1.5, 1.5)])
def test_oversampling_draws_a_class_more_often(factor, expected):
    labels = torch.tensor([0, 1] * 500)
    counts = torch.zeros(2)
    for epoch in range(1, 5):
        order = epoch_order(labels, seed=0, epoch=epoch, oversample=torch.tensor([1.0, factor]))
        counts += torch.bincount(labels[order], minlength=2)
        assert len(torch.unique(order)) == 1000  # every row still drawn
    assert counts[1] / counts[0] == pytest.approx(expected, rel=0.05)


def test_length_batches_cover_order_once_and_group_similar_lengths():
    import torch

    from sertk.train.dataset import length_batches

    lengths = torch.tensor([10, 500, 20, 480, 30, 490, 15, 470])
    order = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
    batches = length_batches(order, lengths, batch_size=2, seed=0, epoch=1, pool=4)
    assert sorted(torch.cat(batches).tolist()) == list(range(8))
    # Sorting within the pool pairs short with short and long with long.
    spans = sorted(int(lengths[b].max() - lengths[b].min()) for b in batches)
    assert max(spans) <= 20
    again = length_batches(order, lengths, batch_size=2, seed=0, epoch=1, pool=4)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_scalar_norm_stats_use_one_mean_and_std():
    import numpy as np

    from sertk.train.dataset import norm_stats

    feats = [np.array([[0.0, 10.0], [2.0, 12.0]]), np.array([[4.0, 14.0]])]
    mean, std = norm_stats(feats, scalar=True)
    values = np.array([0.0, 10.0, 2.0, 12.0, 4.0, 14.0])
    assert np.allclose(mean, [values.mean()] * 2) and np.allclose(std, [values.std()] * 2)
