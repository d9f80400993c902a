"""SpecAugment masks (Park et al. 2019): widths within the maxima, uniform widths, real frames only, p cap, fills."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
import torch

from sertk.augment.mixup import MixupConfig
from sertk.augment.specaugment import SpecAugment, SpecAugmentConfig, spec_augment
from sertk.config import from_dict, to_dict
from sertk.errors import SertkError

pytestmark = pytest.mark.usefixtures("one_thread")


def padded_ones(lengths: list[int], dim: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of 1 + (frame, column) position (never 0), zero on the padded frames."""
    frames = max(lengths)
    feats = 1 + torch.arange(frames * dim, dtype=torch.float32).reshape(1, frames, dim).repeat(
        len(lengths), 1, 1
    )
    for row, n in enumerate(lengths):
        feats[row, n:] = 0
    return feats, torch.tensor(lengths)


def masked_columns(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, D): True where a column is zero on every real frame of its row."""
    valid = torch.arange(out.shape[1])[None, :] < lengths[:, None]
    return ((out == 0) | ~valid[:, :, None]).all(dim=1)


def masked_frames(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T): True on the real frames that are zero on every column."""
    valid = torch.arange(out.shape[1])[None, :] < lengths[:, None]
    return (out == 0).all(dim=2) & valid


def spans(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the number of separate runs of True in each row."""
    starts = mask[:, 1:] & ~mask[:, :-1]
    return starts.sum(dim=1) + mask[:, 0].long()


def test_one_frequency_mask_is_one_span_of_uniform_width_up_to_f():
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=7)
    feats, lengths = padded_ones([30] * 4000)
    out, out_lengths = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out_lengths, lengths)
    columns = masked_columns(out, lengths)
    assert torch.all(spans(columns) <= 1)
    # Nothing outside the mask changed, and no frame is masked by a frequency mask alone.
    assert torch.equal(out[~columns[:, None, :].expand_as(out)], feats[~columns[:, None, :].expand_as(out)])
    assert not masked_frames(out, lengths).any()
    widths = Counter(columns.sum(dim=1).tolist())
    # f ~ U{0, ..., 7}: all eight widths, each about 4000 / 8 = 500 times, never wider than F.
    assert sorted(widths) == list(range(8))
    assert all(400 < count < 600 for count in widths.values())


def test_time_masks_stay_within_each_rows_real_length():
    cfg = SpecAugmentConfig(time_masks=2, time_width=20)
    lengths = torch.tensor([50, 12, 33, 5] * 250)
    feats, _ = padded_ones(lengths.tolist(), dim=8)
    out, _ = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(1))
    padding = torch.arange(50)[None, :] >= lengths[:, None]
    assert torch.all(out[padding] == 0)  # padding untouched (still zero)
    frames = masked_frames(out, lengths)
    # A frame is masked on every column or on none (a time mask alone).
    assert torch.equal((out == 0).any(dim=2) & ~padding, frames)
    counts = frames.sum(dim=1)
    assert torch.all(counts <= torch.clamp(lengths, max=2 * 20))
    assert int(counts.max()) > 20  # two masks can add up to more than one mask's width
    assert torch.all(spans(frames) <= 2)


def test_time_ratio_caps_the_width_at_p_times_the_length():
    cfg = SpecAugmentConfig(time_masks=1, time_width=100, time_ratio=0.2)
    lengths = torch.tensor([50] * 500 + [7] * 500)
    feats, _ = padded_ones(lengths.tolist(), dim=4)
    out, _ = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(2))
    frames = masked_frames(out, lengths)
    assert torch.all(spans(frames) <= 1)
    widths = frames.sum(dim=1)
    assert set(widths[:500].tolist()) == set(range(11))  # t ~ U{0, ..., floor(0.2 · 50) = 10}
    assert set(widths[500:].tolist()) == {0, 1}  # floor(0.2 · 7) = 1


def test_frequency_masks_never_touch_padded_frames_even_with_mean_fill():
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=5, fill="mean")
    feats, lengths = padded_ones([20, 9, 14])
    out, _ = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(3))
    for row, n in enumerate([20, 9, 14]):
        assert torch.all(out[row, n:] == 0)
        mean = feats[row, :n].mean(dim=0)
        changed = out[row, :n] != feats[row, :n]
        assert changed.any()
        # Masked cells hold their column's mean over the row's real frames.
        expected = mean.expand(n, -1)[changed]
        torch.testing.assert_close(out[row, :n][changed], expected)


def test_masks_are_seeded_per_generator_and_differ_between_rows():
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=20, time_masks=1, time_width=20)
    feats, lengths = padded_ones([40] * 8)
    a = SpecAugment(cfg, torch.Generator().manual_seed(9))(feats, lengths)[0]
    b = SpecAugment(cfg, torch.Generator().manual_seed(9))(feats, lengths)[0]
    assert torch.equal(a, b)
    assert len({tuple(row.tolist()) for row in masked_columns(a, lengths)}) > 1


def test_disabled_config_changes_nothing_and_config_is_checked():
    feats, lengths = padded_ones([10, 6])
    cfg = SpecAugmentConfig()
    assert not cfg.enabled
    out, _ = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out, feats)
    assert from_dict(SpecAugmentConfig, {"freq_masks": 2, "time_masks": 2}).enabled
    with pytest.raises(SertkError, match="time_ratio"):
        from_dict(SpecAugmentConfig, {"time_ratio": 1.5}, where="input.specaugment")
    with pytest.raises(SertkError, match="unknown key.*freq_mask\\b"):
        from_dict(SpecAugmentConfig, {"freq_mask": 2})
    with pytest.raises(SertkError, match="expected features"):
        spec_augment(torch.zeros(3, 4), torch.tensor([4, 4, 4]), cfg, torch.Generator())


def test_configs_embed_in_an_input_config_as_yaml_mappings():
    """How the training input config holds them: nested dataclass fields, YAML mappings, errors with the key path."""

    @dataclass
    class Input:
        specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
        mixup: MixupConfig = field(default_factory=MixupConfig)

    cfg = from_dict(
        Input, {"specaugment": {"freq_masks": 2, "freq_width": 8, "fill": "mean"}, "mixup": {"alpha": 0.2}}
    )
    assert (
        cfg.specaugment == SpecAugmentConfig(freq_masks=2, freq_width=8, fill="mean")
        and cfg.mixup.alpha == 0.2
    )
    assert not from_dict(Input, {}).specaugment.enabled and not from_dict(Input, {}).mixup.enabled
    assert to_dict(cfg)["specaugment"]["time_width"] == 100
    with pytest.raises(SertkError, match="input.specaugment.fill: expected one of"):
        from_dict(Input, {"specaugment": {"fill": "noise"}}, where="input")


def test_a_mask_starts_anywhere_it_fits_up_to_the_last_column_and_frame():
    """f₀ ~ U{0, ..., ν − f} and t₀ ~ U{0, ..., τ − t}: a width-2 mask of 5 columns starts at 0, 1, 2 or 3
    (each about 1/4 of the time), so the last column is masked too; likewise the last real frame."""
    feats, lengths = padded_ones([6] * 6000, dim=5)
    out, _ = spec_augment(
        feats, lengths, SpecAugmentConfig(freq_masks=1, freq_width=2), torch.Generator().manual_seed(4)
    )
    columns = masked_columns(out, lengths)
    width_two = columns[columns.sum(dim=1) == 2]
    starts = Counter(width_two.long().argmax(dim=1).tolist())
    assert sorted(starts) == [0, 1, 2, 3]
    assert all(abs(n / len(width_two) - 1 / 4) < 0.04 for n in starts.values())
    lengths = torch.tensor([5, 8] * 3000)
    feats, _ = padded_ones(lengths.tolist(), dim=2)
    cfg = SpecAugmentConfig(time_masks=1, time_width=3)
    frames = masked_frames(spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(5))[0], lengths)
    for row, n in ((0, 5), (1, 8)):
        width_three = frames[row::2][frames[row::2].sum(dim=1) == 3]
        # t₀ ∈ {0, ..., n − 3}, each about 1/(n − 2) of the width-3 masks.
        starts = Counter(width_three.long().argmax(dim=1).tolist())
        assert sorted(starts) == list(range(n - 2))
        assert all(abs(k / len(width_three) - 1 / (n - 2)) < 0.05 for k in starts.values())


def test_a_frequency_width_above_the_feature_dim_is_capped_at_the_dim():
    """F = min(freq_width, ν): freq_width 10 on 4 columns gives f ~ U{0, ..., 4}, each width 1/5 of the rows."""
    feats, lengths = padded_ones([3] * 5000, dim=4)
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=10)
    out, _ = spec_augment(feats, lengths, cfg, torch.Generator().manual_seed(6))
    widths = Counter(masked_columns(out, lengths).sum(dim=1).tolist())
    assert sorted(widths) == [0, 1, 2, 3, 4]
    assert all(800 < n < 1200 for n in widths.values())


def test_either_kind_of_mask_alone_enables_specaugment():
    assert SpecAugmentConfig(freq_masks=1).enabled and SpecAugmentConfig(time_masks=1).enabled
    assert not SpecAugmentConfig(freq_masks=1, freq_width=0).enabled
    assert not SpecAugmentConfig(time_masks=1, time_width=0).enabled
    with pytest.raises(ValueError, match="time_ratio"):
        SpecAugmentConfig(time_ratio=0.0)  # p = 0 would allow no time mask at all
