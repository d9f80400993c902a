"""Benchmark ``sertk infer`` on CPU: utterances/s over a folder of synthetic files, model loaded once.

Usage: ``python tools/bench_infer.py [--arch crnn-att|attn-pool] [--files 200] [--work DIR] [--batch-size 32]``

Writes ``--files`` synthetic 16 kHz wavs of 2-8 s (uniform, IEMOCAP's typical range; a harmonic tone
with vibrato plus noise) and a randomly initialised full-size model of the arch's canonical config
(``egs/iemocap/conf/<system>.yaml``; weights do not change the cost) as a best.pt, then times in one run:
  * batched: models loaded once, length-sorted batches of ``--batch-size`` files (what ``sertk infer`` does);
  * one at a time: models loaded once, batch size 1;
  * naive: load the model again for every file, one file at a time (the first ``--naive-files`` files).
It checks that the three give the same posteriors and prints utterances/s and the real-time factor.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from sertk.config import to_dict
from sertk.deploy.infer import Predictor, collect_inputs, run_inference
from sertk.deploy.package import load_models
from sertk.features import build_feature
from sertk.models import SYSTEMS, build_model
from sertk.train.config import load_experiment_config

RATE = 16000


def write_files(folder: Path, count: int, seed: int = 0) -> float:
    """``count`` synthetic wavs of 2-8 s; returns their total duration in seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = 0.0
    for index in range(count):
        seconds = rng.uniform(2.0, 8.0)
        t = np.arange(int(seconds * RATE)) / RATE
        f0 = rng.uniform(100, 250) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        wave = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6)) + 0.01 * rng.standard_normal(len(t))
        soundfile.write(folder / f"utt{index:04d}.wav", wave.astype(np.float32), RATE, subtype="PCM_16")
        total += len(t) / RATE
    return total


def write_model(fold: Path, arch: str) -> None:
    """best.pt of a randomly initialised full-size model of ``arch`` with its canonical input config."""
    conf = Path(__file__).resolve().parents[1] / "egs" / "iemocap" / "conf" / f"{SYSTEMS[arch]}.yaml"
    cfg = load_experiment_config(conf)
    feat_config: dict = {}
    extractor = build_feature(cfg.feat, feat_config)
    torch.manual_seed(0)
    model = build_model(arch, cfg.model, extractor.dim, 4)
    fold.mkdir(parents=True, exist_ok=True)
    info = {
        "model": model.state_dict(),
        "arch": arch,
        "model_config": cfg.model,
        "classes": ["neu", "hap", "ang", "sad"],
        "feat": cfg.feat,
        "feat_config": feat_config,
        "norm_mean": None,
        "norm_std": None,
        "input": to_dict(cfg.input),
        "loss": cfg.loss,
    }
    torch.save(info, fold / "best.pt")


def timed(run) -> tuple[list[dict], float]:
    start = time.perf_counter()
    records = run()
    return records, time.perf_counter() - start


def matrix(records: list[dict]) -> np.ndarray:
    return np.array([list(r["posteriors"].values()) for r in records])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="crnn-att", choices=sorted(SYSTEMS))
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--naive-files", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sertk_bench_infer"))
    args = parser.parse_args()

    seconds = write_files(args.work / "wavs", args.files)
    write_model(args.work / "exp" / "fold1", args.arch)
    items = collect_inputs([args.work / "wavs"])
    model = args.work / "exp" / "fold1"
    print(
        f"{args.arch}, {len(items)} files, {seconds / 60:.1f} min of audio, {torch.get_num_threads()} torch threads",
        flush=True,
    )

    def batched():
        return run_inference(Predictor(load_models(model), "cpu", args.batch_size), items, progress=False)

    def one_at_a_time():
        return run_inference(Predictor(load_models(model), "cpu", 1), items, progress=False)

    def naive():
        out = []
        for item in items[: args.naive_files]:
            out += Predictor(load_models(model), "cpu", 1).predict([item])
        return out

    batched()  # warm-up: page cache, allocator, oneDNN kernels
    rows = []
    for name, run, count in (
        (f"batched (batch {args.batch_size}, model loaded once)", batched, len(items)),
        ("one file at a time, model loaded once", one_at_a_time, len(items)),
        ("naive: reload the model for every file", naive, min(args.naive_files, len(items))),
    ):
        records, wall = timed(run)
        rows.append((name, records, wall, count))
    reference = matrix(rows[0][1])
    for name, records, wall, count in rows:
        delta = np.abs(matrix(records) - reference[: len(records)]).max()
        audio = seconds * count / len(items)
        print(
            f"{name:45s} {count / wall:7.1f} utt/s  RTF {wall / audio:.4f}  max |diff| {delta:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
