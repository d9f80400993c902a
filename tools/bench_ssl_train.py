"""Cost of one ssl-pool training step on CPU: dumped layers vs the encoder on the fly (frozen, fine-tuned).

Usage: ``python tools/bench_ssl_train.py [--models tiny,base] [--seconds 32] [--repeats 3] [--threads 1]
[--no-finetune]``

For each model (random weights saved as a Hugging Face dir, as ``tools/bench_ssl.py`` builds them: ``tiny``
= 32 wide, 2 layers, the standard 50 Hz conv stack; ``base`` = wav2vec2-base, 95 M parameters) one batch of
utterances of 2-6 s adding up to ``--seconds`` goes through the step ``sertk train`` takes
(``model_batch``: gather from the frame store and widen to float32; forward; cross-entropy; backward;
gradient clipping; Adam), three ways, in the same process:

* dumped: ssl-pool (SUPERB ER downstream) on the float16 layers a ``--feat ssl`` dump holds;
* on the fly: the same downstream with the frozen encoder inside (``model.encoder``) on int16 samples
  (``--feat wave``): the encoder's forward without gradients is added to every step;
* fine-tuned: the same with ``set_finetune(True)``: the encoder's forward with gradients, its backward and
  its Adam update.

The table gives medians of wall and CPU seconds per step and each path's CPU cost against the dumped one,
and the largest logit difference between the dumped and on-the-fly paths (float16 rounding of the dump).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_ssl import build_checkpoint, run_sertk, utterances
from rich.console import Console
from rich.table import Table

from sertk.features import build_feature
from sertk.features.io import encode_frames
from sertk.inputs.batch import model_batch
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import MemoryFrames, build_feature_set
from sertk.models import build_model

MODELS = ("tiny", "base", "base-ln")
RATE = 16000


def feature_set(arrays):
    utts = [str(i) for i in range(len(arrays))]
    labels = [i % 4 for i in range(len(arrays))]
    return build_feature_set(MemoryFrames(arrays), utts, labels, InputConfig(), training=True)


def train_step(model, optimizer, fset) -> torch.Tensor:
    """One step as the training loop takes it (sertk.train.loop.train_epoch + step); returns the logits."""
    index = torch.arange(len(fset))
    feats, lengths, _ = model_batch(fset, index, torch.device("cpu"))
    logits = model(feats, lengths)
    loss = torch.nn.functional.cross_entropy(logits, fset.labels[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return logits.detach()


def timed_steps(model, fset, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Median wall and CPU seconds of ``repeats`` steps after one warm-up step; the warm-up's logits."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.0)  # weights stay
    model.train()
    first = train_step(model, optimizer, fset)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        train_step(model, optimizer, fset)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), first


def bench(name: str, seconds: float, repeats: int, finetune: bool, work: Path) -> dict:
    checkpoint, _ = build_checkpoint(name, work / name)
    waves = utterances(seconds)
    extractor = build_feature("ssl", {"checkpoint": str(checkpoint)})  # float16 storage, as a dump
    with torch.inference_mode():
        layers = [encode_frames(x.numpy(), "float16") for x in run_sertk(extractor, waves)]
    samples = [encode_frames(w[:, None], "int16") for w in waves]
    num_layers, dim = len(extractor.cfg.layers), extractor.cfg.layer_dim
    torch.manual_seed(0)
    dumped = build_model("ssl-pool", {"num_layers": num_layers}, num_layers * dim, 4)
    onthefly = build_model("ssl-pool", {"encoder": {"checkpoint": str(checkpoint)}}, 1, 4)
    onthefly.load_state_dict(dumped.state_dict())  # the same downstream weights; the encoder's own
    rows = {"dumped": timed_steps(dumped, feature_set(layers), repeats)}
    rows["on the fly"] = timed_steps(onthefly, feature_set(samples), repeats)
    if finetune:
        onthefly.set_finetune(True)
        rows["fine-tuned"] = timed_steps(onthefly, feature_set(samples), repeats)
    diff = float((rows["dumped"][2] - rows["on the fly"][2]).abs().max())
    encoder_parameters = sum(p.numel() for p in onthefly.encoder.parameters())
    audio = sum(len(w) for w in waves) / RATE
    return {
        "name": name,
        "audio": audio,
        "utts": len(waves),
        "rows": rows,
        "diff": diff,
        "params": encoder_parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,base")
    parser.add_argument("--seconds", type=float, default=32.0, help="audio in the batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-finetune", action="store_true", help="skip the fine-tuned step")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        sys.exit(f"unknown model(s) {unknown} (known: {', '.join(MODELS)})")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(n, args.seconds, args.repeats, not args.no_finetune, Path(tmp)) for n in names]
    table = Table(
        title=f"one ssl-pool training step on CPU, {args.threads} torch thread(s), medians of {args.repeats}"
    )
    for column in ("model", "encoder params", "batch", "path", "wall s", "CPU s", "x dumped (CPU)"):
        table.add_column(column, justify="right")
    for r in results:
        base_cpu = r["rows"]["dumped"][1]
        for path, (wall, cpu, _) in r["rows"].items():
            batch = f"{r['utts']} utts, {r['audio']:.1f} s"
            table.add_row(
                r["name"],
                f"{r['params']:,}",
                batch,
                path,
                f"{wall:.3f}",
                f"{cpu:.3f}",
                f"{cpu / base_cpu:.1f}",
            )
    console = Console(width=160)
    console.print(table)
    for r in results:
        console.print(f"{r['name']}: max |logits dumped (float16) - on the fly| = {r['diff']:.2e}")
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
