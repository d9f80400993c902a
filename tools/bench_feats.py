"""Benchmark ``sertk feats`` (logmel40) against a per-utterance torchaudio Kaldi fbank loop.

Usage: ``python tools/bench_feats.py [--size small|full] [--nj 2] [--corpus DIR] [--work DIR] [--cleanup]``

Generates (or reuses) the synthetic corpus, lists every utterance wav into a data dir (all 10,039 for
``full``, not only the 4-class subset), warms the page cache, then times in one run:
  * reference: one process, one torch thread; per utterance soundfile.read ->
    ``torchaudio.compliance.kaldi.fbank`` -> one HDF5 dataset; the same I/O as ``sertk feats``, so the
    ratio compares whole stages, not kernels;
  * ``dump_features`` with nj=1 (one torch thread) and nj=N.
It checks that both give the same features (max |diff|) and prints utterances/s, the real-time factor
(audio seconds / wall seconds), the speed ratio against the reference, also per core, and CPU seconds
(this process + its workers), which the other load on a shared machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import soundfile
import torch
import torchaudio.compliance.kaldi as kaldi
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sertk.corpora.synthetic import generate_corpus
from sertk.data.datadir import write_data_dir
from sertk.features.dump import dump_features
from sertk.features.io import load_features
from sertk.utils import console


def build_data_dir(corpus: Path, out: Path) -> tuple[dict[str, str], float]:
    """A data dir of every ``SessionN/sentences/wav/*/*.wav`` under ``corpus``; returns wav.scp and hours."""
    wavs = sorted(corpus.glob("Session*/sentences/wav/*/*.wav"))
    if not wavs:
        sys.exit(f"{corpus}: no Session*/sentences/wav/*/*.wav files")
    wav_scp = {p.stem: str(p.resolve()) for p in wavs}
    utt2spk = {u: u[:5] + u.rsplit("_", 1)[1][0] for u in wav_scp}
    seconds = sum(soundfile.info(p).duration for p in wav_scp.values())
    write_data_dir(out, {"wav.scp": wav_scp, "utt2spk": utt2spk, "utt2emo": dict.fromkeys(wav_scp, "neu")})
    return wav_scp, seconds / 3600


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the --nj workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def warm_page_cache(wav_scp: dict[str, str]) -> None:
    for path in wav_scp.values():
        Path(path).read_bytes()


def reference_loop(wav_scp: dict[str, str], out: Path) -> float:
    """Seconds for the per-utterance torchaudio Kaldi fbank, reading wavs and writing HDF5 like sertk feats."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with h5py.File(out, "w") as f, Progress(console=console, transient=True) as progress:
        task = progress.add_task("reference", total=len(wav_scp))
        for utt, path in wav_scp.items():
            wave, _ = soundfile.read(path, dtype="float32")
            if len(wave) >= 400:
                feats = kaldi.fbank(torch.from_numpy(wave)[None] * 32768, num_mel_bins=40, dither=0.0)
                f.create_dataset(utt, data=feats.numpy())
            progress.advance(task)
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    return seconds


def max_difference(reference_h5: Path, feat_dir: Path) -> float:
    ours = load_features(feat_dir)
    with h5py.File(reference_h5, "r") as f:
        return max(float(np.abs(f[u][()] - ours[u]).max()) for u in ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--corpus", type=Path, help="IEMOCAP-style tree (default: generate under --work)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sertk_bench"))
    parser.add_argument("--cleanup", action="store_true", help="delete --work afterwards")
    args = parser.parse_args()

    work = args.work / args.size
    corpus = args.corpus
    if corpus is None:
        corpus = work / "IEMOCAP_full_release"
        generate_corpus(corpus, size=args.size, seed=0, nj=max(1, os.cpu_count() or 1))
    wav_scp, hours = build_data_dir(corpus, work / "data")
    warm_page_cache(wav_scp)
    audio_seconds = hours * 3600

    runs: list[tuple[str, int, float, float]] = []
    ref_h5 = work / "reference.h5"
    before = cpu_seconds()
    ref_seconds = reference_loop(wav_scp, ref_h5)
    runs.append(("torchaudio kaldi.fbank per utt", 1, ref_seconds, cpu_seconds() - before))
    for nj in sorted({1, args.nj}):
        out = work / f"dump_nj{nj}"
        shutil.rmtree(out, ignore_errors=True)
        before = cpu_seconds()
        summary = dump_features(work / "data", out, nj=nj)
        runs.append((f"sertk feats --nj {nj}", nj, summary["seconds"], cpu_seconds() - before))
    diff = max_difference(ref_h5, work / "dump_nj1")

    table = Table(title=f"logmel40 on the {args.size} synthetic corpus ({os.cpu_count()} CPUs visible)")
    columns = ("run", "utterances", "audio h", "seconds", "CPU s", "utt/s", "RTF", "× ref", "× ref per core")
    for name in columns:
        table.add_column(name, justify="left" if name == "run" else "right")
    for name, cores, seconds, cpu in runs:
        ratio = ref_seconds / seconds
        table.add_row(
            name,
            str(len(wav_scp)),
            f"{hours:.2f}",
            f"{seconds:.1f}",
            f"{cpu:.1f}",
            f"{len(wav_scp) / seconds:.0f}",
            f"{audio_seconds / seconds:.0f}",
            f"{ratio:.2f}",
            f"{ratio / cores:.2f}",
        )
    out_console = Console(width=150)
    out_console.print(table)
    out_console.print(f"max |sertk - torchaudio| over all frames: {diff:.2e}")
    if args.cleanup:
        shutil.rmtree(args.work / args.size, ignore_errors=True)


if __name__ == "__main__":
    main()
