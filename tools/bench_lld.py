"""Benchmark: batched IS09 / rlc17 LLD extraction vs openSMILE's per-utterance IS09 on the same wav files.

Usage: .venv/bin/python tools/bench_lld.py [--num-files 200] [--repeats 3] [--threads 1] [--device cpu|cuda]
Writes speech-like wavs (2-5 s, F0 90-300 Hz) to a temporary dir, then, interleaved ``--repeats`` times so a
shared machine's load hits every contender alike: openSMILE (``ref`` extra) file by file, and ours the way
the dump stage runs it (``plan_batches`` + ``compute_batch``: read, pad, extract, trim, ~0.5 M samples per
batch, one torch thread per job). Prints medians of utterances/s and real-time factor on the wall clock
and on process CPU time (the CPU figure is the one a loaded machine does not distort), and the ratios.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from rich.progress import Progress

from sertk.errors import SertkError
from sertk.features.dump import BATCH_SAMPLES, compute_batch, plan_batches
from sertk.features.lld import Is09Config, Is09Lld, Rlc17Config, Rlc17Lld
from sertk.features.speechlike import synthetic_voice
from sertk.utils import console

SR = 16000
REFERENCE = "openSMILE IS09 (per file)"


def write_corpus(folder: Path, num_files: int, seed: int) -> dict[str, str]:
    """num_files speech-like wavs with random durations and F0 ranges, each with a pause and a fricative."""
    rng = np.random.default_rng(seed)
    wavs = {}
    for i in range(num_files):
        n = int(rng.uniform(2.0, 5.0) * SR)
        lo = rng.uniform(90, 200)
        t = torch.arange(n, dtype=torch.float64) / SR
        f0 = lo + rng.uniform(30, 100) * (0.5 + 0.5 * torch.sin(2 * math.pi * rng.uniform(0.3, 1.5) * t))
        f0[int(0.4 * n) : int(0.5 * n)] = 0
        noise = torch.zeros(n, dtype=torch.bool)
        noise[int(0.7 * n) : int(0.75 * n)] = True
        f0[noise] = 0
        wave = synthetic_voice(f0, SR, noise, seed=i).numpy()
        path = folder / f"utt{i:04d}.wav"
        soundfile.write(path, wave, SR, subtype="PCM_16")
        wavs[path.stem] = str(path)
    return wavs


def opensmile_runner(wavs: dict[str, str]):
    """A callable extracting IS09 LLDs + deltas file by file, as openSMILE is used per utterance."""
    try:
        import opensmile
    except ImportError as err:
        raise SertkError("bench_lld: the reference needs the ref extra (pip install opensmile)") from err
    smile = opensmile.Smile(opensmile.FeatureSet.IS09, opensmile.FeatureLevel.LowLevelDescriptors_Deltas)

    def run() -> None:
        for path in wavs.values():
            smile.process_file(path)

    return run


def batched_runner(extractor, wavs: dict[str, str], device: str):
    """A callable extracting every file in the dump stage's batches; features end on the CPU, trimmed."""
    batches, errors = plan_batches(wavs, extractor, BATCH_SAMPLES)
    if errors:
        raise SertkError(f"bench_lld: {errors[0]}")
    if device != "cpu":
        # compute_batch works on CPU tensors; on a device, move each padded batch there and back.
        compute = extractor.compute
        extractor.compute = lambda waves, lengths: compute(waves.to(device), lengths.to(device)).cpu()

    def run() -> None:
        for batch in batches:
            result = compute_batch(extractor, batch)
            if result["errors"]:
                raise SertkError(f"bench_lld: {result['errors'][0]}")
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-files", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the dump stage uses 1 per job)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        wavs = write_corpus(Path(tmp), args.num_files, args.seed)
        audio_seconds = sum(soundfile.info(p).frames for p in wavs.values()) / SR
        console.print(
            f"{len(wavs)} files, {audio_seconds:.1f} s of audio, torch threads {torch.get_num_threads()}, "
            f"{args.repeats} interleaved repeats"
        )
        runners = {REFERENCE: opensmile_runner(wavs)}
        for name, extractor in [("lld-is09", Is09Lld(Is09Config())), ("lld-rlc17", Rlc17Lld(Rlc17Config()))]:
            runners[f"sertk {name} (batched, {args.device})"] = batched_runner(extractor, wavs, args.device)
        wall: dict[str, list[float]] = {name: [] for name in runners}
        cpu: dict[str, list[float]] = {name: [] for name in runners}
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("bench", total=args.repeats * len(runners))
            # One untimed pass first: file cache, allocator and (on a GPU) kernel start-up.
            for run in runners.values():
                run()
            for _ in range(args.repeats):
                for name, run in runners.items():
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    run()
                    wall[name].append(time.perf_counter() - start_wall)
                    cpu[name].append(time.process_time() - start_cpu)
                    progress.advance(task)
    ref_wall, ref_cpu = statistics.median(wall[REFERENCE]), statistics.median(cpu[REFERENCE])
    console.print(f"{'':40s} {'utt/s':>8s} {'RTF':>8s} {'x ref':>6s} | {'CPU RTF':>8s} {'x ref':>6s}")
    for name in runners:
        seconds, cpu_seconds = statistics.median(wall[name]), statistics.median(cpu[name])
        console.print(
            f"{name:40s} {len(wavs) / seconds:8.1f} {seconds / audio_seconds:8.4f} {ref_wall / seconds:6.2f} | "
            f"{cpu_seconds / audio_seconds:8.4f} {ref_cpu / cpu_seconds:6.2f}"
        )


if __name__ == "__main__":
    main()
