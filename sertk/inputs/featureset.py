"""Utterance features -> rows -> padded batches, without ever padding a whole split into one tensor.

A ``FeatureSet`` holds one split's utterances in a frame store (all frames end to end in memory, or read
on demand from the HDF5/ark dump when they exceed the memory budget) and its rows: whole cropped
utterances, or fixed-length segments of them (attention_pooling_cnn.txt §3). A batch is gathered row by
row from the store and padded to its own longest row (or to the fixed width of segments and of
``input.pad: fixed``), so memory holds the features once plus one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from sertk.errors import SertkError
from sertk.features.io import FeatureReader, decode_frames
from sertk.features.spectrogram import minmax_scale, mu_law_compress
from sertk.inputs.config import InputConfig
from sertk.masking import zero_padding
from sertk.utils import console


class MemoryFrames:
    """All utterances' frames end to end in one (N + 1, D) tensor; the last row is the padding zero.

    The tensor keeps the dump's storage dtype (float16 SSL layers, int16 PCM samples: half the memory of
    float32; all base-model layers of IEMOCAP are ~43 GB in float16, 86 GB as float32), and batches are
    widened to float32 values as they are gathered (``decode_frames``), on whatever device the store is on.
    """

    def __init__(self, arrays: list[np.ndarray]) -> None:
        if not arrays:
            raise SertkError("no utterances to build a batch set from")
        if len({x.dtype for x in arrays}) > 1:  # mixed storage: keep values, not codes
            arrays = [decode_frames(x) for x in arrays]
        self._allocate([len(x) for x in arrays], arrays[0].shape[1], arrays[0].dtype)
        flat = self.flat.numpy()
        for x, offset in zip(arrays, self.offsets.tolist(), strict=True):
            flat[offset : offset + len(x)] = x

    @classmethod
    def from_reader(cls, reader: FeatureReader, utts: list[str]) -> MemoryFrames:
        """The frames of ``utts`` read straight into the store, in their stored dtype: no per-utterance
        copies, so loading a split peaks at the store's own size."""
        if not utts:
            raise SertkError("no utterances to build a batch set from")
        dtypes = {reader.stored_dtype(u) for u in utts}
        if len(dtypes) > 1:
            return cls([reader.read(u) for u in utts])
        store = object.__new__(cls)
        store._allocate([reader.counts[u] for u in utts], reader.dim, dtypes.pop())
        flat = store.flat.numpy()
        for utt, offset, length in zip(utts, store.offsets.tolist(), store.lengths.tolist(), strict=True):
            reader.read_into(utt, flat[offset : offset + length])
        return store

    def _allocate(self, lengths: list[int], dim: int, dtype: np.dtype) -> None:
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        flat = np.empty((sum(lengths) + 1, dim), dtype=dtype)
        flat[-1] = 0
        self.flat = torch.from_numpy(flat)

    @property
    def dim(self) -> int:
        return self.flat.shape[1]

    def gather(
        self, owner: torch.Tensor, start: torch.Tensor, length: torch.Tensor, width: int
    ) -> torch.Tensor:
        """(B, width, D) float32: frames start..start+length of utterance ``owner`` per row, zeros after ``length``."""
        device = self.flat.device
        owner, start, length = owner.to(device), start.to(device), length.to(device)
        steps = torch.arange(width, device=device)
        index = torch.where(
            steps[None, :] < length[:, None],
            (self.offsets[owner] + start)[:, None] + steps[None, :],
            len(self.flat) - 1,
        )
        return decode_frames(self.flat[index])

    def utterance(self, index: int) -> torch.Tensor:
        """One utterance's frames as float32 values."""
        start = int(self.offsets[index])
        return decode_frames(self.flat[start : start + int(self.lengths[index])])

    def to(self, device: torch.device | str) -> MemoryFrames:
        out = object.__new__(MemoryFrames)
        out.lengths, out.offsets, out.flat = (t.to(device) for t in (self.lengths, self.offsets, self.flat))
        return out

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()


