"""The epoch loop: optimiser and lr schedule, early stopping, per-epoch checkpoints and exact resume."""

from __future__ import annotations

import csv
import io
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sertk.augment.vtlp import FixedVtlp, RandomVtlp
from sertk.config import from_dict
from sertk.errors import SertkError
from sertk.evaluate.inference import Transform, predict_rows, segment_average
from sertk.evaluate.metrics import summarize
from sertk.train.config import InputConfig, TrainConfig
from sertk.train.dataset import FeatureSet, epoch_order, epoch_seed, length_batches, normalize_batch
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
    options = [
        {
            "params": params,
            "lr": cfg.lr if spec is None or spec.lr is None else spec.lr,
            "weight_decay": cfg.weight_decay
            if spec is None or spec.weight_decay is None
            else spec.weight_decay,
        }
        for spec, params in zip([*cfg.param_groups, None], groups, strict=True)
        if params
    ]
    for group in options:
        group["base_lr"] = group["lr"]
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
        better = self.best is None or (
            value < self.best if self.metric == "valid_loss" else value > self.best
        )
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


def metric_values(valid_loss: float, wa: float, ua: float) -> dict[str, float]:
    return {"valid_loss": valid_loss, "valid_wa": wa, "valid_ua": ua, "valid_ua_wa": wa + ua}


