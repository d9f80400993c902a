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


def rows_per_batch(model: torch.nn.Module, device: torch.device, batch_size: int, copies: int) -> int:
    """Rows per model batch: ``batch_size`` model rows shared by each row's ``copies``, capped on CPU.

    A model may set ``cpu_batch_rows``: the most model rows per batch worth running on a CPU. Conv stacks
    whose maps outgrow the cores' caches run fastest a row at a time (``tools/bench_infer.py``).
    """
    cap = getattr(model, "cpu_batch_rows", None) if device.type == "cpu" else None
    rows = batch_size if cap is None else min(batch_size, cap)
    return max(1, rows // copies)


@torch.no_grad()
def predict_rows(
    model: torch.nn.Module,
    fset: FeatureSet,
    device: torch.device,
    batch_size: int,
    normalizer: Normalizer | None = None,
    transforms: Sequence[Transform | None] = (None,),
    precision: str = "fp32",
) -> torch.Tensor:
    """Logits (copies, rows, C) of every row of ``fset`` under each of ``transforms``, in row order, on ``device``.

    Rows go through the model sorted by length, so each batch pads only to its own longest row, and a
    batch holds every copy of its rows (a row's copies share its length: they pad nothing).
    """
    model.eval()
    out = []
    host_lengths = fset.lengths.cpu()  # batch widths from the host: no read-back from the device per batch
    by_length = torch.argsort(host_lengths, stable=True)
    for index in by_length.split(rows_per_batch(model, device, batch_size, len(transforms))):
        width = fset.width or int(host_lengths[index].max())
        parts = [model_batch(fset, index, device, normalizer, t, width=width) for t in transforms]
        feats, lengths = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        extra = {key: torch.cat([p[2][key] for p in parts]) for key in parts[0][2]}
        with autocast(device, precision):
            logits = model(feats, lengths, **extra).float()
        out.append(logits.view(len(transforms), len(index), -1))
    sorted_logits = torch.cat(out, dim=1)
    logits = torch.empty_like(sorted_logits)
    logits[:, by_length.to(logits.device)] = sorted_logits
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
    rows = predict_rows(model, fset, device, batch_size, normalizer, transforms or [None]).softmax(-1)
    copies = [segment_average(copy, fset.owner, num_utts) for copy in rows]
    softmax = torch.stack(copies).mean(dim=0).cpu()
    if not vote:
        return Posteriors(softmax, softmax, voted=False)
    num_classes = softmax.shape[1]
    votes = torch.stack([torch.nn.functional.one_hot(c.argmax(-1), num_classes).float() for c in copies])
    return Posteriors(votes.mean(dim=0).cpu(), softmax, voted=True)