class StreamFrames:
    """Frames read from the feature dump on demand, one row's slice at a time (for splits beyond the budget)."""

    def __init__(self, reader: FeatureReader, utts: list[str], lengths: list[int]) -> None:
        self.reader, self.utts = reader, list(utts)
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.dim = reader.dim

    def gather(
        self, owner: torch.Tensor, start: torch.Tensor, length: torch.Tensor, width: int
    ) -> torch.Tensor:
        out = torch.zeros(len(owner), width, self.dim)
        for row, (u, s, n) in enumerate(zip(owner.tolist(), start.tolist(), length.tolist(), strict=True)):
            out[row, :n] = torch.from_numpy(self.reader.read(self.utts[u], s, s + n))
        return out

    def utterance(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.reader.read(self.utts[index]))

    def to(self, device: torch.device | str) -> StreamFrames:
        return self  # rows are read to the host and moved per batch

    nbytes = 0


def load_frames(feat_dir, utts: list[str], budget_bytes: int) -> MemoryFrames | StreamFrames:
    """The frames of ``utts`` from a feature dir: in memory when they fit ``budget_bytes``, else streamed."""
    reader = FeatureReader(feat_dir)
    reader.check(utts)
    counts = [reader.counts[u] for u in utts]
    # What the store will hold: the stored dtype's bytes (float16 layers take half of float32's budget).
    need = sum(counts) * reader.dim * (reader.stored_dtype(utts[0]).itemsize if utts else 4)
    if need <= budget_bytes:
        try:
            return MemoryFrames.from_reader(reader, utts)
        finally:
            reader.close()
    console.print(
        f"{feat_dir}: {len(utts)} utterances need {need / 2**30:.1f} GiB, over the {budget_bytes / 2**30:.1f} "
        "GiB memory budget: batches are read from the dump on demand"
    )
    return StreamFrames(reader, utts, counts)


