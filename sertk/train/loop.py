"""The epoch loop: optimiser and lr schedule, selection and early stopping, per-epoch checkpoints, exact resume.

``fit`` reads as the table of contents: set up (or resume) the state, then per epoch draw the epoch's
inputs, train, validate, and record (metrics.csv, best.pt, checkpoint.pt). Everything random is seeded by
(seed, epoch) and every state is checkpointed, so a resumed run ends with the same weights as an
uninterrupted one (on CPU). Under DDP every rank runs this loop on its share of each global batch
(sertk.train.distributed); rank 0 validates and writes.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk.augment.mixup import Mixup
from sertk.augment.specaugment import SpecAugment
from sertk.augment.vtlp import FixedVtlp, RandomVtlp
from sertk.errors import SertkError
from sertk.inputs.batch import Normalizer, Transform, WhiteNoise, model_batch
from sertk.inputs.config import InputConfig
from sertk.inputs.featureset import FeatureSet
from sertk.metrics import summarize
from sertk.models.predict import autocast, predict_rows, segment_average
from sertk.models.trained import load_checkpoint
from sertk.train import distributed
from sertk.train.config import TrainConfig
from sertk.train.distributed import SINGLE, Dist
from sertk.train.sampler import epoch_order, epoch_seed, length_batches
from sertk.utils import atomic_path, atomic_write_text, console

METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_wa", "valid_ua", "lr", "seconds")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD; a parameter goes to the first ``param_groups`` entry whose prefix its name starts with."""
    groups: list[list[torch.nn.Parameter]] = [[] for _ in range(len(cfg.param_groups) + 1)]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        slot = next(
            (i for i, g in enumerate(cfg.param_groups) if name.startswith(g.prefix)), len(cfg.param_groups)
        )
        groups[slot].append(param)
    for spec, params in zip(cfg.param_groups, groups[:-1], strict=True):
        if not params:
            raise SertkError(f"train.param_groups: prefix {spec.prefix!r} matches no model parameter")
    options = []
    for spec, params in zip([*cfg.param_groups, None], groups, strict=True):
        if params:
            lr = cfg.lr if spec is None or spec.lr is None else spec.lr
            decay = cfg.weight_decay if spec is None or spec.weight_decay is None else spec.weight_decay
            options.append({"params": params, "lr": lr, "weight_decay": decay, "base_lr": lr})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(options, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(options, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, epoch: int) -> float:
    """Multistep decay with epochs counted from 1: lr = base * gamma^(milestones <= epoch); returns group 0's lr."""
    decay = cfg.gamma ** sum(m <= epoch for m in cfg.milestones) if cfg.scheduler == "multistep" else 1.0
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * decay
    return optimizer.param_groups[0]["lr"]


@dataclass
class MetricTracker:
    """Best value of one validation metric; counts epochs without improvement (early stopping when patience > 0)."""

    metric: str
    patience: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record epoch's value; True when it is the new best. NaN (a diverged epoch) is worse than any number."""
        if self.best is None:
            better = True
        elif math.isnan(self.best):
            better = not math.isnan(value)
        else:
            better = value < self.best if self.metric == "valid_loss" else value > self.best
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def rng_state() -> dict:
    """All global RNG states as tensors, numbers and lists, so ``torch.load(weights_only=True)`` accepts them."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_torch(obj: dict, path: Path) -> None:
    """torch.save through a temporary sibling, so a crash never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_metrics(fold_dir: Path, history: list[dict]) -> None:
    """metrics.csv and train.log, both rewritten from the history so they always match the checkpoint."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if _isnan(v) else v) for k, v in row.items()} for row in history)
    atomic_write_text(fold_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(fold_dir / "train.log", "".join(epoch_line(row) + "\n" for row in history))


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def epoch_line(row: dict) -> str:
    valid = (
        "no validation part"
        if _isnan(row["valid_loss"])
        else f"valid_loss {row['valid_loss']:.4f} valid_wa {row['valid_wa']:.4f} valid_ua {row['valid_ua']:.4f}"
    )
    return (
        f"epoch {row['epoch']} train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f} {valid} "
        f"lr {row['lr']:.3g} {row['seconds']:.1f}s ({row['outside_share']:.1%} outside forward/backward/step)"
    )


@dataclass
class FoldData:
    """What one fold trains on: its train and (optional) validation rows and the normalisation of both."""

    train: FeatureSet
    valid: FeatureSet | None
    normalizer: Normalizer | None
    classes: list[str]

    def to(self, device: torch.device) -> FoldData:
        valid = None if self.valid is None else self.valid.to(device)
        return FoldData(self.train.to(device), valid, self.normalizer, self.classes)

    @property
    def nbytes(self) -> int:
        return sum(s.store.nbytes for s in (self.train, self.valid) if s is not None)


@dataclass
class FoldRun:
    """Where and how one fold runs: its dir, device, the metadata both checkpoints carry, resume rules."""

    fold_dir: Path
    device: torch.device
    info: (
        dict  # arch, model_config, classes, feat, feat_config, input_dim, norm_*, input, loss, provenance_key
    )
    resume: bool = False
    dist: Dist = SINGLE  # this process's rank in a data-parallel job (sertk.train.distributed)


@dataclass
class EpochInputs:
    """The epoch's draws (row order, VTLP, noise, random crops), each from its own (seed, epoch) generator."""

    epoch: int
    order: torch.Tensor
    train_set: FeatureSet
    train_transform: Transform | None
    valid_transform: Transform | None
    augment: list[Transform]  # on normalised training features: white noise, SpecAugment
    mixup: Mixup | None

    @classmethod
    def draw(cls, data: FoldData, cfg: TrainConfig, inp: InputConfig, epoch: int, device: torch.device):
        oversample = oversample_factors(cfg, data)
        order = epoch_order(data.train.row_labels, cfg.seed, epoch, oversample)
        train_set = data.train
        if inp.crop == "random" and inp.max_frames:
            train_set = train_set.recrop(_generator(cfg.seed + 7, epoch), inp.max_frames)
        train_vtlp, valid_vtlp = epoch_vtlp(inp, cfg.seed, epoch)
        augment: list[Transform] = []
        if inp.white_noise_std > 0:
            gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed + 1, epoch))
            augment.append(WhiteNoise(inp.white_noise_std, gen))
        if inp.specaugment.enabled:
            augment.append(SpecAugment(inp.specaugment, _generator(cfg.seed + 8, epoch)))
        mix = Mixup(inp.mixup, _generator(cfg.seed + 9, epoch)) if inp.mixup.enabled else None
        return cls(epoch, order, train_set, train_vtlp, valid_vtlp, augment, mix)


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def oversample_factors(cfg: TrainConfig, data: FoldData) -> torch.Tensor | None:
    """The per-class draw factors of ``train.oversample`` (cnn_blstm_vtlp.txt §2), in class order."""
    if not cfg.oversample:
        return None
    unknown = sorted(set(cfg.oversample) - set(data.classes))
    if unknown:
        raise SertkError(f"train.oversample: unknown class(es) {unknown} (classes: {data.classes})")
    return torch.tensor([float(cfg.oversample.get(c, 1.0)) for c in data.classes])


