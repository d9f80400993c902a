"""``sertk infer`` against each model's compute limit: counted FLOPs per audio second, the cores' sustained rate.

Usage: ``python tools/bench_infer.py [--archs crnn-att attn-pool ...] [--files 100] [--whole-process]``

Writes ``--files`` synthetic 16 kHz wavs of 2-8 s (uniform, IEMOCAP's typical range; a harmonic tone
with vibrato plus noise) and, per arch, a randomly initialised full-size model of its canonical config
(``egs/iemocap/conf/<system>.yaml`` and ``conf/feats/<feat>.yaml``; weights do not change the cost) as a
best.pt. Then, per arch, in one run:
  * FLOPs per audio second: the model's forward (matmuls, convs, LSTMs; ``torch.utils.flop_counter``) on
    ``--count-files`` of the files one at a time, inputs cut as inference cuts them (crops, fixed padding,
    attn-pool's 2 s segments every 0.4 s, each of cnn-blstm's 11 VTLP test-time copies), over their duration;
  * sustained GFLOP/s of these cores, measured just before: a float32 matmul and a channels-last 3x3 conv of
    the models' layer sizes with ``torch.get_num_threads()`` threads, best of 3 windows; the better one sets
    the limit;
  * the limit: real-time factor floor = FLOPs per audio second / sustained FLOP/s;
  * achieved: ``run_inference`` (what ``sertk infer`` runs: length-sorted chunks, features batched) with the
    model loaded once, median of ``--repeats``, and the feature half of it alone (the rest is the model);
    start-up (model load) reported apart; references in the same process on ``--naive-files`` files: one
    file at a time, and naive (the model reloaded per file); all must give the same posteriors;
  * ``--whole-process``: ``sertk infer`` as a subprocess over all files and over one file (start-up:
    interpreter, imports, model load), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.flop_counter import FlopCounterMode

from sertk.augment.vtlp import tta_copies
from sertk.config import to_dict
from sertk.deploy.infer import Predictor, collect_inputs, length_chunks, run_inference
from sertk.deploy.package import load_models
from sertk.features import build_feature
from sertk.features.audio import audio_info
from sertk.features.dump import compute_batch
from sertk.inputs.batch import model_batch
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.models import SYSTEMS, build_model
from sertk.train.config import load_experiment_config
from sertk.utils import reuse_freed_memory

RATE = 16000
ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "iemocap"
ARCHS = ("crnn-att", "attn-pool", "cnn-blstm", "lstm-attn", "rlc")  # ssl-pool needs an SSL checkpoint


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
    cfg = load_experiment_config(RECIPE / "conf" / f"{SYSTEMS[arch]}.yaml")
    feat_config = to_dict(build_feature(cfg.feat, RECIPE / "conf" / "feats" / f"{cfg.feat}.yaml").cfg)
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
        "input_dim": extractor.dim,
        "norm_mean": None,
        "norm_std": None,
        "input": to_dict(cfg.input),
        "loss": cfg.loss,
    }
    torch.save(info, fold / "best.pt")


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (a multiply-add = 2) of the aten matmuls, convs and attention that ``run`` executes.

    oneDNN's fused CPU LSTM is invisible to the counter, so oneDNN is off while counting: the LSTM then
    runs as the matmuls it is (the same arithmetic).
    """
    with (
        torch.backends.mkldnn.flags(enabled=False),
        torch.no_grad(),
        FlopCounterMode(display=False) as counter,
    ):
        run()
    return counter.get_total_flops()


def flops_per_audio_second(predictor: Predictor, items: list[tuple[str, str]]) -> float:
    """The model's FLOPs on ``items`` scored one row at a time, cut as inference cuts them, per audio second."""
    extractor, members = next(iter(predictor.groups.values()))
    member = members[0]
    member.model.eval()
    flops, seconds = 0, 0.0
    # Test-time copies (cnn-blstm's 11 VTLP warps) keep the shapes: each costs one forward of the row.
    copies = len(tta_copies(member.package.input.tta) or [None])
    for item in items:
        feats = compute_batch(extractor, [item], predictor.device)["feats"][0][1]
        fset = build_feature_set(MemoryFrames([feats]), ["u"], [0], member.package.input, training=False)
        for row in range(len(fset.lengths)):
            x, lengths, extra = model_batch(
                fset, torch.tensor([row]), predictor.device, member.package.normalizer
            )
            forward = count_flops(lambda x=x, lengths=lengths, extra=extra: member.model(x, lengths, **extra))
            flops += copies * forward
        seconds += audio_info(item[1], RATE).target_samples / RATE
    return flops / seconds


def sustained_gflops(seconds: float = 0.4, windows: int = 3) -> dict[str, float]:
    """GFLOP/s of a float32 (2048 x 512) @ (512 x 512) matmul and of a channels-last 3x3 conv, 64 -> 64
    channels on 4 x 40 x 200 (the layout inference runs convs in): the best of ``windows`` windows of
    ``seconds`` each, so a clock dip or a neighbour's burst does not lower the limit's denominator."""
    a, b = torch.randn(2048, 512), torch.randn(512, 512)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    image = torch.randn(4, 64, 40, 200).contiguous(memory_format=torch.channels_last)
    kernels = {
        "matmul": (lambda: a @ b, 2 * 2048 * 512 * 512),
        "conv": (lambda: conv(image), 2 * 4 * 64 * 64 * 9 * 40 * 200),
    }
    rates = {}
    with torch.inference_mode():
        for name, (run, flops) in kernels.items():
            run()
            best = 0.0
            for _ in range(windows):
                count, tic = 0, time.perf_counter()
                while time.perf_counter() - tic < seconds:
                    run()
                    count += 1
                best = max(best, flops * count / (time.perf_counter() - tic) / 1e9)
            rates[name] = best
    return rates


