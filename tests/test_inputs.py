"""Model inputs: frame stores, crops, segments, per-batch padding, scaling, normalisation, samplers, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import make_feature_dir

from sertk.data.labels import agreement, parse_votes, soft_labels
from sertk.errors import SertkError
from sertk.features.spectrogram import mu_law_compress
from sertk.inputs.batch import Normalizer, WhiteNoise, model_batch, norm_stats
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import (
    MemoryFrames,
    StreamFrames,
    attach_words,
    build_feature_set,
    crop_starts,
    load_frames,
    minmax_mulaw,
    segment_bounds,
)
from sertk.losses import balanced_class_weights
from sertk.models.predict import segment_average
from sertk.train.sampler import epoch_order, length_batches


def ramp(length, dim=3, offset=0.0):
    """Frames whose values encode (utterance offset, frame index) so gathers can be checked exactly."""
    return (offset + np.arange(length)[:, None] + np.zeros((1, dim))).astype(np.float32)


def fset_of(arrays, cfg=None, training=True, seed=0):
    cfg = cfg or InputConfig()
    utts = [f"u{i}" for i in range(len(arrays))]
    return build_feature_set(MemoryFrames(arrays), utts, list(range(len(arrays))), cfg, training, seed)


def test_batches_pad_to_their_own_longest_row():
    fset = fset_of([ramp(5, offset=100), ramp(2, offset=200), ramp(4, offset=300)])
    assert fset.store.flat.shape == (5 + 2 + 4 + 1, 3)  # frames once, no (rows, T_max, D) tensor
    batch, lengths = fset.batch(torch.tensor([1, 2]))
    assert batch.shape == (2, 4, 3) and lengths.tolist() == [2, 4]
    np.testing.assert_array_equal(batch[0, :, 0].numpy(), [200, 201, 0, 0])
    np.testing.assert_array_equal(batch[1, :, 0].numpy(), [300, 301, 302, 303])


def test_segment_counts():
    owner, starts = segment_bounds(torch.tensor([450, 150, 200]), 200, 100)
    assert owner.tolist() == [0, 0, 0, 1, 2] and starts.tolist() == [0, 100, 200, 0, 0]
    owner, starts = segment_bounds(torch.tensor([450]), 200, 40)
    assert starts.tolist() == [0, 40, 80, 120, 160, 200, 240]


def test_segments_use_the_train_or_test_shift_and_keep_lengths():
    cfg = InputConfig(segment_frames=200, segment_shift_train=100, segment_shift_test=40)
    arrays = [ramp(450, dim=2, offset=1000), ramp(150, dim=2, offset=5000)]
    train = fset_of(arrays, cfg, training=True)
    assert train.lengths.tolist() == [200, 200, 200, 150] and train.owner.tolist() == [0, 0, 0, 1]
    batch, _ = train.batch(torch.arange(4))
    assert batch.shape == (4, 200, 2) and batch[1, 0, 0] == 1100 and batch[2, 199, 0] == 1399
    assert batch[3, 149, 0] == 5149 and torch.all(batch[3, 150:] == 0)
    test = fset_of(arrays, cfg, training=False)
    assert len(test) == 7 + 1


def test_segments_shorter_than_the_window_keep_their_length_in_model_batches():
    # pad batch: a 150-frame utterance is one 200-frame row whose 50 padded frames the model masks.
    cfg = InputConfig(segment_frames=200, segment_shift_train=100)
    fset = fset_of([ramp(450, dim=2), ramp(150, dim=2)], cfg)
    feats, lengths, _ = model_batch(fset, torch.arange(4), torch.device("cpu"))
    assert feats.shape == (4, 200, 2) and lengths.tolist() == [200, 200, 200, 150]
    # pad fixed: the model sees every row as 200 frames.
    fixed = fset_of([ramp(450, dim=2), ramp(150, dim=2)], InputConfig(**{**vars(cfg), "pad": "fixed"}))
    assert model_batch(fixed, torch.arange(4), torch.device("cpu"))[1].tolist() == [200] * 4


def test_crop_modes():
    lengths = torch.tensor([10, 3])
    assert crop_starts(lengths, 4, "head", None).tolist() == [0, 0]
    assert crop_starts(lengths, 4, "center", None).tolist() == [3, 0]
    gen = torch.Generator().manual_seed(3)
    starts = [crop_starts(lengths, 4, "random", gen).tolist() for _ in range(20)]
    assert {s[0] for s in starts} == set(range(7)) and all(s[1] == 0 for s in starts)
    fset = fset_of([ramp(10), ramp(3)], InputConfig(max_frames=4, crop="center"))
    batch, lengths = fset.batch(torch.arange(2))
    assert batch[0, :, 0].tolist() == [3, 4, 5, 6] and lengths.tolist() == [4, 3]


def test_random_crop_is_centred_outside_training():
    cfg = InputConfig(max_frames=4, crop="random")
    # Every seed: a seeded random draw may land on the centre by chance, so one seed would not tell.
    assert [fset_of([ramp(10)], cfg, training=False, seed=s).crop_start.item() for s in range(10)] == [3] * 10
    again = [fset_of([ramp(10)], cfg, training=True, seed=s).crop_start.item() for s in range(30)]
    assert len(set(again)) > 3


def test_head_and_centre_crops_keep_their_window_outside_training():
    # Only a random crop turns into the centre window for validation and test rows: 10 frames into 4.
    for crop, start in (("head", 0), ("center", 3)):
        fset = fset_of([ramp(10)], InputConfig(max_frames=4, crop=crop), training=False)
        assert fset.crop_start.tolist() == [start]


def test_fixed_padding_shows_zeros_as_frames_after_normalisation():
    cfg = InputConfig(max_frames=6, pad="fixed")
    fset = fset_of([ramp(4, dim=2), ramp(9, dim=2)], cfg)
    norm = Normalizer(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]))
    feats, lengths, _ = model_batch(fset, torch.arange(2), torch.device("cpu"), norm)
    assert feats.shape == (2, 6, 2) and lengths.tolist() == [6, 6]
    np.testing.assert_allclose(feats[0, :, 0].numpy(), [-0.5, 0, 0.5, 1.0, 0, 0])  # zeros after normalising
    batch = fset_of([ramp(4, dim=2), ramp(9, dim=2)], InputConfig(max_frames=6))
    _, lengths, _ = model_batch(batch, torch.arange(2), torch.device("cpu"), norm)
    assert lengths.tolist() == [4, 6]


def test_minmax_mulaw_maps_each_segment_onto_minus_one_one_then_mulaw():
    x = torch.tensor([[[0.0, 2.0], [4.0, 1.0], [9.0, 9.0]]])
    out = minmax_mulaw(x, torch.tensor([2]), 255.0)
    scaled = torch.tensor([[-1.0, 0.0], [1.0, -0.5]])  # over the two real frames: min 0, max 4
    np.testing.assert_allclose(out[0, :2].numpy(), mu_law_compress(scaled, 255.0).numpy(), rtol=1e-6)
    assert torch.all(out[0, 2] == 0)
    cfg = InputConfig(segment_frames=2, segment_shift_train=2, segment_scaling="minmax-mulaw")
    fset = fset_of([ramp(4, dim=2, offset=10)], cfg)
    batch, _ = fset.batch(torch.arange(2))
    assert batch.min() == -1 and batch.max() == 1  # each segment spans [-1, 1] on its own
    # segment_mu reaches the rows: 3 frames 0, 1, 2 scale to -1, 0, 1; mu-law keeps those (sign(x) ln(1 +
    # mu |x|) / ln(1 + mu) is 0 and +-1 there), so a 5-frame ramp 0..4 scaled to -1 -0.5 0 0.5 1 shows mu at 0.5.
    cfg = InputConfig(segment_frames=5, segment_scaling="minmax-mulaw", segment_mu=15.0)
    batch, _ = fset_of([ramp(5, dim=1)], cfg).batch(torch.arange(1))
    half = math.log(1 + 15 * 0.5) / math.log(16)
    np.testing.assert_allclose(batch[0, :, 0].numpy(), [-1, -half, 0, half, 1], rtol=1e-6, atol=1e-7)


def test_streamed_frames_equal_frames_in_memory(tmp_path):
    arrays = {
        f"u{i}": np.random.default_rng(i).normal(size=(5 + 3 * i, 4)).astype(np.float32) for i in range(5)
    }
    feats = make_feature_dir(tmp_path / "feats", arrays)
    utts = sorted(arrays)
    memory = load_frames(feats, utts, budget_bytes=10**9)
    stream = load_frames(feats, utts, budget_bytes=10)
    assert isinstance(memory, MemoryFrames) and isinstance(stream, StreamFrames)
    cfg = InputConfig(segment_frames=4, segment_shift_train=2)
    a = build_feature_set(memory, utts, [0] * 5, cfg, True)
    b = build_feature_set(stream, utts, [0] * 5, cfg, True)
    index = torch.tensor([6, 0, 3, 9])
    for x, y in zip(a.batch(index), b.batch(index), strict=True):
        assert torch.equal(x, y)
    assert all(torch.equal(x, y) for x, y in zip(norm_stats(a), norm_stats(b), strict=True))


def test_norm_stats_global_neutral_and_scalar_match_numpy():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(i, 1 + i, size=(10 + i, 4)).astype(np.float32) for i in range(5)]
    fset = fset_of(arrays)
    frames = np.concatenate(arrays)
    mean, std = norm_stats(fset)
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-5)
    select = [True, False, True, False, False]
    mean, std = norm_stats(fset, select)
    chosen = np.concatenate([arrays[0], arrays[2]])
    np.testing.assert_allclose(mean, chosen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, chosen.std(0), rtol=1e-5)
    mean, std = norm_stats(fset, scalar=True)
    np.testing.assert_allclose(mean, [frames.mean()] * 4, rtol=1e-5)
    np.testing.assert_allclose(std, [frames.std()] * 4, rtol=1e-5)
    with pytest.raises(SertkError):
        norm_stats(fset, [False] * 5)


def test_norm_stats_see_only_the_kept_window():
    fset = fset_of([ramp(10, dim=1)], InputConfig(max_frames=4, crop="center"))
    mean, _ = norm_stats(fset)
    assert mean.item() == pytest.approx(np.mean([3, 4, 5, 6]))
    # The head window's frames 0..3 (a centred ramp window has the whole ramp's mean, the head one not).
    fset = fset_of([ramp(10, dim=1)], InputConfig(max_frames=4, crop="head"))
    mean, std = norm_stats(fset)
    assert mean.item() == pytest.approx(1.5) and std.item() == pytest.approx(np.std([0, 1, 2, 3]))


def test_normalizer_and_noise_keep_padding_zero():
    feats = torch.ones(2, 3, 2) * 5
    out = Normalizer(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0]))(feats, torch.tensor([3, 1]))
    np.testing.assert_allclose(out[0, 0].numpy(), [2.0, 1.0])
    assert torch.all(out[1, 1:] == 0)
    noisy, _ = WhiteNoise(1.0, torch.Generator().manual_seed(0))(out, torch.tensor([3, 1]))
    assert torch.all(noisy[1, 1:] == 0) and not torch.equal(noisy[0], out[0])


def test_segment_average_equals_hand_computation():
    scores = torch.tensor([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.3, 0.7], [0.5, 0.5]])
    out = segment_average(scores, torch.tensor([0, 0, 1, 0, 1]), 2)
    expected = [[(0.2 + 0.6 + 0.3) / 3, (0.8 + 0.4 + 0.7) / 3], [0.75, 0.25]]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


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
    targets, weights = soft_labels(
        [r[0] for r in TABLE5], [classes.index(r[1]) for r in TABLE5], classes, class_map
    )
    np.testing.assert_allclose(targets, [r[2] for r in TABLE5], atol=0.005)
    np.testing.assert_allclose(weights, [r[3] for r in TABLE5], atol=0.005)
    # exc maps onto hap; an utterance without votes keeps its hard label
    targets, weights = soft_labels(["exc hap", ""], [1, 2], classes, class_map)
    np.testing.assert_allclose(targets, [[0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(weights, [1, 1])


def test_votes_all_outside_the_classes_keep_the_hard_label_with_weight_zero():
    classes = ["neu", "hap", "sad", "ang"]
    targets, weights = soft_labels(["oth fru,oth", "oth neu"], [2, 0], classes, {})
    np.testing.assert_allclose(targets, [[0, 0, 1, 0], [1, 0, 0, 0]])
    # Two raters, one vote inside the classes: weight 1/2.
    np.testing.assert_allclose(weights, [0.0, 0.5])


def test_vote_parsing_and_agreement():
    assert parse_votes("neu,sad oth neu") == [["neu", "sad"], ["oth"], ["neu"]]
    classes = ["neu", "hap"]
    out = agreement(["neu neu,hap", "neu hap", ""], np.array([0, 0, 1]), classes, {"exc": "hap"})
    assert out.tolist() == [1, 0, -1]
    assert agreement(["exc hap"], np.array([1]), classes, {"exc": "hap"}).tolist() == [1]


def test_balanced_class_weights():
    np.testing.assert_allclose(
        balanced_class_weights([0, 0, 0, 1], 3).numpy(), [4 / 9, 4 / 3, 0.0], rtol=1e-6
    )


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
    lengths = torch.tensor([10, 500, 20, 480, 30, 490, 15, 470])
    order = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
    batches = length_batches(order, lengths, batch_size=2, seed=0, epoch=1, pool=4)
    assert sorted(torch.cat(batches).tolist()) == list(range(8))
    spans = sorted(int(lengths[b].max() - lengths[b].min()) for b in batches)
    assert max(spans) <= 20
    again = length_batches(order, lengths, batch_size=2, seed=0, epoch=1, pool=4)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_input_config_checks():
    with pytest.raises(ValueError, match="pad fixed needs"):
        InputConfig(pad="fixed")
    with pytest.raises(ValueError, match="segment_scaling needs"):
        InputConfig(segment_scaling="minmax-mulaw")
    with pytest.raises(ValueError, match="white_noise_std must be >= 0"):
        InputConfig(white_noise_std=-0.1)


def test_model_batch_warps_raw_frames_then_normalises_then_augments():
    # transform (VTLP's place) doubles raw frames, the normaliser maps x -> (x - 1) / 2, then the
    # augmentation (white noise's place) adds 1: a frame x becomes (2x - 1) / 2 + 1.
    fset = fset_of([ramp(3, dim=2)])
    norm = Normalizer(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]))
    feats, _, _ = model_batch(
        fset, torch.arange(1), torch.device("cpu"), norm, lambda f, n: (2 * f, n), [lambda f, n: (f + 1, n)]
    )
    x = np.arange(3.0)[:, None] + np.zeros((1, 2))
    np.testing.assert_allclose(feats[0].numpy(), (2 * x - 1) / 2 + 1)


def test_white_noise_is_added_to_normalised_frames():
    fset = fset_of([ramp(4, dim=2, offset=10)])
    norm = Normalizer(torch.tensor([11.0, 11.0]), torch.tensor([4.0, 4.0]))
    noise = WhiteNoise(0.5, torch.Generator().manual_seed(7))
    feats, _, _ = model_batch(fset, torch.arange(1), torch.device("cpu"), norm, augment=[noise])
    drawn = torch.randn((1, 4, 2), generator=torch.Generator().manual_seed(7))
    x = 10 + np.arange(4.0)[:, None] + np.zeros((1, 2))
    np.testing.assert_allclose(feats[0].numpy(), (x - 11) / 4 + 0.5 * drawn[0].numpy(), rtol=1e-6)


def test_a_constant_dimension_gets_std_one_and_normalises_to_zero():
    frames = np.stack([np.arange(5.0), np.full(5, 3.0)], axis=1).astype(np.float32)
    fset = fset_of([frames])
    mean, std = norm_stats(fset)
    np.testing.assert_allclose(mean.numpy(), [2.0, 3.0])
    np.testing.assert_allclose(std.numpy(), [np.std(np.arange(5.0)), 1.0], rtol=1e-6)
    out = Normalizer(mean, std)(torch.from_numpy(frames)[None], torch.tensor([5]))
    assert torch.all(out[0, :, 1] == 0)


def test_batches_come_in_a_seeded_random_order_that_changes_every_epoch():
    # One pool holds every row: within it batches are consecutive runs of the length-sorted rows, so an
    # unshuffled list would come out in increasing length.
    lengths = torch.arange(1, 33)
    orders = [epoch_order(torch.zeros(32, dtype=torch.long), seed=0, epoch=e) for e in (1, 2)]
    first, second = (
        length_batches(o, lengths, 2, seed=0, epoch=e) for e, o in zip((1, 2), orders, strict=True)
    )
    assert [sorted(b.tolist()) for b in first] != [[i, i + 1] for i in range(0, 32, 2)]
    assert sorted(sorted(b.tolist()) for b in first) == [[i, i + 1] for i in range(0, 32, 2)]
    assert [b.tolist() for b in first] != [b.tolist() for b in second]
    again = length_batches(orders[0], lengths, 2, seed=0, epoch=1)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]


def test_fixed_padding_comes_after_the_augmentations_so_noise_stays_off_the_padded_zeros():
    fset = fset_of([ramp(3, dim=2), ramp(6, dim=2)], InputConfig(max_frames=6, pad="fixed"))
    noise = WhiteNoise(1.0, torch.Generator().manual_seed(0))
    feats, lengths, _ = model_batch(fset, torch.arange(2), torch.device("cpu"), augment=[noise])
    assert lengths.tolist() == [6, 6]
    assert torch.all(feats[0, 3:] == 0) and torch.all(feats[0, :3] != torch.from_numpy(ramp(3, dim=2)))


def test_norm_stats_sum_in_float64_so_a_small_spread_far_from_zero_survives():
    # Dimension 0: 10000 -+ 0.5 (std 0.5). In float32 the squares 10000.5^2 round to multiples of 8, so
    # E[x^2] - E[x]^2 would be 0 (std 1 by the zero-variance rule). Dimension 1: 0 / 2e-4 (std 1e-4) is a
    # small spread, not a constant, and keeps its std.
    frames = np.stack([10000 + np.tile([-0.5, 0.5], 4), np.tile([0.0, 2e-4], 4)], axis=1).astype(np.float32)
    mean, std = norm_stats(fset_of([frames]))
    np.testing.assert_allclose(mean.numpy(), [10000.0, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), [0.5, 1e-4], rtol=1e-4)


def test_a_constant_dimension_whose_variance_rounds_below_zero_still_gets_std_one():
    # 100 copies of this float32 value: sum(x^2) / n - (sum(x) / n)^2 comes out as -4.5e-13 in float64
    # (on x86-64 numpy), not 0, and its square root would be nan.
    value = np.float32(54.36249923706055)
    frames = np.stack([np.full(100, value), np.arange(100.0)], axis=1).astype(np.float32)
    mean, std = norm_stats(fset_of([frames]))
    np.testing.assert_allclose(std.numpy(), [1.0, np.arange(100.0).std()], rtol=1e-6)


def test_a_normalizer_needs_both_mean_and_std():
    mean, std = torch.zeros(2), torch.ones(2)
    assert Normalizer.of(mean, None) is None and Normalizer.of(None, std) is None
    assert Normalizer.of(None, None) is None and isinstance(Normalizer.of(mean, std), Normalizer)


def test_model_batch_gives_each_row_the_words_of_its_utterance_trimmed_to_the_batch():
    # Segments of 2 frames: u0 (4 frames) gives rows 0 and 1, u1 (2 frames) row 2. u0 has one word vector,
    # u1 three, so a batch of u0's rows holds one word and a batch with u1 holds three (u0's zero-padded after).
    cfg = InputConfig(segment_frames=2, segment_shift_train=2)
    fset = fset_of([ramp(4, dim=1), ramp(2, dim=1)], cfg)
    words = {
        "u0": np.array([[1.0, 2.0]], dtype=np.float32),
        "u1": np.arange(6.0, dtype=np.float32).reshape(3, 2),
    }
    attach_words(fset, words)
    assert fset.owner.tolist() == [0, 0, 1]
    _, _, extra = model_batch(fset, torch.tensor([0, 1]), torch.device("cpu"))
    assert extra["word_lengths"].tolist() == [1, 1]
    np.testing.assert_array_equal(extra["words"].numpy(), [[[1, 2]], [[1, 2]]])
    _, _, extra = model_batch(fset, torch.tensor([2, 0]), torch.device("cpu"))
    assert extra["word_lengths"].tolist() == [3, 1]
    np.testing.assert_array_equal(extra["words"][0].numpy(), [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(extra["words"][1].numpy(), [[1, 2], [0, 0], [0, 0]])


def test_a_store_of_mixed_dtypes_holds_values_not_codes():
    # int16 PCM 16384 is the value 16384 / 32768 = 0.5; next to a float32 utterance both are stored as values.
    store = MemoryFrames([np.array([[16384], [-8192]], dtype=np.int16), np.array([[0.25]], dtype=np.float32)])
    np.testing.assert_array_equal(store.utterance(0).numpy(), [[0.5], [-0.25]])
    np.testing.assert_array_equal(store.utterance(1).numpy(), [[0.25]])
    gathered = store.gather(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([2, 1]), 2)
    np.testing.assert_array_equal(gathered[:, :, 0].numpy(), [[0.5, -0.25], [0.25, 0.0]])


def test_frames_that_fill_the_memory_budget_exactly_stay_in_memory_in_their_stored_dtype(tmp_path):
    # 5 + 8 frames of 4 dims: 13 * 4 * 4 = 208 bytes as float32, 104 as float16.
    arrays = {"a": np.ones((5, 4), np.float32), "b": np.ones((8, 4), np.float32)}
    feats = make_feature_dir(tmp_path / "f32", arrays)
    assert isinstance(load_frames(feats, ["a", "b"], budget_bytes=208), MemoryFrames)
    assert isinstance(load_frames(feats, ["a", "b"], budget_bytes=207), StreamFrames)
    halves = make_feature_dir(tmp_path / "f16", {k: v.astype(np.float16) for k, v in arrays.items()})
    store = load_frames(halves, ["a", "b"], budget_bytes=104)
    assert isinstance(store, MemoryFrames) and store.nbytes == (13 + 1) * 4 * 2
    assert isinstance(load_frames(halves, ["a", "b"], budget_bytes=103), StreamFrames)


def test_centre_and_uncapped_crops():
    # Length 9 into 4 frames: excess 5, the centre window starts at floor(5 / 2) = 2 (frames 2..5).
    assert crop_starts(torch.tensor([9, 4, 2]), 4, "center", None).tolist() == [2, 0, 0]
    # max_frames 0 keeps whole utterances: every crop mode starts at frame 0.
    lengths = torch.tensor([9, 4])
    assert crop_starts(lengths, 0, "center", None).tolist() == [0, 0]
    assert crop_starts(lengths, 0, "random", torch.Generator().manual_seed(0)).tolist() == [0, 0]
    fset = fset_of([ramp(9, dim=1), ramp(4, dim=1)], InputConfig(crop="center"))
    batch, lengths = fset.batch(torch.arange(2))
    assert lengths.tolist() == [9, 4] and batch[0, :, 0].tolist() == list(range(9))


def test_segments_cover_only_the_cropped_window():
    # u0: 9 frames, centre window of 5 starts at 2 (frames 2..6); segments of 2 every 2: 1 + (5 - 2) // 2 = 2
    # rows, frames 2-3 and 4-5 (the whole utterance would give 4). u1: 3 frames, kept whole, one row 0-1.
    cfg = InputConfig(max_frames=5, crop="center", segment_frames=2, segment_shift_train=2)
    fset = fset_of([ramp(9, dim=1), ramp(3, dim=1, offset=100)], cfg)
    assert fset.owner.tolist() == [0, 0, 1] and fset.lengths.tolist() == [2, 2, 2]
    batch, _ = fset.batch(torch.arange(3))
    np.testing.assert_array_equal(batch[:, :, 0].numpy(), [[2, 3], [4, 5], [100, 101]])
    # A window of 3 (frames 3..5) shorter than a 4-frame segment: one row of the window's 3 frames, not 4.
    cfg = InputConfig(max_frames=3, crop="center", segment_frames=4)
    fset = fset_of([ramp(9, dim=1)], cfg)
    assert fset.lengths.tolist() == [3]
    np.testing.assert_array_equal(fset.batch(torch.arange(1))[0][0, :, 0].numpy(), [3, 4, 5, 0])


def test_segment_and_fixed_pad_rows_are_full_width_even_in_a_batch_of_short_rows():
    # A batch of one 3-frame utterance's only segment is still segment_frames = 4 wide.
    seg = fset_of([ramp(3, dim=1)], InputConfig(segment_frames=4))
    batch, lengths = seg.batch(torch.tensor([0]))
    assert batch.shape == (1, 4, 1) and lengths.tolist() == [3]
    # pad fixed: a batch of two 3-frame utterances is max_frames = 6 wide.
    fixed = fset_of([ramp(3, dim=1), ramp(3, dim=1)], InputConfig(max_frames=6, pad="fixed"))
    feats, lengths, _ = model_batch(fixed, torch.arange(2), torch.device("cpu"))
    assert feats.shape == (2, 6, 1) and lengths.tolist() == [6, 6]


def test_an_epochs_random_recrop_draws_windows_over_the_whole_utterance():
    # 10 frames into 4: starts 0..6, each reachable; the kept window's own length (4) would allow only 0.
    fset = fset_of([ramp(10, dim=1)], InputConfig(max_frames=4, crop="random"))
    gen = torch.Generator().manual_seed(0)
    starts = {fset.recrop(gen, 4).crop_start.item() for _ in range(60)}
    assert starts == set(range(7))
    start = fset.recrop(torch.Generator().manual_seed(1), 4)
    batch, _ = start.batch(torch.arange(1))
    first = start.crop_start.item()
    assert batch[0, :, 0].tolist() == [first, first + 1, first + 2, first + 3]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"vtlp_range": [0.0, 1.1]}, "vtlp_range"),
        ({"vtlp_range": [0.9, 1.0, 1.1]}, "vtlp_range"),
        ({"vtlp_range": [1.1, 0.9]}, "vtlp_range"),
        # 0.92 * 1.1 (the TTA copies' largest alpha) = 1.012 >= 1 although 0.92 * 1.0 < 1.
        ({"vtlp_range": [0.9, 1.0], "vtlp_boundary": 0.92}, "vtlp_boundary"),
        ({"vtlp_range": [1.0, 1.25], "vtlp_boundary": 0.8}, "vtlp_boundary"),  # 0.8 * 1.25 = 1 exactly
        ({"vtlp_boundary": 0.0}, "vtlp_boundary"),
        ({"vtlp_boundary": -0.5}, "vtlp_boundary"),
        ({"max_frames": -1}, "max_frames"),
        ({"segment_frames": -1}, "segment_frames"),
        ({"segment_frames": 10, "segment_shift_train": 0}, "segment_shift"),
        ({"segment_frames": 10, "segment_shift_test": 0}, "segment_shift"),
        ({"segment_frames": 10, "segment_mu": 0.0}, "segment_mu"),
    ],
)
def test_input_config_refuses(bad, match):
    with pytest.raises(ValueError, match=match):
        InputConfig(**bad)


def test_input_config_accepts_the_edges_and_gives_the_row_width():
    InputConfig(vtlp_range=[1.0, 1.0])  # one fixed alpha: low == high
    assert InputConfig(segment_frames=200, pad="fixed").width == 200  # segments alone allow pad fixed
    assert InputConfig(max_frames=500, segment_frames=200, pad="fixed").width == 200  # segments win
    assert InputConfig(max_frames=500, pad="fixed").width == 500
    assert InputConfig(max_frames=500).width == 0  # pad batch: rows keep their own lengths