def epoch_vtlp(inp: InputConfig, seed: int, epoch: int) -> tuple[Transform | None, Transform | None]:
    """The (train, validation) VTLP transforms of one epoch (cnn_blstm_vtlp.txt §2), seeded by (seed, epoch).

    ``utterance``: a fresh alpha per spectrogram on both sets (the paper's best strategy); ``epoch``: one alpha
    for all training spectrograms of the epoch, validation unwarped.
    """
    low, high = inp.vtlp_range
    if inp.vtlp == "utterance":
        return (
            RandomVtlp(_generator(seed + 5, epoch), low, high, inp.vtlp_boundary),
            RandomVtlp(_generator(seed + 6, epoch), low, high, inp.vtlp_boundary),
        )
    if inp.vtlp == "epoch":
        alpha = low + (high - low) * torch.rand((), generator=_generator(seed + 5, epoch)).item()
        return FixedVtlp(alpha, inp.vtlp_boundary), None
    return None, None


def one_batch_safe(batches: list[torch.Tensor], min_rows: int = 2) -> list[torch.Tensor]:
    """Fold a batch of fewer than ``min_rows`` rows into another: batch norm cannot normalise a single row,
    and under DDP every rank needs a row of each batch (``distributed.min_batch_rows``)."""
    if len(batches) > 1 and min(len(b) for b in batches) < min_rows:
        small = next(i for i, b in enumerate(batches) if len(b) < min_rows)
        other = small - 1 if small > 0 else 1
        batches[other] = torch.cat([batches[other], batches[small]])
        del batches[small]
    return batches


