"""In-memory features -> padded batches: cropping, segmentation, normalisation, soft labels, samplers.

Every split of a fold becomes ONE padded float32 tensor (rows, T, D) built once, so a batch is a tensor
index. With whole utterances T is the longest (cropped) utterance and a batch is trimmed to its own longest
row; with segments every row is ``segment_frames`` long (shorter utterances give one zero-padded segment
whose length says how many frames are real). No length bucketing: with crops (crnn-att 750 frames) and
segments (attn-pool 200 frames) rows are of similar length, and one tensor keeps shuffling exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sertk.errors import SertkError


def crop_frames(feats: list[np.ndarray], max_frames: int, mode: str, seed: int = 0) -> list[np.ndarray]:
    """Cut every utterance to at most ``max_frames`` frames: keep the head, the centre or a seeded random window."""
    if max_frames <= 0:
        return feats
    rng = np.random.default_rng(seed)
    out = []
    for x in feats:
        excess = len(x) - max_frames
        if excess <= 0:
            out.append(x)
            continue
        start = {"head": 0, "center": excess // 2}.get(mode)
        if start is None:
            start = int(rng.integers(0, excess + 1))
        out.append(x[start : start + max_frames])
    return out


def segment_bounds(lengths: np.ndarray, segment_frames: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment (owner utterance, start frame) pairs: 1 + (L - S) // shift windows, one when L <= S.

    attention_pooling_cnn.txt §3: 2 s windows every 1 s (train) / 0.4 s (test); an utterance shorter than a
    window gives one window holding all its frames (zero-padded, its true length kept).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = 1 + np.maximum(lengths - segment_frames, 0) // shift
    owner = np.repeat(np.arange(len(lengths)), counts)
    first = np.cumsum(counts) - counts
    starts = (np.arange(counts.sum()) - first[owner]) * shift
    return owner, starts


@dataclass
class FeatureSet:
    """One split of a fold as padded tensors: rows are utterances or segments, ``owner`` maps row -> utterance.

    ``labels`` (utterance-level hard labels), ``targets`` (soft label distributions, or None) and
    ``weights`` (per-utterance sample weights, or None) are indexed by utterance, not by row.
    """

    feats: torch.Tensor  # (rows, T, D) float32, zero beyond each row's length
    lengths: torch.Tensor  # (rows,) long
    owner: torch.Tensor  # (rows,) long
    labels: torch.Tensor  # (utts,) long
    utts: list[str]
    targets: torch.Tensor | None = None  # (utts, C) float32
    weights: torch.Tensor | None = None  # (utts,) float32
    words: torch.Tensor | None = None  # (utts, K, D_w) float32 word vectors (lexical branch), zero-padded
    word_lengths: torch.Tensor | None = None  # (utts,) long

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def row_labels(self) -> torch.Tensor:
        return self.labels[self.owner]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index`` trimmed to their longest length (the model masks the rest)."""
        lengths = self.lengths[index]
        return self.feats[index, : int(lengths.max())], lengths

    def word_batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"words", "word_lengths"}`` of rows ``index`` (each segment gets its utterance's words), or {}."""
        if self.words is None or self.word_lengths is None:
            return {}
        owner = self.owner[index]
        word_lengths = self.word_lengths[owner]
        return {"words": self.words[owner, : int(word_lengths.max())], "word_lengths": word_lengths}

    def to(self, device: torch.device | str) -> FeatureSet:
        move = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return FeatureSet(**{**vars(self), **move})


def build_feature_set(
    feats: list[np.ndarray],
    labels: list[int],
    utts: list[str],
    segment_frames: int = 0,
    shift: int = 1,
    targets: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> FeatureSet:
    """Pad utterances (or their segments) into one (rows, T, D) tensor with a single gather, no per-row copy."""
    if not feats:
        raise SertkError("no utterances to build a batch set from")
    lengths = np.array([len(x) for x in feats], dtype=np.int64)
    if segment_frames:
        owner, starts = segment_bounds(lengths, segment_frames, shift)
        width = segment_frames
    else:
        owner, starts = np.arange(len(feats)), np.zeros(len(feats), dtype=np.int64)
        width = int(lengths.max())
    row_lengths = np.minimum(lengths[owner] - starts, width)
    # All frames end to end plus one zero frame that every padded position points at.
    offsets = np.cumsum(lengths) - lengths
    frames = np.concatenate([*feats, np.zeros((1, feats[0].shape[1]), dtype=np.float32)]).astype(np.float32)
    steps = np.arange(width)
    index = np.where(
        steps[None, :] < row_lengths[:, None],
        (offsets[owner] + starts)[:, None] + steps[None, :],
        len(frames) - 1,
    )
    return FeatureSet(
        feats=torch.from_numpy(frames[index]),
        lengths=torch.from_numpy(row_lengths),
        owner=torch.from_numpy(owner),
        labels=torch.tensor(labels, dtype=torch.long),
        utts=list(utts),
        targets=None if targets is None else torch.as_tensor(targets, dtype=torch.float32),
        weights=None if weights is None else torch.as_tensor(weights, dtype=torch.float32),
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


def norm_stats(
    feats: list[np.ndarray], select: list[bool] | None = None, scalar: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all frames of the selected utterances (float64 accumulation).

    ``select`` picks e.g. the neutral utterances of the train part (lstm_attention.txt §4.1). ``scalar``
    uses one mean and std over every value instead, broadcast to all dimensions (cnn_blstm_vtlp.txt Eq. 5:
    the spectrogram normalised by the training set's global mean and standard deviation). A dimension
    with zero variance gets std 1 so that normalising leaves it centred instead of dividing by zero.
    """
    chosen = [
        x
        for x, keep in zip(feats, select if select is not None else [True] * len(feats), strict=True)
        if keep
    ]
    if not chosen:
        raise SertkError("no utterances to compute normalisation statistics from")
    frames = np.concatenate(chosen).astype(np.float64)
    axis = None if scalar else 0
    mean = np.broadcast_to(frames.mean(axis=axis), frames.shape[1:]).copy()
    std = np.broadcast_to(frames.std(axis=axis), frames.shape[1:]).copy()
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def normalize_batch(
    feats: torch.Tensor, lengths: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None
) -> torch.Tensor:
    """(x - mean) / std on real frames; padded frames stay zero so they look the same to every model."""
    if mean is None or std is None:
        return feats
    mask = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]
    return ((feats - mean) / std) * mask[..., None]


def soft_labels(
    votes: list[str], hard: list[int], classes: list[str], class_map: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels and sample weights from raters' votes (cnn_blstm_vtlp.txt §3.3, Table 5).

    Each rater's vote (``neu,sad``) is split equally among its labels; labels are mapped to classes with
    ``class_map`` (a label absent from it counts as itself). The soft label is the vote mass on each class
    over the mass inside the classes; the weight is the share of the votes inside the classes. An utterance
    without votes keeps its one-hot hard label with weight 1.
    """
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(votes), len(classes)), dtype=np.float64)
    weights = np.ones(len(votes), dtype=np.float64)
    for row, (line, label) in enumerate(zip(votes, hard, strict=True)):
        raters = line.split()
        for rater in raters:
            names = [n for n in rater.split(",") if n]
            for name in names:
                cls = index.get(class_map.get(name, name))
                if cls is not None:
                    targets[row, cls] += 1.0 / len(names)
        inside = targets[row].sum()
        if inside > 0:
            weights[row] = inside / len(raters)
            targets[row] /= inside
        else:
            weights[row] = 0.0 if raters else 1.0
            targets[row, label] = 1.0
    return targets.astype(np.float32), weights.astype(np.float32)


def class_weights_balanced(labels: list[int], num_classes: int) -> torch.Tensor:
    """N_total / (N_classes * N_c) per class (lstm_attention.txt §4.1); an absent class gets weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct seed per (seed, epoch): shuffling and noise of epoch e do not depend on earlier epochs."""
    return (seed * 1_000_003 + epoch) % (2**63)


def epoch_order(
    row_labels: torch.Tensor, seed: int, epoch: int, oversample: torch.Tensor | None = None
) -> torch.Tensor:
    """The rows of one epoch, shuffled; with ``oversample`` (a factor per class) rows are drawn more often.

    A factor f repeats every row of the class floor(f) times plus once more with probability f - floor(f)
    (cnn_blstm_vtlp.txt §3.2: hap and ang x2); the data themselves are never copied.
    """
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    rows = torch.arange(len(row_labels))
    if oversample is not None:
        factor = oversample[row_labels.cpu()]
        whole = factor.floor().long()
        extra = torch.rand(len(rows), generator=gen) < (factor - whole)
        rows = torch.repeat_interleave(rows, whole + extra.long())
    return rows[torch.randperm(len(rows), generator=gen)]


def length_batches(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, seed: int, epoch: int, pool: int = 16
) -> list[torch.Tensor]:
    """Split one epoch's shuffled ``order`` into batches of similar lengths, in random batch order.

    Rows are sorted by length within consecutive pools of ``pool`` batches, so a batch pads to a length
    close to its own rows' rather than to the longest utterance of the set (on IEMOCAP-like durations this
    removes about a third of the frames a model sees); the shuffle and the batch order stay seeded by
    (seed, epoch), so resuming stays exact.
    """
    row_lengths = lengths.cpu()[order.cpu()]
    batches: list[torch.Tensor] = []
    for chunk, chunk_lengths in zip(
        order.split(batch_size * pool), row_lengths.split(batch_size * pool), strict=True
    ):
        batches.extend(chunk[torch.argsort(chunk_lengths, stable=True)].split(batch_size))
    gen = torch.Generator().manual_seed(epoch_seed(seed + 3, epoch))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
