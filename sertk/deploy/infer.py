"""``sertk infer``: emotion posteriors for audio files with one model or an ensemble of fold models.

The path of a file: header -> (sorted by length) chunks of ``batch_size`` files -> read, downmix, resample
and compute features as one padded batch (``sertk.features.dump.compute_batch``) -> per model: crop or
segment as in training (``sertk.inputs.featureset.build_feature_set``), normalise, forward, softmax, average segments
(``utterance_posteriors``) -> mean over the ensemble's models -> one record per file, in input order.

Windows (``window``/``hop`` seconds) add a per-window emotion track: each window (W s every H s, one
window for a file shorter than W) is scored like a short utterance of its own, all windows of a chunk in
one batch. For segment-trained models (attn-pool: 2 s segments every ``segment_shift_test`` frames) each
window is itself cut into the model's segments and their posteriors averaged, so a 3 s window gives the
mean of the segments inside it; a window shorter than one segment is one zero-padded segment. The file's
own label always comes from the whole file (exactly what ``sertk eval`` computes for it), not from the
windows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk.augment.vtlp import tta_copies
from sertk.data.datadir import read_table
from sertk.deploy.package import load_models
from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.audio import audio_info
from sertk.features.base import FeatureExtractor
from sertk.features.dump import compute_batch
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.models.predict import utterance_posteriors
from sertk.models.trained import TrainedModel
from sertk.utils import atomic_path, console, resolve_device

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".sph")
FORMATS = ("jsonl", "tsv")


def collect_inputs(inputs: Iterable[str | Path]) -> list[tuple[str, str]]:
    """(utt id, audio path) for audio files, directories (searched recursively) and wav.scp files.

    Ids: the scp's ids; a file's stem; inside a directory the path relative to it without suffix. A file
    given twice under one id keeps the first; two different files with one id get their paths as ids.
    """
    items: list[tuple[str, str]] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise SertkError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this directory")
            items += [(p.relative_to(path).with_suffix("").as_posix(), str(p)) for p in found]
        elif path.suffix == ".scp":
            table = read_table(path)
            if not table:
                raise SertkError(f"{path}: empty wav.scp")
            # Kaldi pipes ("sox x.wav -t wav - |") are not run: such an entry gets an error record like any
            # unreadable path.
            items += list(table.items())
        elif path.is_file():
            items.append((path.stem, str(path)))
        else:
            raise SertkError(f"{path}: no such file or directory")
    seen: dict[str, str] = {}
    unique = []
    for utt, wav in items:
        if seen.get(utt) == wav:
            continue
        if utt in seen:
            utt = wav
        seen[utt] = wav
        unique.append((utt, wav))
    return unique


@dataclass
class Member:
    """One model of the ensemble, built once on the device."""

    package: TrainedModel
    model: torch.nn.Module


def frames_per_second(extractor: FeatureExtractor) -> int:
    """Frame rate of a feature type, from its own frame count over one extra second of audio."""
    rate = extractor.sample_rate
    return extractor.num_frames(101 * rate) - extractor.num_frames(100 * rate)


def window_starts(num_frames: int, window: int, hop: int) -> np.ndarray:
    """Start frames of windows of ``window`` frames every ``hop``; one window when the file is shorter."""
    return np.arange(0, max(num_frames - window, 0) + 1, hop)


class Predictor:
    """Models and feature extractors loaded once; ``predict`` turns (utt, path) items into records."""

    def __init__(
        self,
        packages: list[TrainedModel],
        device: str = "auto",
        batch_size: int = 32,
        window: float | None = None,
        hop: float | None = None,
    ) -> None:
        if batch_size < 1:
            raise SertkError(f"--batch-size must be >= 1, got {batch_size}")
        if (window is None) != (hop is None) or (window is not None and (window <= 0 or hop <= 0)):
            raise SertkError("--window and --hop go together and must be positive seconds")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.window, self.hop = window, hop
        self.classes = packages[0].classes
        # Models sharing a feature config (the folds of one system) share one feature computation.
        self.groups: dict[str, tuple[FeatureExtractor, list[Member]]] = {}
        for package in packages:
            key = json.dumps([package.feat, package.feat_config], sort_keys=True)
            if key not in self.groups:
                self.groups[key] = (build_feature(package.feat, package.feat_config), [])
            extractor, members = self.groups[key]
            if extractor.dim != package.input_dim:
                raise SertkError(
                    f"{package.source}: model expects {package.input_dim}-dim features, {package.feat} gives {extractor.dim}"
                )
            members.append(Member(package, package.build(self.device)))
        self.sample_rate = next(iter(self.groups.values()))[0].sample_rate

    @property
    def num_models(self) -> int:
        return sum(len(members) for _, members in self.groups.values())

    def _posteriors(self, member: Member, arrays: list[np.ndarray]) -> np.ndarray:
        """Utterance posteriors (N, C) of one model for raw feature arrays, as ``sertk eval`` computes them."""
        utts = [str(i) for i in range(len(arrays))]
        fset = build_feature_set(
            MemoryFrames(arrays), utts, [0] * len(utts), member.package.input, training=False
        )
        # The model's test-time copies, as sertk eval scores them (cnn_blstm_vtlp.txt: 11 VTLP copies, vote).
        vote = member.package.input.tta == "vtlp"
        transforms = tta_copies(member.package.input.tta, member.package.input.vtlp_boundary)
        post = utterance_posteriors(
            member.model, fset, self.device, self.batch_size, member.package.normalizer, transforms, vote=vote
        )
        return post.scores.numpy()

    @torch.inference_mode()
    def predict(self, items: list[tuple[str, str]]) -> list[dict]:
        """One record per item, in order: {utt, path, label, posteriors[, windows]} or {utt, path, error}."""
        errors: dict[str, str] = {}
        scores: dict[str, np.ndarray] = {}
        tracks: dict[str, list[dict]] = {}
        for extractor, members in self.groups.values():
            todo = [(utt, path) for utt, path in items if utt not in errors]
            batch = compute_batch(extractor, todo, self.device)
            ok = {utt for utt, _ in batch["feats"]}
            # compute_batch reports failures in item order, one message each.
            for (utt, _), message in zip([i for i in todo if i[0] not in ok], batch["errors"], strict=True):
                errors[utt] = message
            if not batch["feats"]:
                continue
            utts = [utt for utt, _ in batch["feats"]]
            arrays = [x for _, x in batch["feats"]]
            windowed = self._windows(extractor, arrays) if self.window is not None else None
            window_scores = 0.0
            for member in members:
                post = self._posteriors(member, arrays)
                for utt, row in zip(utts, post, strict=True):
                    scores[utt] = scores.get(utt, 0.0) + row / self.num_models
                if windowed is not None:
                    window_scores = window_scores + self._posteriors(member, windowed[2]) / self.num_models
            if windowed is not None:
                self._add_tracks(tracks, utts, windowed[0], windowed[1], window_scores)
        return [self._record(utt, path, errors, scores, tracks) for utt, path in items]

    @staticmethod
    def _add_tracks(tracks: dict, utts: list[str], owner: np.ndarray, bounds: list, window_scores) -> None:
        """Add one feature group's window posteriors to each utterance's track."""
        for index, utt in enumerate(utts):
            rows = np.flatnonzero(owner == index)
            track = tracks.setdefault(utt, [])
            if not track:
                track += [{"start": bounds[r][0], "end": bounds[r][1], "posteriors": 0.0} for r in rows]
            if len(track) != len(rows):
                raise SertkError("ensemble members with different frame rates cannot share one window track")
            for window, r in zip(track, rows, strict=True):
                window["posteriors"] = window["posteriors"] + window_scores[r]

    def _windows(self, extractor: FeatureExtractor, arrays: list[np.ndarray]):
        """(owner utterance per window, (start s, end s) per window, window feature arrays)."""
        fps = frames_per_second(extractor)
        size, shift = max(1, round(self.window * fps)), max(1, round(self.hop * fps))
        owner, bounds, pieces = [], [], []
        for index, x in enumerate(arrays):
            for start in window_starts(len(x), size, shift):
                piece = x[start : start + size]
                owner.append(index)
                bounds.append((round(start / fps, 3), round((start + len(piece)) / fps, 3)))
                pieces.append(piece)
        return np.array(owner), bounds, pieces

    def _record(self, utt: str, path: str, errors: dict, scores: dict, tracks: dict) -> dict:
        if utt in errors or utt not in scores:
            return {"utt": utt, "path": path, "error": errors.get(utt, f"{path}: no features")}
        record = {"utt": utt, "path": path, **self._scored(scores[utt])}
        if self.window is not None:
            record["windows"] = [
                {"start": w["start"], "end": w["end"], **self._scored(w["posteriors"])} for w in tracks[utt]
            ]
        return record

    def _scored(self, posteriors: np.ndarray) -> dict:
        return {
            "label": self.classes[int(np.argmax(posteriors))],
            "posteriors": {c: round(float(p), 6) for c, p in zip(self.classes, posteriors, strict=True)},
        }


def length_chunks(
    items: list[tuple[str, str]], sample_rate: int, size: int
) -> tuple[list[list[int]], dict[int, str]]:
    """Item indices from shortest to longest in chunks of ``size`` (so a chunk pads little), and header
    errors by index."""
    lengths, errors = {}, {}
    for index, (_, path) in enumerate(items):
        try:
            lengths[index] = audio_info(path, sample_rate).target_samples
        except SertkError as err:
            errors[index] = str(err)
    order = sorted(lengths, key=lengths.get)
    return [order[first : first + size] for first in range(0, len(order), size)], errors


def format_record(record: dict, fmt: str, classes: list[str]) -> list[str]:
    """A record as one JSON line, or TSV rows ``utt kind start end label <classes...> error``."""
    if fmt == "jsonl":
        return [json.dumps(record)]
    if "error" in record:
        return ["\t".join([record["utt"], "error", "", "", "", *[""] * len(classes), record["error"]])]

    def row(kind: str, start: str, end: str, scored: dict) -> str:
        values = [f"{scored['posteriors'][c]:.6f}" for c in classes]
        return "\t".join([record["utt"], kind, start, end, scored["label"], *values, ""])

    rows = [row("utt", "", "", record)]
    rows += [row("window", f"{w['start']:.3f}", f"{w['end']:.3f}", w) for w in record.get("windows", [])]
    return rows


def tsv_header(classes: list[str]) -> str:
    return "\t".join(["utt", "kind", "start", "end", "label", *classes, "error"])


def run_inference(predictor: Predictor, items: list[tuple[str, str]], progress: bool = True) -> list[dict]:
    """Records for ``items`` (input order) in length-sorted chunks of ``predictor.batch_size`` files."""
    chunks, header_errors = length_chunks(items, predictor.sample_rate, predictor.batch_size)
    records: list[dict | None] = [None] * len(items)
    for index, message in header_errors.items():
        records[index] = {"utt": items[index][0], "path": items[index][1], "error": message}
    columns = (TextColumn("infer"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("infer", total=len(items))
        bar.advance(task, len(header_errors))
        for chunk in chunks:
            for index, record in zip(chunk, predictor.predict([items[i] for i in chunk]), strict=True):
                records[index] = record
            bar.advance(task, len(chunk))
    return records


@dataclass
class InferOptions:
    """The options of ``sertk infer`` beside the model and the inputs."""

    fmt: str = "jsonl"
    window: float | None = None
    hop: float | None = None
    batch_size: int = 32
    device: str = "auto"


def infer(
    model: Path,
    inputs: list[Path],
    out: Path | None = None,
    opts: InferOptions | None = None,
    stream: TextIO | None = None,
) -> list[dict]:
    """``sertk infer``: records for every input file, written to ``out`` (atomically) or ``stream`` (stdout)."""
    opts = opts or InferOptions()
    if opts.fmt not in FORMATS:
        raise SertkError(f"--format {opts.fmt}: expected one of {', '.join(FORMATS)}")
    if out is not None and Path(out).is_dir():
        raise SertkError(
            f"--out {out}: is a directory; give a file to write (e.g. {Path(out) / 'preds.jsonl'})"
        )
    packages = load_models(model)
    items = collect_inputs(inputs)
    predictor = Predictor(packages, opts.device, opts.batch_size, opts.window, opts.hop)
    records = run_inference(predictor, items)
    lines = [tsv_header(predictor.classes)] if opts.fmt == "tsv" else []
    for record in records:
        lines += format_record(record, opts.fmt, predictor.classes)
    text = "\n".join(lines) + "\n"
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(text)
    else:
        (stream or sys.stdout).write(text)
    failed = sum("error" in r for r in records)
    console.print(
        f"infer: {len(records) - failed} file(s) scored, {failed} error(s), {predictor.num_models} model(s)"
        + (f" -> {out}" if out is not None else "")
    )
    return records
