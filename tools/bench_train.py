"""Training-loop benchmark: one epoch of each system's config on IEMOCAP-like random features.

Prints, per config: rows (utterances or segments) per epoch, epoch seconds, rows/s, and the share of the
epoch spent outside forward/backward/optimizer step (batch indexing, padding, normalisation, transfers,
progress) — the loop's overhead against its own compute in the same run. With ``--precision bf16`` the
same epoch runs under autocast.

    .venv/bin/python tools/bench_train.py                         # every canonical system, CPU, 300 utts
    .venv/bin/python tools/bench_train.py --configs conf/attention_pooling_cnn.yaml --utts 1000 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sertk.features import build_feature
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.losses import build_loss
from sertk.models import MODELS, SYSTEMS, build_model, count_parameters, model_config
from sertk.train.config import load_experiment_config
from sertk.train.loop import (
    EpochInputs,
    FoldData,
    FoldRun,
    MetricTracker,
    TrainingState,
    build_optimizer,
    train_epoch,
)
from sertk.utils import reuse_freed_memory

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "iemocap"


def iemocap_like_lengths(n: int, frames_per_second: float, rng: np.random.Generator) -> np.ndarray:
    """Utterance lengths in frames: lognormal with median 3.5 s, 0.6-35 s, as IEMOCAP's turns."""
    seconds = np.clip(np.exp(rng.normal(np.log(3.5), 0.71, n)), 0.6, 35.0)
    return np.maximum((seconds * frames_per_second).astype(int), 1)


def bench_config(config: Path, utts: int, device: torch.device, precision: str) -> dict:
    cfg = load_experiment_config(config)
    extractor = build_feature(cfg.feat, RECIPE / "conf" / "feats" / f"{cfg.feat}.yaml")
    shift_s = extractor.num_frames(extractor.sample_rate * 10) / 10.0
    rng = np.random.default_rng(0)
    lengths = iemocap_like_lengths(utts, shift_s, rng)
    feats = {
        f"u{i:05d}": rng.standard_normal((int(n), extractor.dim)).astype(np.float32)
        for i, n in enumerate(lengths)
    }
    names = sorted(feats)
    labels = rng.integers(0, 4, utts).tolist()
    store = MemoryFrames([feats[n] for n in names])
    train_set = build_feature_set(store, names, labels, cfg.input, training=True, seed=cfg.train.seed)
    data = FoldData(train_set, None, None, ["neu", "hap", "ang", "sad"])
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.model, extractor.dim, 4).to(device)
    resolved = model_config(cfg.arch, cfg.model)
    loss_fn = build_loss(
        cfg.loss,
        4,
        head=getattr(resolved, "head", "linear"),
        head_scale=getattr(resolved, "head_scale", None),
    ).to(device)
    train_cfg = dataclasses.replace(cfg.train, precision=precision)
    state = TrainingState(
        model,
        loss_fn,
        build_optimizer(model, train_cfg),
        torch.amp.GradScaler("cuda", enabled=precision == "fp16"),
        MetricTracker(train_cfg.early_stop_metric),
        MetricTracker(train_cfg.select_metric),
    )
    if device.type == "cuda":
        data = data.to(device)
    draws = EpochInputs.draw(data, train_cfg, cfg.input, 1, device)
    with Progress(transient=True) as progress:
        tic = time.perf_counter()
        run = FoldRun(Path("."), device, {})  # train_epoch reads only the device and the (single) rank
        _, _, busy = train_epoch(state, data, draws, train_cfg, run, progress)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tic
    order = draws.order
    result = {"config": config.name, "arch": cfg.arch, "params": count_parameters(model), "rows": len(order)}
    result.update({"seconds": seconds, "rows_per_s": len(order) / seconds, "outside": 1.0 - busy / seconds})
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    canonical = [RECIPE / "conf" / f"{SYSTEMS[arch]}.yaml" for arch in MODELS]
    parser.add_argument("--configs", nargs="+", type=Path, default=canonical)
    parser.add_argument("--utts", type=int, default=300, help="utterances per epoch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast dtype"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    malloc = "SERTK_MALLOC=reuse" if reuse_freed_memory() else "glibc malloc"  # as sertk train
    console = Console(width=150)
    table = Table(
        title=f"one training epoch, {args.utts} IEMOCAP-like utterances, {device}, "
        f"threads {torch.get_num_threads()}, {malloc}"
    )
    for column in ("config", "arch", "params", "rows", "epoch s", "rows/s", "outside fwd/bwd/step"):
        table.add_column(column, justify="right")
    for config in args.configs:
        config = config if config.is_absolute() else (Path.cwd() / config)
        if not config.is_file():
            config = RECIPE / "conf" / config.name
        r = bench_config(config, args.utts, device, args.precision)
        table.add_row(
            r["config"],
            r["arch"],
            f"{r['params']:,}",
            str(r["rows"]),
            f"{r['seconds']:.1f}",
            f"{r['rows_per_s']:.1f}",
            f"{r['outside']:.1%}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
