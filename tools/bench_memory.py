"""Peak memory of one fold's training inputs: frames in memory, streamed from the dump, and the old padding.

For a recipe's data dir, folds.json, feature dump and config, each mode runs in a fresh process that loads
the fold as ``sertk train`` does (``sertk.train.run.load_fold``) and draws every training batch of one
epoch through ``model_batch`` (no model: the inputs' memory alone), then reports its peak RSS
(``resource.getrusage``, the kernel's own accounting). The reference in the same run is a process that
only imports torch and sertk. The figure the old design would have needed, one (rows, T_max, D) float32
tensor per split, is computed from the dump's frame counts.

    .venv/bin/python tools/bench_memory.py --data data/all --feats dump/all/spec-logpow8k \\
        --folds data/all/folds.json --config egs/iemocap/conf/cnn_blstm_vtlp.yaml --fold 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One measurement: load the fold in ``args.mode`` and draw one epoch of batches; print the peak RSS."""
    import torch

    from sertk.data.datadir import read_data_dir
    from sertk.data.folds import read_folds, select_folds
    from sertk.inputs.batch import model_batch
    from sertk.train.config import load_experiment_config
    from sertk.train.loop import EpochInputs
    from sertk.train.run import Experiment, load_fold
    from sertk.train.sampler import length_batches

    result = {"mode": args.mode}
    if args.mode != "import":
        cfg = load_experiment_config(args.config)
        data = read_data_dir(args.data)
        folds = read_folds(args.folds, data)
        spec = select_folds(folds, args.fold)[0]
        xp = Experiment(cfg, args.config, "bench", data, args.feats, args.folds, folds, Path("."), None, None)
        budget = 8 * 2**30 if args.mode == "memory" else 2**20
        fold = load_fold(xp, spec, budget)
        draws = EpochInputs.draw(fold, cfg.train, cfg.input, 1, torch.device("cpu"))
        frames = 0
        for index in length_batches(draws.order, fold.train.lengths, cfg.train.batch_size, cfg.train.seed, 1):
            feats, _, _ = model_batch(
                fold.train, index, torch.device("cpu"), fold.normalizer, draws.train_transform
            )
            frames += feats.shape[0] * feats.shape[1]
        result.update({"train_rows": len(fold.train), "padded_frames_drawn": frames})
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def padded_bytes(args: argparse.Namespace) -> int:
    """Bytes of the old (rows, T_max, D) float32 tensors of the fold's train and valid parts."""
    from sertk.data.datadir import read_data_dir
    from sertk.data.folds import read_folds, select_folds
    from sertk.features.io import FeatureReader
    from sertk.train.config import load_experiment_config

    cfg = load_experiment_config(args.config)
    data = read_data_dir(args.data)
    spec = select_folds(read_folds(args.folds, data), args.fold)[0]
    reader = FeatureReader(args.feats)
    total = 0
    for part in ("train", "valid"):
        lengths = [reader.counts[u] for u in spec[part]]
        if cfg.input.max_frames:
            lengths = [min(n, cfg.input.max_frames) for n in lengths]
        width = cfg.input.segment_frames or max(lengths, default=0)
        rows = (
            len(lengths)
            if not cfg.input.segment_frames
            else sum(max(n - width, 0) // 100 + 1 for n in lengths)
        )
        total += rows * width * reader.dim * 4
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("data", "feats", "folds", "config"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--fold", default="1")
    parser.add_argument("--mode", choices=("import", "memory", "stream"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    rows = []
    for mode in ("import", "memory", "stream"):
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--mode", mode], capture_output=True, text=True
        )
        if out.returncode:
            raise SystemExit(out.stderr)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["peak_rss_mib"]
    padded = padded_bytes(args) / 2**20
    print(f"fold {args.fold} of {args.folds} ({args.feats}), {rows[1]['train_rows']} training rows")
    print(f"{'mode':<34}{'peak RSS MiB':>14}{'over import':>14}")
    print(f"{'import torch + sertk (reference)':<34}{base:>14.0f}{0:>14.0f}")
    for row, name in zip(rows[1:], ("frames in memory", "streamed from the dump"), strict=True):
        print(f"{name:<34}{row['peak_rss_mib']:>14.0f}{row['peak_rss_mib'] - base:>14.0f}")
    print(
        f"{'old design: padded (rows, T_max, D)':<34}{'':>14}{padded:>14.0f}  (computed: train + valid tensors)"
    )


if __name__ == "__main__":
    main()
