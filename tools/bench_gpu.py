"""Training benchmark of every system's paper config through ``sertk train``, in fp32 and bf16 autocast.

Stages 0-3 run once on the CPUs (``sertk synth --size small``, then per system prep, the paper's folds and
the config's features, as the recipes do), then fold 1 of each system trains through
``sertk.train.run.train`` (the real loop: device-resident features, validation, checkpoints) for
``--epochs`` epochs per precision. Per system and precision it prints: training rows (utterances or
segments) per second, epoch time (training pass + validation), peak GPU memory, the share of training
time outside forward/backward/optimizer step, and the paper's full protocol on real IEMOCAP extrapolated
from it (folds x epochs x utterances, ``PAPER_PROTOCOLS``). Epoch 1 warms up (cudnn autotuning, caches);
epochs 2 .. E-1 are timed as they run; only in the last epoch does the benchmark's own instrumentation
synchronise the device around forward/backward/step to split the time (the library never syncs for it).

    bash tools/bench_gpu.sh --device cuda --out bench_out/gpu     # small corpus, 3 epochs: < 8 min on one H200
    bash tools/bench_gpu.sh --device cpu --tiny                   # dry run: tiny corpus, 2 epochs of 24 utts
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sertk.corpora import prepare
from sertk.corpora.synthetic import generate_corpus
from sertk.corpora.synthetic.iemocap_plan import IMPRO_COUNTS, PUBLISHED_COUNTS
from sertk.data.datadir import read_data_dir
from sertk.data.folds import FoldOptions, folds_record, make_folds, write_folds
from sertk.features.dump import dump_features
from sertk.train import loop
from sertk.train.config import load_experiment_config
from sertk.train.run import TrainOptions, train
from sertk.utils import atomic_write_text, resolve_device, write_json

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "iemocap"
PRECISIONS = ("fp32", "bf16")
TINY_UTTS = (8, 4)  # --tiny: fold 1's first train and valid utterances (one batch per epoch)
TINY_MAX_FRAMES = 200  # --tiny: fixed-length inputs (crnn 7.5 s, lstm-attn 5 s) shortened to 2 s


@dataclass(frozen=True)
class PaperProtocol:
    """A system's data and folds as its recipe (egs/iemocap/run_<system>.sh) prepares them."""

    classes: str
    style: str
    protocol: str
    folds: int  # folds of the protocol on real IEMOCAP
    ratios: tuple[float, float, float] = (0.55, 0.25, 0.2)

    @property
    def real_utterances(self) -> int:
        """Utterances of the 4 classes on real IEMOCAP (PUBLISHED_COUNTS / IMPRO_COUNTS of iemocap_plan.py)."""
        counts = IMPRO_COUNTS if self.style == "impro" else PUBLISHED_COUNTS
        return sum(counts[code] for label in self.classes.split(",") for code in label.split("+"))


# The papers' protocols (the run_<system>.sh headers; docs/architecture.md, folds.json table); epochs come
# from egs/iemocap/conf/<system>.yaml (train.epochs: an upper bound where the config stops early).
# Real utterances: 5531 (hap+exc, all), 4490 (hap, all), 2280 (hap, improvised).
PAPER_PROTOCOLS = {
    "crnn_discriminative": PaperProtocol("neu,hap+exc,ang,sad", "all", "kfold", 5),
    "cnn_blstm_vtlp": PaperProtocol("neu,hap,sad,ang", "impro", "loso-speaker", 10),
    "lstm_attention": PaperProtocol("neu,hap,ang,sad", "all", "loso-session", 5),
    "attention_pooling_cnn": PaperProtocol("neu,hap,ang,sad", "impro", "loso-speaker-noval", 10),
    "rlc_gca_lstm": PaperProtocol("neu,hap+exc,ang,sad", "all", "kfold", 10, (0.8, 0.1, 0.1)),
}


@dataclass
class EpochTiming:
    """One epoch as the probe saw it: training rows, training pass and validation seconds, fwd/bwd/step share."""

    epoch: int
    rows: int
    train_s: float
    valid_s: float = 0.0
    inside_s: float | None = None  # instrumented epoch only: seconds from forward start to optimizer step end


