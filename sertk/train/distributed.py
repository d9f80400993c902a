"""Data-parallel training of one model over N processes (torch.distributed; docs/architecture.md, "DDP").

Every rank draws the same global epoch order and length-bucketed batches (same seed), builds each whole
global batch with its random transforms (so noise, SpecAugment, VTLP, crops and mixup draw what one
process draws), and keeps rows ``rank::world`` of it. A rank's mean loss is weighted by its share of the
rows, so DistributedDataParallel's average of the ranks' gradients is the gradient of the global batch's
mean loss; batch norm statistics are the global batch's. Rank 0 validates, broadcasts what it measured and
alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from sertk.errors import SertkError
from sertk.models.layers import MaskedBatchNorm

PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, number of ranks, and its GPU on the node (LOCAL_RANK)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that validates, prints and writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Dist()


def join(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the job torchrun (or ``sertk train --nproc``) started: nccl on LOCAL_RANK's GPU, gloo on CPU."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SertkError(
                f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} GPU(s); "
                "start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=30))
    return Dist(rank, world, local_rank), device


def leave(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait until every rank got here (e.g. until rank 0 has written or cleared what the others read)."""
    if d.active:
        dist.barrier()


def broadcast(d: Dist, obj: object) -> object:
    """Rank 0's ``obj`` on every rank (a picklable value: validation metrics, a fold's status)."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(d: Dist, *tensors: torch.Tensor) -> None:
    """Sum each tensor over the ranks, in place (sums and counts, never means of means)."""
    if d.active:
        for tensor in tensors:
            dist.all_reduce(tensor)


def shard(d: Dist, rows: int) -> tuple[slice, float]:
    """This rank's rows of a global batch of ``rows`` (rows rank::world) and the weight of its mean loss.

    Losses are plain means (sertk.losses), so with b_r rows on rank r the global mean is
    sum_r (b_r / B) mean_r; DDP averages gradients over the N ranks, hence each rank scales by b_r N / B.
    """
    mine = len(range(d.rank, rows, d.world))
    return slice(d.rank, None, d.world), mine * d.world / rows


def min_batch_rows(d: Dist) -> int:
    """The fewest rows a global batch may have: 2 for batch norm, and at least one row per rank."""
    return max(2, d.world)


def sync_batch_norm(module: nn.Module, d: Dist) -> nn.Module:
    """Batch norm over the global batch: MaskedBatchNorm layers get the job's group; ``nn.BatchNorm*d``
    become MaskedBatchNorm over the same parameters and buffers (with mask None it is the same batch norm;
    torch's SyncBatchNorm refuses CPU tensors, so one tested implementation serves CPU and CUDA)."""
    if not d.active:
        return module
    for name, child in module.named_children():
        if type(child) in PLAIN_BATCH_NORMS:
            synced = MaskedBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(synced, key, getattr(child, key))
            synced.train(child.training)
            setattr(module, name, synced)
            child = synced
        if isinstance(child, MaskedBatchNorm):
            child.process_group = dist.group.WORLD
        sync_batch_norm(child, d)
    return module


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module the training step calls: the model itself, or DDP around it (gradients averaged).

    Every sertk arch uses all its trainable parameters in each forward, so DDP needs no search for unused
    ones (find_unused_parameters would cost a graph traversal per step).
    """
    if not d.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
