"""Peak memory of loading one fold of a float16 SSL dump into the trainer's frame store.

Usage: ``python tools/bench_frames_memory.py [--utts 200] [--seconds 5] [--layers 13] [--dim 768]
[--baseline-src DIR]``

Writes a synthetic HDF5 dump of float16 (T, L·D) matrices (``--utts`` utterances of ``--seconds`` at 50 Hz,
a base model's 13 x 768 by default) and, in a fresh process each, loads all of it with
``sertk.inputs.featureset.load_frames`` (as ``sertk train`` loads a fold's training part) and prints the
process's peak resident memory (``ru_maxrss``) above what importing sertk cost, the store's dtype and
bytes, and the dump's size. ``--baseline-src`` names another sertk checkout (its directory holding
``sertk/``) to load the same dump with, in the same run: e.g. ``git archive <rev> | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_dump(out: Path, utts: int, frames: int, width: int) -> None:
    """A finished float16 dump (feats.h5, feat.yaml, utt2num_frames, provenance record) of random frames."""
    from sertk import provenance
    from sertk.features.io import RECORD, Hdf5Writer

    out.mkdir(parents=True)
    writer = Hdf5Writer(out / "feats.h5", "ssl", {}, width)
    rng = np.random.default_rng(0)
    block = rng.standard_normal((frames, width)).astype(np.float16)
    for i in range(utts):
        writer.write(f"utt{i:05d}", np.roll(block, i, axis=0))
    writer.close()
    (out / "feat.yaml").write_text("feat: ssl\nconfig: {}\n")
    (out / "utt2num_frames").write_text("".join(f"utt{i:05d} {frames}\n" for i in range(utts)))
    record = provenance.Record(stage="feats", inputs={"synthetic": "bench"}, options={"feat": "ssl"})
    provenance.write_record(
        out / RECORD, record, [out / n for n in ("feats.h5", "feat.yaml", "utt2num_frames")]
    )


def measure(dump: Path) -> dict:
    """Load every utterance of ``dump`` into a frame store; peak RSS before and after, in this process."""
    from sertk.inputs.featureset import load_frames

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    utts = [line.split()[0] for line in (dump / "utt2num_frames").read_text().splitlines()]
    store = load_frames(dump, utts, budget_bytes=1 << 40)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_above_import": after - before, "store_bytes": store.nbytes, "dtype": str(store.flat.dtype)}


def run(dump: Path, src: Path | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(dump)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    frames = int(args.seconds * 50)
    with tempfile.TemporaryDirectory(prefix="bench_frames_memory") as tmp:
        dump = Path(tmp) / "dump"
        write_dump(dump, args.utts, frames, args.layers * args.dim)
        size = (dump / "feats.h5").stat().st_size
        print(
            f"dump: {args.utts} utterances x {frames} frames x {args.layers * args.dim} float16 = {size / 2**30:.2f} GiB"
        )
        runs = [("this checkout", None)]
        if args.baseline_src is not None:
            runs.append((f"baseline {args.baseline_src}", args.baseline_src))
        for name, src in runs:
            result = run(dump, src)
            print(
                f"{name}: store {result['dtype']} {result['store_bytes'] / 2**30:.2f} GiB, peak RSS above import "
                f"{result['peak_above_import'] / 2**30:.2f} GiB ({result['peak_above_import'] / size:.2f} x the dump)"
            )


if __name__ == "__main__":
    main()
