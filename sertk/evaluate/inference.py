"""Inference over a fold's test set -> posteriors.tsv, with segment averaging and test-time augmentation hooks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from sertk.augment.vtlp import vtlp_tta_transforms
from sertk.config import from_dict
from sertk.data.datadir import read_data_dir
from sertk.data.folds import read_folds, select_folds
from sertk.errors import SertkError
from sertk.evaluate.metrics import summarize
from sertk.features.io import load_features
from sertk.models import build_model
from sertk.train.config import InputConfig
from sertk.train.dataset import FeatureSet, attach_words, build_feature_set, crop_frames, normalize_batch
from sertk.utils import atomic_write_text, console, read_experiment

# A test-time transform maps a raw (un-normalised) padded batch to another: (feats, lengths) -> (feats, lengths).
Transform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def resolve_device(device: str) -> torch.device:
    """``auto`` = cuda when available, else cpu; an unavailable cuda is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SertkError(f"--device {device}: CUDA is not available on this machine")
    if not device.startswith(("cpu", "cuda")):
        raise SertkError(f"--device {device}: expected auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def predict_rows(
    model: torch.nn.Module,
    fset: FeatureSet,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    device: torch.device,
    batch_size: int,
    transform: Transform | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Logits (rows, C) of every row of ``fset``, in row order, on ``device``.

    Rows go through the model sorted by length, so each batch pads only to its own longest row.
    """
    model.eval()
    out = []
    by_length = torch.argsort(fset.lengths.cpu(), stable=True)
    for index in by_length.split(batch_size):
        feats, lengths = fset.batch(index.to(fset.lengths.device))
        feats, lengths = feats.to(device, non_blocking=True), lengths.to(device)
        extra = {k: v.to(device) for k, v in fset.word_batch(index.to(fset.lengths.device)).items()}
        if transform is not None:
            feats, lengths = transform(feats, lengths)
        feats = normalize_batch(feats, lengths, mean, std)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
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


def utterance_posteriors(
    model: torch.nn.Module,
    fset: FeatureSet,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    device: torch.device,
    batch_size: int,
    transforms: Sequence[Transform] | None = None,
    combine: str = "mean",
    amp: bool = False,
) -> torch.Tensor:
    """Posteriors (utts, C): softmax per row, averaged over each utterance's segments, then over transforms.

    ``combine="mean"`` averages the transforms' posteriors; ``"vote"`` gives each transform one vote for its
    argmax class and returns the vote shares (cnn_blstm_vtlp.txt §3.4: majority vote over 11 VTLP copies).
    No transforms = the identity alone.
    """
    if combine not in ("mean", "vote"):
        raise SertkError(f"combine must be mean or vote, got {combine!r}")
    num_utts = len(fset.utts)
    scores = []
    for transform in transforms or [None]:
        rows = predict_rows(model, fset, mean, std, device, batch_size, transform, amp).softmax(dim=-1)
        posteriors = segment_average(rows, fset.owner, num_utts)
        if combine == "vote":
            posteriors = torch.nn.functional.one_hot(posteriors.argmax(-1), posteriors.shape[1]).float()
        scores.append(posteriors)
    return torch.stack(scores).mean(dim=0).cpu()


def write_posteriors(
    path: Path, utts: list[str], labels: list[int], posteriors: np.ndarray, classes: list[str]
) -> None:
    """posteriors.tsv: ``utt label pred <class...>`` (names, 6 decimals), one line per utterance, atomically."""
    preds = posteriors.argmax(axis=1)
    lines = ["\t".join(["utt", "label", "pred", *classes])]
    for utt, label, pred, row in zip(utts, labels, preds, posteriors, strict=True):
        lines.append("\t".join([utt, classes[label], classes[pred], *(f"{p:.6f}" for p in row)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as a plain dict (``weights_only=True``), with a one-line error when missing or corrupt."""
    if not path.is_file():
        raise SertkError(f"{path}: checkpoint not found (run stage 5 (sertk train) first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, runtime) for a damaged file
        raise SertkError(f"{path}: cannot load checkpoint ({type(err).__name__}: {err})") from None


def prepare_split(
    feats: dict[str, np.ndarray],
    utts: list[str],
    labels: list[int],
    input_cfg: InputConfig,
    shift: int,
    seed: int = 0,
) -> FeatureSet:
    """Crop and pad (or segment) the utterances ``utts`` of one split into a FeatureSet."""
    arrays = crop_frames([feats[u] for u in utts], input_cfg.max_frames, input_cfg.crop, seed)
    return build_feature_set(arrays, labels, utts, input_cfg.segment_frames, shift)


def evaluate(
    exp: Path,
    fold: str = "all",
    device: str = "auto",
    checkpoint: str = "best.pt",
    transforms: Sequence[Transform] | None = None,
    combine: str = "mean",
    batch_size: int = 64,
    tta: str | None = None,
) -> list[dict]:
    """Write ``<exp>/<fold>/posteriors.tsv`` for each selected fold's test set; return per-fold {name, n, wa, ua}.

    ``tta``: ``vtlp`` replaces ``transforms``/``combine`` by the 11 VTLP copies and a majority vote
    (cnn_blstm_vtlp.txt §2), ``none`` keeps them, None takes each fold's ``input.tta`` from its checkpoint.
    """
    if tta not in (None, "none", "vtlp"):
        raise SertkError(f"--tta {tta}: expected none or vtlp")
    exp = Path(exp)
    info = read_experiment(exp)
    data = read_data_dir(info["data"])
    dev = resolve_device(device)
    results = []
    for spec in select_folds(read_folds(Path(info["folds"]), data), fold):
        ckpt = load_checkpoint(exp / spec["name"] / checkpoint)
        classes = list(ckpt["classes"])
        if classes != data.classes:
            raise SertkError(
                f"{exp / spec['name'] / checkpoint}: classes {classes} differ from {data.path}'s {data.classes}"
            )
        input_cfg = from_dict(InputConfig, ckpt["input"], where=f"{exp / spec['name'] / checkpoint}: input")
        utts = list(spec["test"])
        labels = data.labels(utts)
        feats = load_features(Path(info["feats"]), utts)
        shift = input_cfg.segment_shift_test
        fset = prepare_split(feats, utts, labels, input_cfg, shift)
        if info.get("lexical_feats"):
            attach_words(fset, load_features(Path(info["lexical_feats"]), utts))
        fold_transforms, fold_combine = transforms, combine
        if (input_cfg.tta if tta is None else tta) == "vtlp":
            fold_transforms, fold_combine = vtlp_tta_transforms(boundary=input_cfg.vtlp_boundary), "vote"
        model = build_model(ckpt["arch"], ckpt["model_config"], fset.feats.shape[2], len(classes))
        model.load_state_dict(ckpt["model"])
        model.to(dev)
        mean = None if ckpt["norm_mean"] is None else ckpt["norm_mean"].to(dev)
        std = None if ckpt["norm_std"] is None else ckpt["norm_std"].to(dev)
        posteriors = utterance_posteriors(
            model, fset, mean, std, dev, batch_size, fold_transforms, fold_combine
        ).numpy()
        write_posteriors(exp / spec["name"] / "posteriors.tsv", utts, labels, posteriors, classes)
        scores = summarize(labels, posteriors.argmax(axis=1), len(classes))
        results.append({"name": spec["name"], "n": scores["n"], "wa": scores["wa"], "ua": scores["ua"]})
        console.print(
            f"{spec['name']}: {scores['n']} test utterances, WA {scores['wa']:.4f} UA {scores['ua']:.4f}"
        )
    return results