def features_seconds(predictor: Predictor, items: list[tuple[str, str]]) -> float:
    """Wall seconds of the feature half of ``run_inference`` alone: the same length-sorted chunks."""
    extractor = next(iter(predictor.groups.values()))[0]
    chunks, _ = length_chunks(items, predictor.sample_rate, predictor.batch_size)
    tic = time.perf_counter()
    for chunk in chunks:
        compute_batch(extractor, [items[i] for i in chunk], predictor.device)
    return time.perf_counter() - tic


def matrix(records: list[dict]) -> np.ndarray:
    return np.array([list(r["posteriors"].values()) for r in records])


def timed(run: Callable[[], object]) -> tuple[object, float]:
    tic = time.perf_counter()
    result = run()
    return result, time.perf_counter() - tic


def whole_process(model: Path, wavs: list[str], out: Path, repeats: int) -> float:
    """Median wall seconds of ``sertk infer MODEL WAVS`` as a fresh process (interpreter, imports, model load)."""
    command = [
        sys.executable,
        "-m",
        "sertk.cli",
        "infer",
        str(model),
        *wavs,
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    walls = []
    for _ in range(repeats):
        tic = time.perf_counter()
        env = {"PYTHONPATH": str(ROOT), "PATH": "", "SERTK_MALLOC": os.environ.get("SERTK_MALLOC", "glibc")}
        subprocess.run(command, check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - tic)
    return statistics.median(walls)


def bench_arch(arch: str, args, items: list[tuple[str, str]], seconds: float) -> None:
    model = args.work / "exp" / arch / "fold1"
    write_model(model, arch)
    packages, load_s = timed(lambda: load_models(model))
    predictor, build_s = timed(lambda: Predictor(packages, "cpu", args.batch_size))
    step = max(1, len(items) // args.count_files)
    per_audio_s = flops_per_audio_second(predictor, items[::step][: args.count_files])
    rates = sustained_gflops()
    limit = per_audio_s / (max(rates.values()) * 1e9)
    run_inference(predictor, items, progress=False)  # warm-up: page cache, allocator, oneDNN kernels
    walls, records = [], None
    for _ in range(args.repeats):
        records, wall = timed(lambda: run_inference(predictor, items, progress=False))
        walls.append(wall)
    achieved = statistics.median(walls) / seconds
    features = statistics.median(features_seconds(predictor, items) for _ in range(args.repeats)) / seconds
    print(
        f"{arch:10s} {per_audio_s / 1e9:7.3f} GFLOP/audio-s | sustained matmul {rates['matmul']:6.1f}, "
        f"conv {rates['conv']:6.1f} GFLOP/s | RTF limit {limit:.4f} | achieved RTF {achieved:.4f} "
        f"(median of {args.repeats}, {len(items) / statistics.median(walls):.1f} utt/s) | "
        f"achieved/limit {achieved / limit:.2f}x | start-up: model load {load_s + build_s:.2f} s",
        flush=True,
    )
    print(
        f"{'':10s} of which features (read, resample, extract) RTF {features:.4f}; the model and the rest "
        f"RTF {achieved - features:.4f} = {(achieved - features) / limit:.2f}x the limit",
        flush=True,
    )
    naive_items = items[: args.naive_files]
    naive_audio = sum(audio_info(p, RATE).target_samples for _, p in naive_items) / RATE
    reference = matrix(records)
    one, one_s = timed(lambda: run_inference(Predictor(packages, "cpu", 1), naive_items, progress=False))

    def naive():
        return [r for item in naive_items for r in Predictor(load_models(model), "cpu", 1).predict([item])]

    reloaded, naive_s = timed(naive)
    for name, rows, wall in (
        ("one file at a time", one, one_s),
        ("naive: model reloaded per file", reloaded, naive_s),
    ):
        delta = np.abs(matrix(rows) - reference[: len(rows)]).max()
        print(
            f"{'':10s} reference, {name}, {len(rows)} files: RTF {wall / naive_audio:.4f} "
            f"({wall / naive_audio / achieved:.1f}x the batched RTF); max |diff| {delta:.1e}",
            flush=True,
        )
    if args.whole_process:
        paths = [p for _, p in items]
        full = whole_process(model, paths, args.work / "out.jsonl", args.repeats)
        first = whole_process(model, paths[:1], args.work / "out1.jsonl", args.repeats)
        print(
            f"{'':10s} whole process `sertk infer` over {len(items)} files: {full:.2f} s, RTF {full / seconds:.4f}; "
            f"start-up (one file): {first:.2f} s; the files alone: RTF {(full - first) / seconds:.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--count-files", type=int, default=12, help="files whose FLOPs are counted")
    parser.add_argument("--naive-files", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--whole-process", action="store_true", help="also time `sertk infer` as a process")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sertk_bench_infer"))
    args = parser.parse_args()
    malloc = "SERTK_MALLOC=reuse" if reuse_freed_memory() else "glibc malloc"  # as sertk infer
    seconds = write_files(args.work / "wavs", args.files)
    items = collect_inputs([args.work / "wavs"])
    print(
        f"{len(items)} files, {seconds / 60:.1f} min of audio, {torch.get_num_threads()} torch threads, {malloc}; "
        "RTF = wall seconds per audio second",
        flush=True,
    )
    for arch in args.archs:
        bench_arch(arch, args, items, seconds)


if __name__ == "__main__":
    main()
