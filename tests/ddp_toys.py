"""Test archs and hooks for ranks of real multi-process jobs (tests/ddp_entry.py, tests/test_ddp.py).

``toy-bn`` is ToyModel with both batch norms DDP must synchronise: sertk's MaskedBatchNorm over the padded
frames and torch's BatchNorm1d over the pooled vectors. SERTK_TEST_CRASH_EPOCH=k kills rank 0 in epoch k's
validation (as an interrupted run); SERTK_TEST_WRITERS=FILE logs each checkpoint, metrics file and
provenance record written, with the writing rank.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from helpers import ToyModel
from torch import nn

import sertk.provenance
import sertk.train.loop as loop
from sertk.masking import frame_mask, masked_mean
from sertk.models import MODELS, SYSTEMS
from sertk.models.layers import MaskedBatchNorm


class BatchNormToy(ToyModel):
    """Projection, masked batch norm over valid frames, ReLU, masked mean, BatchNorm1d, linear logits."""

    def __init__(self, cfg, input_dim, num_classes):
        super().__init__(cfg, input_dim, num_classes)
        # No bias before a batch norm: its gradient is zero up to rounding, which Adam would blow up to lr steps.
        self.proj = nn.Linear(input_dim, cfg.hidden, bias=False)
        self.frame_norm = MaskedBatchNorm(cfg.hidden, channel_dim=-1)
        self.pooled_norm = nn.BatchNorm1d(cfg.hidden)

    def forward(self, feats, lengths):
        mask = frame_mask(lengths, feats.shape[1])[..., None]
        frames = torch.relu(self.frame_norm(self.proj(feats), mask))
        return self.out(self.drop(self.pooled_norm(masked_mean(frames, lengths))))


def register() -> None:
    MODELS.update({"toy": ToyModel, "toy-bn": BatchNormToy})
    SYSTEMS.update({"toy": "toy_system", "toy-bn": "toy_system"})


def log_writers(log_path: str) -> None:
    """Append "RANK NAME" to ``log_path`` for each checkpoint, metrics.csv and provenance record written."""
    rank = os.environ.get("RANK", "0")
    real_save, real_metrics, real_record = loop.save_torch, loop.write_metrics, sertk.provenance.write_record

    def note(name: str) -> None:
        with open(log_path, "a") as log:
            log.write(f"{rank} {name}\n")

    def save_torch(obj, path):
        note(Path(path).name)
        real_save(obj, path)

    def write_metrics(fold_dir, history):
        note("metrics.csv")
        real_metrics(fold_dir, history)

    def write_record(path, *args, **kwargs):
        note(Path(path).name)
        return real_record(path, *args, **kwargs)

    loop.save_torch, loop.write_metrics = save_torch, write_metrics
    sertk.provenance.write_record = write_record


def crash_rank0(epoch: int) -> None:
    real = loop.validate

    def crash(state, data, draws, cfg, device):
        if draws.epoch == epoch:
            raise KeyboardInterrupt
        return real(state, data, draws, cfg, device)

    loop.validate = crash


def install() -> None:
    """What a rank of a test job runs before sertk's CLI: the archs, and the hooks the environment asks for."""
    register()
    if os.environ.get("SERTK_TEST_WRITERS"):
        log_writers(os.environ["SERTK_TEST_WRITERS"])
    if os.environ.get("SERTK_TEST_CRASH_EPOCH"):
        crash_rank0(int(os.environ["SERTK_TEST_CRASH_EPOCH"]))