def write_metrics(fold_dir: Path, history: list[dict]) -> None:
    """metrics.csv and train.log, both rewritten from the history so they always match the checkpoint."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(fold_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(fold_dir / "train.log", "".join(epoch_line(row) + "\n" for row in history))


def epoch_line(row: dict) -> str:
    return (
        f"epoch {row['epoch']} train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f} "
        f"valid_loss {row['valid_loss']:.4f} valid_wa {row['valid_wa']:.4f} valid_ua {row['valid_ua']:.4f} "
        f"lr {row['lr']:.3g} {row['seconds']:.1f}s ({row['outside_share']:.1%} outside forward/backward/step)"
    )


def epoch_vtlp(inp: InputConfig, seed: int, epoch: int) -> tuple[Transform | None, Transform | None]:
    """The (train, validation) VTLP transforms of one epoch (cnn_blstm_vtlp.txt §2), seeded by (seed, epoch).

    ``utterance``: a fresh alpha per spectrogram on both sets (the paper's best strategy); ``epoch``: one alpha
    for all training spectrograms of the epoch, validation unwarped. Own generators keep resume exact.
    """
    low, high = inp.vtlp_range
    if inp.vtlp == "utterance":
        train_gen = torch.Generator().manual_seed(epoch_seed(seed + 5, epoch))
        valid_gen = torch.Generator().manual_seed(epoch_seed(seed + 6, epoch))
        return (
            RandomVtlp(train_gen, low, high, inp.vtlp_boundary),
            RandomVtlp(valid_gen, low, high, inp.vtlp_boundary),
        )
    if inp.vtlp == "epoch":
        gen = torch.Generator().manual_seed(epoch_seed(seed + 5, epoch))
        alpha = low + (high - low) * torch.rand((), generator=gen).item()
        return FixedVtlp(alpha, inp.vtlp_boundary), None
    return None, None


def train_epoch(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    train_set: FeatureSet,
    order: torch.Tensor,
    epoch: int,
    cfg: TrainConfig,
    device: torch.device,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    noise_std: float,
    noise_gen: torch.Generator,
    progress: Progress,
    transform: Transform | None = None,
) -> tuple[float, float, float]:
    """One pass over ``order`` in length-sorted batches; returns (mean loss, accuracy, seconds in fwd/bwd/step)."""
    model.train()
    amp = scaler.is_enabled()
    batches = length_batches(order, train_set.lengths, cfg.batch_size, cfg.seed, epoch)
    if len(batches) > 1 and min(len(b) for b in batches) == 1:
        # A batch of one breaks batch norm; fold it into another batch.
        single = next(i for i, b in enumerate(batches) if len(b) == 1)
        other = single - 1 if single > 0 else 1
        batches[other] = torch.cat([batches[other], batches[single]])
        del batches[single]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    busy = 0.0
    task = progress.add_task("train", total=len(batches))
    for index in batches:
        index = index.to(train_set.lengths.device)
        feats, lengths = train_set.batch(index)
        feats, lengths = feats.to(device, non_blocking=True), lengths.to(device, non_blocking=True)
        extra = {k: v.to(device, non_blocking=True) for k, v in train_set.word_batch(index).items()}
        owner = train_set.owner[index]
        labels = train_set.labels[owner].to(device)
        targets = labels if train_set.targets is None else train_set.targets[owner].to(device)
        weights = None if train_set.weights is None else train_set.weights[owner].to(device)
        if transform is not None:
            feats, lengths = transform(feats, lengths)
        feats = normalize_batch(feats, lengths, mean, std)
        if noise_std > 0:
            mask = torch.arange(feats.shape[1], device=device)[None, :] < lengths[:, None]
            noise = torch.randn(feats.shape, generator=noise_gen, device=device)
            feats = feats + noise_std * noise * mask[..., None]
        tic = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            logits = model(feats, lengths, **extra)
            loss = loss_fn(logits.float(), targets, sample_weight=weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        busy += time.perf_counter() - tic
        loss_sum += loss.detach() * len(index)
        correct += (logits.detach().argmax(dim=-1) == labels).sum()
        progress.advance(task)
    progress.remove_task(task)
    return loss_sum.item() / len(order), correct.item() / len(order), busy


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    valid_set: FeatureSet,
    device: torch.device,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    batch_size: int,
    amp: bool,
    transform: Transform | None = None,
) -> tuple[float, float, float]:
    """(loss over rows, WA, UA over utterances from segment-averaged posteriors) on the validation set."""
    logits = predict_rows(model, valid_set, mean, std, device, batch_size, transform, amp=amp)
    owner = valid_set.owner.to(device)
    targets = (
        valid_set.labels.to(device)[owner]
        if valid_set.targets is None
        else valid_set.targets.to(device)[owner]
    )
    weights = None if valid_set.weights is None else valid_set.weights.to(device)[owner]
    loss = loss_fn(logits, targets, sample_weight=weights).item()
    posteriors = segment_average(logits.softmax(dim=-1), owner, len(valid_set.utts))
    scores = summarize(
        valid_set.labels.cpu().numpy(), posteriors.argmax(dim=-1).cpu().numpy(), logits.shape[1]
    )
    return loss, scores["wa"], scores["ua"]


def fits_on_device(train_set: FeatureSet, valid_set: FeatureSet, device: torch.device) -> bool:
    """Whether both sets take at most half of the device's free memory (the rest is for the model)."""
    free, _ = torch.cuda.mem_get_info(device)
    size = sum(s.feats.numel() * s.feats.element_size() for s in (train_set, valid_set))
    return size < free // 2


def fit(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    train_set: FeatureSet,
    valid_set: FeatureSet,
    cfg: TrainConfig,
    fold_dir: Path,
    device: torch.device,
    info: dict,
    noise_std: float = 0.0,
    resume: bool = False,
) -> dict:
    """Train one fold; checkpoint.pt after every epoch, best.pt on every improvement of ``cfg.select_metric``.

    ``info`` (arch, model_config, classes, feat, feat_config, norm_mean, norm_std, input, loss) goes into
    both checkpoints so that inference needs nothing else. Shuffling, noise and dropout are seeded by
    (seed, epoch), and every state is checkpointed, so a resumed run ends with the same weights as an
    uninterrupted one (on CPU). Returns {best_epoch, epochs, <select metric values of the best epoch>}.
    """
    fold_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    loss_fn.to(device)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    stopper = MetricTracker(cfg.early_stop_metric, cfg.patience)
    selector = MetricTracker(cfg.select_metric)
    history: list[dict] = []
    first_epoch = 1
    ckpt_path = fold_dir / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stop"])
        selector.load_state_dict(state["best"])
        history = list(state["history"])
        set_rng_state(state["rng"])
        first_epoch = int(state["epoch"]) + 1
        console.print(f"{fold_dir}: resuming after epoch {state['epoch']}")
    classes = list(info["classes"])
    oversample = None
    if cfg.oversample:
        unknown = sorted(set(cfg.oversample) - set(classes))
        if unknown:
            raise SertkError(f"train.oversample: unknown class(es) {unknown} (classes: {classes})")
        oversample = torch.tensor([float(cfg.oversample.get(c, 1.0)) for c in classes])
    mean = None if info["norm_mean"] is None else info["norm_mean"].to(device)
    std = None if info["norm_std"] is None else info["norm_std"].to(device)
    if device.type == "cuda" and fits_on_device(train_set, valid_set, device):
        # Batches then become device-side indexing: no host-to-device copy in the hot loop.
        train_set, valid_set = train_set.to(device), valid_set.to(device)
    row_labels = train_set.row_labels
    amp = scaler.is_enabled()
    inp = from_dict(InputConfig, info["input"], where="input")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        for epoch in range(first_epoch, cfg.epochs + 1):
            if stopper.should_stop:
                break
            tic = time.perf_counter()
            lr = set_epoch_lr(optimizer, cfg, epoch)
            # Dropout draws from the global generator: seeding it per epoch makes epoch e independent of history.
            torch.manual_seed(epoch_seed(cfg.seed, epoch))
            noise_gen = torch.Generator(device=device).manual_seed(epoch_seed(cfg.seed + 1, epoch))
            order = epoch_order(row_labels, cfg.seed, epoch, oversample)
            train_vtlp, valid_vtlp = epoch_vtlp(inp, cfg.seed, epoch)
            train_loss, train_acc, busy = train_epoch(
                model,
                loss_fn,
                optimizer,
                scaler,
                train_set,
                order,
                epoch,
                cfg,
                device,
                mean,
                std,
                noise_std,
                noise_gen,
                progress,
                train_vtlp,
            )
            train_seconds = time.perf_counter() - tic
            valid_loss, wa, ua = validate(
                model, loss_fn, valid_set, device, mean, std, cfg.batch_size, amp, valid_vtlp
            )
            values = metric_values(valid_loss, wa, ua)
            row = {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "train_acc": round(train_acc, 6),
                "valid_loss": round(valid_loss, 6),
                "valid_wa": round(wa, 6),
                "valid_ua": round(ua, 6),
                "lr": lr,
                "seconds": round(time.perf_counter() - tic, 3),
                "outside_share": round(1.0 - busy / train_seconds, 4),
            }
            history.append(row)
            if selector.update(values[cfg.select_metric], epoch):
                save_torch(
                    {"model": model.state_dict(), "epoch": epoch, "metrics": values, **info},
                    fold_dir / "best.pt",
                )
            stopper.update(values[cfg.early_stop_metric], epoch)
            write_metrics(fold_dir, history)
            checkpoint = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {
                    "name": cfg.scheduler,
                    "milestones": list(cfg.milestones),
                    "gamma": cfg.gamma,
                    "epoch": epoch,
                },
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "early_stop": stopper.state_dict(),
                "best": selector.state_dict(),
                "history": history,
                "rng": rng_state(),
                **info,
            }
            save_torch(checkpoint, ckpt_path)
            console.print(f"{fold_dir.name}: {epoch_line(row)}")
    best_row = next(r for r in history if r["epoch"] == selector.best_epoch)
    return {
        "best_epoch": selector.best_epoch,
        "epochs": len(history),
        "stopped_early": stopper.should_stop,
        **{k: best_row[k] for k in ("valid_loss", "valid_wa", "valid_ua")},
    }
