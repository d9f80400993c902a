"""Shared test helpers: a toy arch, hand-made feature dumps with provenance records, a tiny recipe dir."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from sertk import provenance
from sertk.data.datadir import read_data_dir, write_data_dir
from sertk.data.folds import FoldOptions, folds_record, write_folds
from sertk.features.io import RECORD, Hdf5Writer
from sertk.masking import masked_mean
from sertk.train.run import TrainOptions, train

CLASSES = ["neu", "hap", "ang", "sad"]
DIM = 6


class ToyModel(nn.Module):
    """Frame projection, masked mean over time, dropout, linear logits: small enough to train in a second."""

    @dataclass
    class Config:
        hidden: int = 16
        dropout: float = 0.2
        head: str = "linear"
        head_scale: float = 30.0

    def __init__(self, cfg, input_dim, num_classes):
        super().__init__()
        self.proj = nn.Linear(input_dim, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, num_classes)

    def forward(self, feats, lengths):
        return self.out(self.drop(masked_mean(torch.relu(self.proj(feats)), lengths)))


def make_feature_dir(path: Path, feats: dict[str, np.ndarray], feat: str = "toyfeat", config=None) -> Path:
    """A finished HDF5 feature dump of ``feats`` with its provenance record, as ``sertk feats`` leaves one."""
    path.mkdir(parents=True, exist_ok=True)
    dim = next(iter(feats.values())).shape[1]
    writer = Hdf5Writer(path / "feats.h5", feat, config or {}, dim)
    digest = hashlib.sha256()
    for utt in sorted(feats):
        writer.write(utt, feats[utt])
        digest.update(utt.encode() + feats[utt].tobytes())
    writer.close()
    (path / "feat.yaml").write_text(yaml.safe_dump({"feat": feat, "config": config or {}}))
    (path / "utt2num_frames").write_text("".join(f"{u} {len(x)}\n" for u, x in sorted(feats.items())))
    record = provenance.Record(stage="feats", inputs={"arrays": digest.hexdigest()}, options={"feat": feat})
    outputs = [path / n for n in ("feats.h5", "feat.yaml", "utt2num_frames")]
    provenance.write_record(path / RECORD, record, outputs)
    return path


def write_folds_file(
    data: Path, folds: list[dict], protocol: str = "random", name: str = "folds.json"
) -> Path:
    """Hand-written folds with their provenance record (as `sertk folds` would write them)."""
    data_dir = read_data_dir(data)
    record = folds_record(data_dir, protocol, FoldOptions())
    write_folds(data / name, {"protocol": protocol, "seed": 0, "folds": folds}, data_dir, record)
    return data / name


def make_recipe(root: Path, per_class: int = 10, seed: int = 0, max_len: int = 30) -> dict[str, Path]:
    """A recipe dir after stage 4: data/toy_system (+ folds.json), dump/toy_system/toyfeat, conf/toy_system.yaml.

    Class c has its features shifted by +2 in dimension c, so the task is separable.
    """
    rng = np.random.default_rng(seed)
    data = root / "data" / "toy_system"
    utts = sorted(f"spk{i % 2}_{c}{i:03d}" for c in CLASSES for i in range(per_class))
    emo = {u: u.split("_")[1][:3] for u in utts}
    tables = {
        "wav.scp": {u: f"/nonexistent/{u}.wav" for u in utts},
        "utt2spk": {u: u.split("_")[0] for u in utts},
        "utt2emo": emo,
        "utt2votes": {u: f"{emo[u]} {emo[u]} oth" for u in utts},
    }
    write_data_dir(
        data, tables, {"classes": CLASSES, "class_map": {c: c for c in CLASSES}, "synthetic": True}
    )
    order = list(rng.permutation(len(utts)))
    parts = np.array_split(np.array(utts)[order], 5)
    folds = []
    for k in range(2):
        test, valid = parts[k].tolist(), parts[k + 1].tolist()
        train_part = [u for u in utts if u not in test and u not in valid]
        folds.append({"name": f"fold{k + 1}", "train": train_part, "valid": valid, "test": test})
    folds_path = write_folds_file(data, folds)
    arrays = {}
    for u in utts:
        x = rng.normal(0, 1, size=(int(rng.integers(5, max_len)), DIM)).astype(np.float32)
        x[:, CLASSES.index(emo[u])] += 2.0
        arrays[u] = x
    feats = make_feature_dir(root / "dump" / "toy_system" / "toyfeat", arrays)
    conf = root / "conf" / "toy_system.yaml"
    conf.parent.mkdir(exist_ok=True)
    write_conf(conf)
    return {"data": data, "feats": feats, "folds": folds_path, "conf": conf}


def write_conf(
    path: Path, train_opts: dict | None = None, input_opts: dict | None = None, loss: dict | None = None
) -> None:
    config = {
        "arch": "toy",
        "feat": "toyfeat",
        "protocol": "random",
        "model": {"hidden": 16, "dropout": 0.2},
        "loss": loss or {"name": "ce"},
        "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 8, "epochs": 3, "patience": 0, "seed": 3}
        | (train_opts or {}),
        "input": {"normalize": "global", "white_noise_std": 0.1} | (input_opts or {}),
    }
    path.write_text(yaml.safe_dump(config))


def run(recipe: dict, exp: Path, **kwargs) -> list[dict]:
    """``sertk train`` on the recipe's data, feats and folds into ``exp``, on CPU."""
    paths = {k: recipe[k] for k in ("data", "feats", "folds")}
    return train(TrainOptions(train_config=recipe["conf"], exp=exp, device="cpu", **paths, **kwargs))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def crash_in_epoch(monkeypatch, epoch: int) -> None:
    """Make training die (KeyboardInterrupt) in validation of ``epoch``, as a killed run would."""
    import sertk.train.loop as loop

    real = loop.validate

    def crash(state, data, draws, cfg, device):
        if draws.epoch == epoch:
            raise KeyboardInterrupt
        return real(state, data, draws, cfg, device)

    monkeypatch.setattr(loop, "validate", crash)


def tiny_ssl_checkpoint(path: Path, norm: str = "layer", seed: int = 0, **overrides) -> Path:
    """A randomly initialised wav2vec2 model dir, 50 Hz like the real ones (the standard 7-layer conv stack,
    16 channels) but 32 wide with 2 transformer layers: 3 hidden states of 32 dims, ~40k parameters.

    ``norm`` "layer": a LayerNorm conv stack (padded batches with a mask, waveform normalised); "group":
    GroupNorm (rows run unpadded). No dropout unless ``overrides`` set it, so train and eval mode agree.
    """
    import transformers

    options = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
    )
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**{**options, **overrides}))
    model.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=norm == "layer").save_pretrained(path)
    return path
