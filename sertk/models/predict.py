"""Running a model over a FeatureSet: precision, batched prediction, segment averaging, test-time copies.

Validation in the training loop, ``sertk eval`` and ``sertk infer`` all predict through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sertk.errors import SertkError
from sertk.inputs.batch import Normalizer, Transform, model_batch
from sertk.inputs.featureset import FeatureSet

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for ``precision``: fp32 = none; bf16 on CPU or CUDA; fp16 on CUDA only."""
    if precision not in PRECISIONS:
        raise SertkError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise SertkError("precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_rows(
    model: torch.nn.Module,
    fset: FeatureSet,
    device: torch.device,
    batch_size: int,
    normalizer: Normalizer | None = None,
    transform: Transform | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (rows, C) of every row of ``fset``, in row order, on ``device``.

    Rows go through the model sorted by length, so each batch pads only to its own longest row.
    """
    model.eval()
    out = []
    host_lengths = fset.lengths.cpu()  # batch widths from the host: no read-back from the device per batch
    by_length = torch.argsort(host_lengths, stable=True)
    for index in by_length.split(batch_size):
        width = fset.width or int(host_lengths[index].max())
        feats, lengths, extra = model_batch(fset, index, device, normalizer, transform, width=width)
        with autocast(device, precision):
            out.append(model(feats, lengths, **extra).float())
    sorted_logits = torch.cat(out)
    logits = torch.empty_like(sorted_logits)
    logits[by_length.to(logits.device)] = sorted_logits
    return logits


def segment_average(row_scores: torch.Tensor, owner: torch.Tensor, num_utts: int) -> torch.Tensor:
    """Mean of each utterance's row scores (attention_pooling_cnn.txt §3.3: utterance score = mean of segments)."""
    owner = owner.to(row_scores.device)
    total = torch.zeros(num_utts, row_scores.shape[1], device=row_scores.device).index_add_(
        0, owner, row_scores
    )
    count = torch.zeros(num_utts, device=row_scores.device).index_add_(
        0, owner, torch.ones_like(owner, dtype=torch.float32)
    )
    return total / count[:, None]


@dataclass
class Posteriors:
    """Per-utterance scores: ``scores`` (mean softmax, or vote shares when voting) and the mean ``softmax``.

    ``pred`` is the argmax of ``scores``; with votes, ties are broken by the mean softmax of the copies
    (cnn_blstm_vtlp.txt §3.4 votes; Table 6 ranks choices by the softmax).
    """

    scores: torch.Tensor  # (utts, C)
    softmax: torch.Tensor  # (utts, C)
    voted: bool

    @property
    def pred(self) -> torch.Tensor:
        if not self.voted:
            return self.scores.argmax(dim=-1)
        top = self.scores == self.scores.max(dim=-1, keepdim=True).values
        return self.softmax.masked_fill(~top, -1.0).argmax(dim=-1)


def utterance_posteriors(
    model: torch.nn.Module,
    fset: FeatureSet,
    device: torch.device,
    batch_size: int,
    normalizer: Normalizer | None = None,
    transforms: Sequence[Transform] | None = None,
    vote: bool = False,
) -> Posteriors:
    """Softmax per row, averaged over each utterance's segments, then over the test-time copies.

    ``vote`` gives each copy one vote for its argmax class and scores utterances by the vote shares
    (cnn_blstm_vtlp.txt §3.4: majority vote over 11 VTLP copies); the mean softmax is kept beside them.
    No transforms = the identity alone. Always in fp32: test scores do not depend on training precision.
    """
    num_utts = len(fset.utts)
    copies = []
    for transform in transforms or [None]:
        rows = predict_rows(model, fset, device, batch_size, normalizer, transform).softmax(-1)
        copies.append(segment_average(rows, fset.owner, num_utts))
    softmax = torch.stack(copies).mean(dim=0).cpu()
    if not vote:
        return Posteriors(softmax, softmax, voted=False)
    num_classes = softmax.shape[1]
    votes = torch.stack([torch.nn.functional.one_hot(c.argmax(-1), num_classes).float() for c in copies])
    return Posteriors(votes.mean(dim=0).cpu(), softmax, voted=True)