@dataclass
class TrainingState:
    """Everything that evolves over epochs and is checkpointed: weights, optimiser, scaler, trackers, history."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stopper: MetricTracker
    selector: MetricTracker
    history: list[dict] = field(default_factory=list)
    first_epoch: int = 1
    net: torch.nn.Module | None = None  # what a training step calls: the model, DDP and/or compiled around it

    @classmethod
    def start(cls, model, loss_fn, cfg: TrainConfig, run: FoldRun) -> TrainingState:
        """A fresh state, or the one in ``checkpoint.pt`` when resuming a run of the same provenance."""
        model.to(run.device)
        loss_fn.to(run.device)
        state = cls(
            model,
            loss_fn,
            build_optimizer(model, cfg),
            torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16"),
            MetricTracker(cfg.early_stop_metric, cfg.patience),
            MetricTracker(cfg.select_metric),
        )
        ckpt_path = run.fold_dir / "checkpoint.pt"
        if run.resume and ckpt_path.is_file():
            state.load(ckpt_path, run.info["provenance_key"])
        return state

    def load(self, path: Path, key: str) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("provenance_key") != key:
            raise SertkError(
                f"{path}: was made from other data, folds, features or config; not resuming it "
                "(pass --overwrite to retrain the fold)"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.stopper.load_state_dict(ckpt["early_stop"])
        self.selector.load_state_dict(ckpt["best"])
        self.history = list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        self.first_epoch = int(ckpt["epoch"]) + 1
        console.print(f"{path.parent}: resuming after epoch {ckpt['epoch']}")

    def checkpoint(self, cfg: TrainConfig, epoch: int, info: dict) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": cfg.scheduler, "milestones": list(cfg.milestones), "gamma": cfg.gamma},
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "early_stop": self.stopper.state_dict(),
            "best": self.selector.state_dict(),
            "history": self.history,
            "rng": rng_state(),
            **info,
        }


def train_epoch(
    state: TrainingState,
    data: FoldData,
    draws: EpochInputs,
    cfg: TrainConfig,
    run: FoldRun,
    progress: Progress,
) -> tuple[float, float, float]:
    """One pass over the epoch's rows in length-sorted batches: (mean loss, accuracy, seconds in fwd/bwd/step).

    Nothing in the step waits for the device: batch widths come from host-side lengths, the batches' row
    indices reach the device in one copy per epoch, and loss and hits add up in device tensors read once.
    Under DDP each rank builds the whole global batch, then keeps its rows (``distributed.shard``).
    """
    model = state.model if state.net is None else state.net
    fset, device, ranks = draws.train_set, run.device, run.dist
    model.train()
    batches = length_batches(draws.order, fset.lengths, cfg.batch_size, cfg.seed, draws.epoch)
    batches = one_batch_safe(batches, distributed.min_batch_rows(ranks))
    host_lengths = fset.lengths.cpu()
    widths = [fset.width or int(host_lengths[b].max()) for b in batches]
    on_store = torch.cat(batches).to(fset.lengths.device).split([len(b) for b in batches])
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    busy = 0.0
    task = progress.add_task("train", total=len(batches))
    for index, width in zip(on_store, widths, strict=True):
        feats, lengths, extra = model_batch(
            fset, index, device, data.normalizer, draws.train_transform, draws.augment, width
        )
        owner = fset.owner[index]
        labels = fset.labels[owner].to(device)
        targets = labels if fset.targets is None else fset.targets[owner].to(device)
        weights = None if fset.weights is None else fset.weights[owner].to(device)
        if draws.mixup is not None:
            soft = targets if targets.dim() == 2 else F.one_hot(targets, len(data.classes)).float()
            feats, lengths, targets = draws.mixup(feats, lengths, soft)
        rows, share = distributed.shard(ranks, len(index))
        if ranks.active:
            feats, lengths, labels, targets = feats[rows], lengths[rows], labels[rows], targets[rows]
            weights = None if weights is None else weights[rows]
            extra = {k: v[rows] for k, v in extra.items()}
        tic = time.perf_counter()
        with autocast(device, cfg.precision):
            logits = model(feats, lengths, **extra)
        loss = state.loss_fn(logits.float(), targets, sample_weight=weights)
        step(state, loss * share if ranks.active else loss, cfg)
        busy += time.perf_counter() - tic
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(dim=-1) == labels).sum()
        progress.advance(task)
    progress.remove_task(task)
    distributed.all_reduce_sum(ranks, loss_sum, correct)
    return loss_sum.item() / len(draws.order), correct.item() / len(draws.order), busy


def step(state: TrainingState, loss: torch.Tensor, cfg: TrainConfig) -> None:
    """Backward, optional global-norm clipping, optimiser step (through the fp16 loss scaler when enabled)."""
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()


@torch.no_grad()
def validate(
    state: TrainingState, data: FoldData, draws: EpochInputs, cfg: TrainConfig, device: torch.device
) -> dict[str, float]:
    """valid_loss (over rows) and valid_wa / valid_ua / valid_ua_wa (segment-averaged utterances); NaN without a part."""
    fset = data.valid
    if fset is None:
        return dict.fromkeys(("valid_loss", "valid_wa", "valid_ua", "valid_ua_wa"), math.nan)
    logits = predict_rows(
        state.model, fset, device, cfg.batch_size, data.normalizer, [draws.valid_transform], cfg.precision
    )[0]
    owner = fset.owner.to(device)
    targets = fset.labels.to(device)[owner] if fset.targets is None else fset.targets.to(device)[owner]
    weights = None if fset.weights is None else fset.weights.to(device)[owner]
    loss = state.loss_fn(logits, targets, sample_weight=weights).item()
    posteriors = segment_average(logits.softmax(dim=-1), owner, len(fset.utts))
    scores = summarize(fset.labels.cpu().numpy(), posteriors.argmax(dim=-1).cpu().numpy(), logits.shape[1])
    return {
        "valid_loss": loss,
        "valid_wa": scores["wa"],
        "valid_ua": scores["ua"],
        "valid_ua_wa": scores["wa"] + scores["ua"],
    }


def fits_on_device(data: FoldData, device: torch.device) -> bool:
    """Whether the fold's frames take at most half of the device's free memory (the rest is for the model)."""
    if device.type != "cuda" or not data.nbytes:
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return data.nbytes < free // 2


def record_epoch(state: TrainingState, row: dict, values: dict, cfg: TrainConfig, run: FoldRun) -> None:
    """Selection (best.pt), early stopping, metrics.csv/train.log and checkpoint.pt after one epoch.

    Every rank takes the same decisions (from rank 0's broadcast metrics); rank 0 alone writes.
    """
    epoch = row["epoch"]
    state.history.append(row)
    improved = True if cfg.select == "last" else state.selector.update(values[cfg.select_metric], epoch)
    if cfg.select == "last":
        state.selector.best_epoch = epoch
    if cfg.patience:
        state.stopper.update(values[cfg.early_stop_metric], epoch)
    if not run.dist.main:
        return
    if improved:
        best = {"model": state.model.state_dict(), "epoch": epoch, "metrics": values, **run.info}
        save_torch(best, run.fold_dir / "best.pt")
    write_metrics(run.fold_dir, state.history)
    save_torch(state.checkpoint(cfg, epoch, run.info), run.fold_dir / "checkpoint.pt")
    console.print(f"{run.fold_dir.name}: {epoch_line(row)}")


def training_module(state: TrainingState, cfg: TrainConfig, run: FoldRun) -> torch.nn.Module:
    """What a training step calls: the model, inside DDP under a multi-process job, compiled if asked."""
    net = distributed.wrap(state.model, run.dist, run.device)
    return torch.compile(net) if cfg.compile else net


def fixed_shapes(data: FoldData) -> bool:
    """Whether every training batch has the same width (segments, input.pad fixed): cuDNN may then pick
    its fastest kernels once per shape."""
    return data.train.width > 0


def fit(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    data: FoldData,
    cfg: TrainConfig,
    inp: InputConfig,
    run: FoldRun,
) -> dict:
    """Train one fold; checkpoint.pt after every epoch, best.pt per ``cfg.select``; returns the fold summary.

    ``run.info`` goes into both checkpoints so that inference needs nothing else. Under DDP every rank
    runs this with the same arguments (see sertk.train.distributed).
    """
    if run.dist.main:
        run.fold_dir.mkdir(parents=True, exist_ok=True)
    model = distributed.sync_batch_norm(model, run.dist)  # before the optimiser takes the parameters
    state = TrainingState.start(model, loss_fn, cfg, run)
    state.net = training_module(state, cfg, run)
    if fits_on_device(data, run.device):
        data = data.to(run.device)  # batches become device-side gathers: no host-to-device copy per step
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = benchmark or (run.device.type == "cuda" and fixed_shapes(data))
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=console, transient=True, disable=not run.dist.main) as progress:
            for epoch in range(state.first_epoch, cfg.epochs + 1):
                if state.stopper.should_stop:
                    break
                run_epoch(state, data, cfg, inp, run, progress, epoch)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    return summary(state)


def run_epoch(
    state: TrainingState,
    data: FoldData,
    cfg: TrainConfig,
    inp: InputConfig,
    run: FoldRun,
    progress: Progress,
    epoch: int,
) -> None:
    """Draw the epoch's inputs, train, validate (rank 0; the others get its numbers) and record the epoch."""
    tic = time.perf_counter()
    lr = set_epoch_lr(state.optimizer, cfg, epoch)
    # Dropout draws from the global generator: seeding it per epoch makes epoch e independent of history.
    # Other ranks draw for other rows, so they get other streams (rank 0's is the single-process one).
    seed = epoch_seed(cfg.seed, epoch)
    torch.manual_seed(seed if run.dist.main else epoch_seed(seed, run.dist.rank))
    draws = EpochInputs.draw(data, cfg, inp, epoch, run.device)
    train_loss, train_acc, busy = train_epoch(state, data, draws, cfg, run, progress)
    train_seconds = time.perf_counter() - tic
    values = validate(state, data, draws, cfg, run.device) if run.dist.main else None
    values = distributed.broadcast(run.dist, values)
    row = {
        "epoch": epoch,
        "train_loss": round(train_loss, 6),
        "train_acc": round(train_acc, 6),
        **{k: round(values[k], 6) for k in ("valid_loss", "valid_wa", "valid_ua")},
        "lr": lr,
        "seconds": round(time.perf_counter() - tic, 3),
        "outside_share": round(1.0 - busy / train_seconds, 4),
    }
    record_epoch(state, row, values, cfg, run)


def summary(state: TrainingState) -> dict:
    """{best_epoch, epochs, stopped_early, valid_loss, valid_wa, valid_ua of the selected epoch}."""
    best_row = next(r for r in state.history if r["epoch"] == state.selector.best_epoch)
    return {
        "best_epoch": state.selector.best_epoch,
        "epochs": len(state.history),
        "stopped_early": state.stopper.should_stop,
        **{k: (None if _isnan(best_row[k]) else best_row[k]) for k in ("valid_loss", "valid_wa", "valid_ua")},
    }