def crop_starts(
    lengths: torch.Tensor, max_frames: int, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Start frame of each utterance's kept window of at most ``max_frames``: head, centre or random."""
    excess = (lengths - max_frames).clamp(min=0) if max_frames > 0 else torch.zeros_like(lengths)
    if mode == "head":
        return torch.zeros_like(lengths)
    if mode == "center":
        return excess // 2
    if generator is None:
        raise SertkError("random crop needs a generator")
    return (torch.rand(len(lengths), generator=generator) * (excess + 1)).floor().long()


def segment_bounds(
    lengths: torch.Tensor, segment_frames: int, shift: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment (owner utterance, start frame) pairs: 1 + (L - S) // shift windows, one when L <= S.

    attention_pooling_cnn.txt §3: 2 s windows every 1 s (train) / 0.4 s (test); an utterance shorter than a
    window gives one window holding all its frames (zero-padded, its true length kept).
    """
    counts = 1 + (lengths - segment_frames).clamp(min=0) // shift
    owner = torch.repeat_interleave(torch.arange(len(lengths)), counts)
    first = torch.cumsum(counts, 0) - counts
    starts = (torch.arange(int(counts.sum())) - first[owner]) * shift
    return owner, starts


def minmax_mulaw(feats: torch.Tensor, lengths: torch.Tensor, mu: float) -> torch.Tensor:
    """Each row's real frames mapped linearly onto [-1, 1], then mu-law (attention_pooling_cnn.txt §2.1, Eq. 1).

    ``minmax_scale`` and ``mu_law_compress`` of ``sertk.features.spectrogram``; padded frames are set back to
    0, the padding every FeatureSet batch has (the models mask it).
    """
    return zero_padding(mu_law_compress(minmax_scale(feats, lengths), mu), lengths)


@dataclass
class FeatureSet:
    """One split of a fold: its utterances in a frame store and the rows (utterances or segments) over them.

    ``labels`` (hard labels), ``targets`` (soft label distributions), ``weights`` (sample weights) and the
    word vectors of a lexical model are indexed by utterance; ``owner`` maps each row to its utterance.
    """

    store: MemoryFrames | StreamFrames
    utts: list[str]
    labels: torch.Tensor  # (utts,) long
    owner: torch.Tensor  # (rows,) long
    offset: torch.Tensor  # (rows,) frame offset of the row inside its utterance's kept window
    lengths: torch.Tensor  # (rows,) real frames of each row
    crop_start: torch.Tensor  # (utts,) first frame of each utterance's kept window
    kept: torch.Tensor  # (utts,) frames in each utterance's kept window (min(length, max_frames))
    width: int  # fixed row width (segments, pad fixed), or 0: a batch pads to its longest row
    fixed_pad: bool = False  # the model sees the padded zeros as frames (input.pad: fixed)
    scaling_mu: float = 0.0  # > 0: per-row min-max to [-1, 1] then mu-law with this mu
    targets: torch.Tensor | None = None  # (utts, C) float32
    weights: torch.Tensor | None = None  # (utts,) float32
    words: torch.Tensor | None = None  # (utts, K, D_w) float32 word vectors (lexical branch), zero-padded
    word_lengths: torch.Tensor | None = None  # (utts,) long

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def row_labels(self) -> torch.Tensor:
        return self.labels[self.owner]

    def batch(self, index: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` as (feats (B, W, D), lengths (B,)) on the store's device, padded with zeros.

        ``width`` (the rows' longest length, known on the host) spares reading it back from the device.
        """
        index = index.to(self.lengths.device)
        lengths = self.lengths[index]
        owner = self.owner[index]
        width = width or self.width or int(lengths.max())
        feats = self.store.gather(owner, self.crop_start[owner] + self.offset[index], lengths, width)
        if self.scaling_mu > 0:
            feats = minmax_mulaw(feats, lengths, self.scaling_mu)
        return feats, lengths.to(feats.device)

    def word_batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"words", "word_lengths"}`` of rows ``index`` (each segment gets its utterance's words), or {}."""
        if self.words is None or self.word_lengths is None:
            return {}
        owner = self.owner[index.to(self.owner.device)]
        word_lengths = self.word_lengths[owner]
        return {"words": self.words[owner, : int(word_lengths.max())], "word_lengths": word_lengths}

    def recrop(self, generator: torch.Generator, max_frames: int) -> FeatureSet:
        """A copy whose utterances keep freshly drawn random windows (a training epoch's random crop)."""
        starts = crop_starts(self.store.lengths.cpu(), max_frames, "random", generator)
        return replace(self, crop_start=starts.to(self.crop_start.device))

    def to(self, device: torch.device | str) -> FeatureSet:
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return replace(self, store=self.store.to(device), **moved)


def build_feature_set(
    store: MemoryFrames | StreamFrames,
    utts: list[str],
    labels: list[int],
    cfg: InputConfig,
    training: bool,
    seed: int = 0,
) -> FeatureSet:
    """Rows of ``utts`` under ``cfg``: crop to ``max_frames``, then segments (train or test shift) if asked.

    A random crop draws each utterance's window from ``seed`` for training rows (the loop redraws it every
    epoch) and keeps the centre window for validation and test rows.
    """
    lengths = store.lengths.cpu()
    mode = cfg.crop if training or cfg.crop != "random" else "center"
    generator = torch.Generator().manual_seed(seed) if mode == "random" else None
    crop_start = crop_starts(lengths, cfg.max_frames, mode, generator)
    kept = lengths.clamp(max=cfg.max_frames) if cfg.max_frames > 0 else lengths
    if cfg.segment_frames:
        shift = cfg.segment_shift_train if training else cfg.segment_shift_test
        owner, offset = segment_bounds(kept, cfg.segment_frames, shift)
        row_lengths = (kept[owner] - offset).clamp(max=cfg.segment_frames)
    else:
        owner, offset, row_lengths = torch.arange(len(kept)), torch.zeros_like(kept), kept
    return FeatureSet(
        store=store,
        utts=list(utts),
        labels=torch.tensor(labels, dtype=torch.long),
        owner=owner,
        offset=offset,
        lengths=row_lengths,
        crop_start=crop_start,
        kept=kept,
        width=cfg.width,
        fixed_pad=cfg.pad == "fixed",
        scaling_mu=cfg.segment_mu if cfg.segment_scaling == "minmax-mulaw" else 0.0,
    )


def attach_words(fset: FeatureSet, words: dict[str, np.ndarray]) -> FeatureSet:
    """Set ``fset.words`` / ``word_lengths`` from per-utterance (K, D_w) word vectors (lexical feature dir)."""
    arrays = [words[u] for u in fset.utts]
    lengths = np.array([len(x) for x in arrays], dtype=np.int64)
    padded = np.zeros((len(arrays), int(lengths.max()), arrays[0].shape[1]), dtype=np.float32)
    for row, x in enumerate(arrays):
        padded[row, : len(x)] = x
    fset.words, fset.word_lengths = torch.from_numpy(padded), torch.from_numpy(lengths)
    return fset