@dataclass
class Probe:
    """Wraps the loop's ``train_epoch`` and ``validate`` to time them; syncs per step in one epoch only."""

    device: torch.device
    instrument_epoch: int
    epochs: list[EpochTiming] = field(default_factory=list)
    _inside: float = 0.0
    _start: float = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _forward_start(self, *_) -> None:
        self.sync()
        self._start = time.perf_counter()

    def _step_end(self, *_) -> None:
        self.sync()
        self._inside += time.perf_counter() - self._start

    def wrap_train(self, train_epoch: Callable) -> Callable:
        def timed(state, data, draws, *rest, **options):
            hooks = []
            if draws.epoch == self.instrument_epoch:
                self._inside = 0.0
                hooks = [
                    state.model.register_forward_pre_hook(self._forward_start),
                    state.optimizer.register_step_post_hook(self._step_end),
                ]
            self.sync()
            tic = time.perf_counter()
            result = train_epoch(state, data, draws, *rest, **options)
            self.sync()
            seconds = time.perf_counter() - tic
            for hook in hooks:
                hook.remove()
            inside = self._inside if hooks else None
            self.epochs.append(EpochTiming(draws.epoch, len(draws.order), seconds, inside_s=inside))
            return result

        return timed

    def wrap_validate(self, validate: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.sync()
            tic = time.perf_counter()
            result = validate(*args, **kwargs)
            self.sync()
            self.epochs[-1].valid_s = time.perf_counter() - tic
            return result

        return timed


@contextmanager
def probing(probe: Probe):
    """The loop's train_epoch and validate, timed by ``probe`` while the context lasts."""
    saved = loop.train_epoch, loop.validate
    loop.train_epoch, loop.validate = probe.wrap_train(saved[0]), probe.wrap_validate(saved[1])
    try:
        yield probe
    finally:
        loop.train_epoch, loop.validate = saved


@dataclass(frozen=True)
class Prepared:
    """A system's data dir, folds file and feature dir, and the share of fold 1 that trains (``--tiny`` cuts it)."""

    data: Path
    folds: Path
    feats: Path
    kept: float


def prepare_system(system: str, corpus: Path, work: Path, nj: int, tiny: bool) -> Prepared:
    """Stages 1-3 of ``system`` as its recipe runs them (classes, style, paper protocol, the config's feature)."""
    paper = PAPER_PROTOCOLS[system]
    cfg = load_experiment_config(RECIPE / "conf" / f"{system}.yaml")
    data_path = work / "data" / system
    prepare("iemocap", corpus, data_path, classes=paper.classes, style=paper.style)
    data = read_data_dir(data_path)
    opts = FoldOptions(ratios=paper.ratios, repeats=paper.folds)
    folds = make_folds(data, paper.protocol, opts)
    first = folds["folds"][0]
    full = len(first["train"]) + len(first["valid"])
    if tiny:
        first["train"], first["valid"] = first["train"][: TINY_UTTS[0]], first["valid"][: TINY_UTTS[1]]
        folds["folds"] = [first]
    folds_path = data_path / "folds.json"
    write_folds(folds_path, folds, data, folds_record(data, paper.protocol, opts))
    feats = work / "dump" / system / cfg.feat
    dump_features(
        data_path, feats, feat=cfg.feat, feat_config=RECIPE / "conf" / "feats" / f"{cfg.feat}.yaml", nj=nj
    )
    return Prepared(data_path, folds_path, feats, (len(first["train"]) + len(first["valid"])) / full)


def bench_system(system: str, prepared: Prepared, work: Path, args, precision: str) -> dict:
    """Train fold 1 of ``system`` for ``args.epochs`` epochs in ``precision``; its row of the table."""
    cfg = load_experiment_config(RECIPE / "conf" / f"{system}.yaml")
    overrides = {}
    if args.tiny and cfg.input.max_frames:
        overrides["input.max_frames"] = min(cfg.input.max_frames, TINY_MAX_FRAMES)
    device = resolve_device(args.device)
    opts = TrainOptions(
        train_config=RECIPE / "conf" / f"{system}.yaml",
        data=prepared.data,
        feats=prepared.feats,
        folds=prepared.folds,
        fold="1",
        exp=work / "exp" / f"{system}_{precision}",
        epochs=args.epochs,
        precision=precision,
        device=str(device),
        overwrite=True,
        overrides=overrides,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with probing(Probe(device, args.epochs)) as probe:
        train(opts)
    timed = [e for e in probe.epochs if e.inside_s is None and (e.epoch > 1 or args.epochs <= 2)]
    rows = sum(e.rows for e in timed)
    train_s = sum(e.train_s for e in timed)
    epoch_s = (train_s + sum(e.valid_s for e in timed)) / len(timed)
    last = probe.epochs[-1]
    paper = PAPER_PROTOCOLS[system]
    # An epoch's cost grows with the fold's utterances: real IEMOCAP's over the corpus's (over the kept share).
    scale = paper.real_utterances / len(read_data_dir(prepared.data).utts) / prepared.kept
    protocol_s = paper.folds * cfg.train.epochs * epoch_s * scale
    return {
        "system": system,
        "arch": cfg.arch,
        "precision": precision,
        "rows_per_epoch": timed[0].rows,
        "rows_per_s": rows / train_s,
        "epoch_s": epoch_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "outside_share": 1.0 - last.inside_s / last.train_s,
        "protocol": f"{paper.folds} folds x {cfg.train.epochs} epochs x {paper.real_utterances} utts",
        "protocol_h": protocol_s / 3600,
        "stops_early": cfg.train.patience > 0,
    }


def markdown(results: list[dict], title: str) -> str:
    lines = [
        f"{title}\n",
        "| system (arch) | precision | rows/epoch | rows/s | epoch | peak GPU mem | "
        "outside fwd/bwd/step | paper protocol on IEMOCAP | extrapolated |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        mem = "—" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f} GiB"
        bound = "≤ " if r["stops_early"] else ""
        lines.append(
            f"| {r['system']} ({r['arch']}) | {r['precision']} | {r['rows_per_epoch']} | {r['rows_per_s']:.1f} | "
            f"{r['epoch_s']:.2f} s | {mem} | {r['outside_share']:.1%} | {r['protocol']} | {bound}{r['protocol_h']:.2f} h |"
        )
    return "\n".join(lines) + "\n"


def write_results(out: Path, title: str, results: list[dict], complete: bool) -> None:
    """bench_gpu.md and bench_gpu.json in ``out``; an unfinished run says so in both."""
    if not complete:
        title += " (unfinished: the rows so far)"
    atomic_write_text(out / "bench_gpu.md", markdown(results, title))
    write_json(out / "bench_gpu.json", {"title": title, "complete": complete, "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny corpus, 24 training utterances")
    parser.add_argument("--systems", nargs="+", default=list(PAPER_PROTOCOLS), choices=list(PAPER_PROTOCOLS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 3; --tiny 2)")
    parser.add_argument("--nj", type=int, default=os.cpu_count() or 1, help="feature and synthesis workers")
    parser.add_argument("--work", type=Path, default=None, help="corpus, data, dumps, exp (default OUT/work)")
    parser.add_argument("--out", type=Path, default=Path("bench_out") / "gpu", help="where the table goes")
    args = parser.parse_args()
    args.epochs = args.epochs or (2 if args.tiny else 3)
    if args.epochs < 2:
        parser.error("--epochs: at least 2 (a timed epoch, then the instrumented one)")
    work = args.work or args.out / "work"
    device = resolve_device(args.device)
    size = "tiny" if args.tiny else "small"
    console = Console(width=180)
    tic = time.perf_counter()
    corpus = work / "corpus"
    generate_corpus(corpus, size=size, seed=0, nj=args.nj)
    paths = {s: prepare_system(s, corpus, work, args.nj, args.tiny) for s in args.systems}
    console.print(
        f"stages 0-3 ({size} corpus, {len(args.systems)} systems): {time.perf_counter() - tic:.1f} s"
    )
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    title = (
        f"fold 1 of the {size} synthetic IEMOCAP, paper configs, {args.epochs} epochs, {name}, "
        f"{time.strftime('%Y-%m-%d')}"
        + (" (dry run: 1 s utterances, the extrapolation means nothing)" if args.tiny else "")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for system in args.systems:
        for precision in PRECISIONS:
            results.append(bench_system(system, paths[system], work, args, precision))
            # Written after every run, so a run cut short by its time limit keeps the rows it finished.
            write_results(args.out, title, results, complete=False)
    table = Table(title=title)
    for column in (
        "system",
        "precision",
        "rows/epoch",
        "rows/s",
        "epoch s",
        "peak GiB",
        "outside",
        "protocol h",
    ):
        table.add_column(column, justify="right")
    for r in results:
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
        table.add_row(
            r["system"],
            r["precision"],
            str(r["rows_per_epoch"]),
            f"{r['rows_per_s']:.1f}",
            f"{r['epoch_s']:.2f}",
            mem,
            f"{r['outside_share']:.1%}",
            f"{r['protocol_h']:.2f}",
        )
    console.print(table)
    total = sum(r["protocol_h"] for r in results if r["precision"] == "bf16")
    console.print(
        f"five paper protocols together, bf16: {total:.2f} h; benchmark: {time.perf_counter() - tic:.0f} s"
    )
    write_results(args.out, title, results, complete=True)


if __name__ == "__main__":
    main()
