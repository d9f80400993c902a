"""The order rows are drawn in during training: seeded per epoch, oversampled per class, length-bucketed.

Everything is seeded by (seed, epoch) so that epoch e does not depend on earlier epochs and a resumed run
draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import torch


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
