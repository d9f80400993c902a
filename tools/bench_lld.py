"""Benchmark: batched IS09 / rlc17 LLD extraction vs openSMILE's per-utterance IS09 on the same wav files.

Usage: .venv/bin/python tools/bench_lld.py [--num-files 200] [--batch-size 32] [--device cpu|cuda]
Writes speech-like wavs (2-5 s, F0 90-300 Hz) to a temporary dir, times openSMILE (``ref`` extra) file by
file, then ours reading the same files and computing in batches; prints utterances/s, real-time factor
(processing seconds per audio second) and the speed ratio.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from rich.progress import Progress

from sertk.features.lld import Is09Config, Is09Lld, Rlc17Config, Rlc17Lld
from sertk.features.pitch import synthetic_voice
from sertk.utils import console

SR = 16000


def write_corpus(folder: Path, num_files: int, seed: int) -> list[Path]:
    """num_files speech-like wavs with random durations and F0 ranges, each with a pause and a fricative."""
    rng = np.random.default_rng(seed)
    paths = []
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
        paths.append(path)
    return paths


def time_opensmile(paths: list[Path]) -> float:
    import opensmile

    smile = opensmile.Smile(opensmile.FeatureSet.IS09, opensmile.FeatureLevel.LowLevelDescriptors_Deltas)
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("openSMILE", total=len(paths))
        for path in paths:
            smile.process_file(str(path))
            progress.advance(task)
    return time.perf_counter() - start


def time_batched(extractor, paths: list[Path], batch_size: int, device: str) -> float:
    """Read, pad and extract in length-sorted batches, features copied back to the CPU as a dump would."""
    start = time.perf_counter()
    waves = [soundfile.read(path, dtype="float32")[0] for path in paths]
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(type(extractor).__name__, total=len(waves))
        for first in range(0, len(order), batch_size):
            rows = [waves[i] for i in order[first : first + batch_size]]
            lengths = torch.tensor([len(w) for w in rows])
            batch = torch.zeros(len(rows), int(lengths.max()))
            for b, w in enumerate(rows):
                batch[b, : len(w)] = torch.from_numpy(w)
            feats = extractor.compute(batch.to(device), lengths.to(device)).cpu()
            frames = [feats[b, : extractor.num_frames(int(n))] for b, n in enumerate(lengths)]
            assert len(frames) == len(rows)
            progress.advance(task, len(rows))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-files", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_corpus(Path(tmp), args.num_files, args.seed)
        audio_seconds = sum(soundfile.info(p).frames for p in paths) / SR
        console.print(
            f"{len(paths)} files, {audio_seconds:.1f} s of audio, torch threads {torch.get_num_threads()}"
        )
        results = {"opensmile IS09 (per file, cpu)": time_opensmile(paths)}
        for name, ext in [
            ("sertk lld-is09", Is09Lld(Is09Config())),
            ("sertk lld-rlc17", Rlc17Lld(Rlc17Config())),
        ]:
            # one warm-up batch so one-off allocation and CUDA start-up are not counted
            time_batched(ext, paths[: args.batch_size], args.batch_size, args.device)
            results[f"{name} (batched, {args.device})"] = time_batched(
                ext, paths, args.batch_size, args.device
            )
    reference = results["opensmile IS09 (per file, cpu)"]
    for name, seconds in results.items():
        console.print(
            f"{name:40s} {len(paths) / seconds:8.1f} utt/s  RTF {seconds / audio_seconds:.4f}  "
            f"x{reference / seconds:.2f} vs openSMILE"
        )


if __name__ == "__main__":
    main()
