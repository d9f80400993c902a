"""``--feat ssl``: hidden layers of a local self-supervised speech encoder (wav2vec2, HuBERT, WavLM,
data2vec-audio, Whisper's encoder) as frame features, one (T, L·D) matrix per utterance.

Frame t of a dump holds the chosen layers side by side, ``feats[t, i * D:(i + 1) * D]`` = hidden state
``layers[i]`` (0 = the transformer's input, l = the output of layer l), so ``feats.reshape(T, L, D)``
recovers the layer axis; ``layers`` and ``layer_dim`` are recorded in feat.yaml (see ``layer_layout``).
Long utterances are cut into overlapping chunks and stitched (``plan_chunks``). ``SslEncoder`` is the
``nn.Module`` that does all of it and is what an on-the-fly (or fine-tuning) trainer would call with
gradients on; ``SslFeatures`` wraps it as a ``FeatureExtractor`` for ``sertk feats``. Checkpoint
formats and loading: ``sertk.features.ssl_checkpoint``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from sertk.errors import SertkError
from sertk.features.base import FeatureExtractor
from sertk.features.ssl_checkpoint import (
    SAMPLE_RATE,
    Backend,
    file_digest,
    hf_dir_files,
    load_hf_dir,
    load_torchaudio_file,
)
from sertk.masking import frame_mask


@dataclass
class SslConfig:
    """The YAML of ``--feat ssl``. ``layers``, ``layer_dim``, ``normalize_waveform`` and
    ``checkpoint_sha256`` are filled in from the checkpoint when left empty and recorded in feat.yaml;
    given, they must agree with it (a pinned sha256 refuses other weights)."""

    checkpoint: str = ""  # a Hugging Face model dir, or a torchaudio weight file (with torchaudio_builder)
    torchaudio_builder: str = ""  # torchaudio.models builder of a weight file: wavlm_base, hubert_large, ...
    torchaudio_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that builder
    layers: list[int] | None = None  # hidden states to keep, 0..L (negative counts from the end); None: all
    average_layers: bool = False  # store the mean of the chosen layers, (T, D), instead of (T, L·D)
    dtype: Literal["float16", "float32"] = (
        "float16"  # storage dtype of a dump (ark: float32); unused on the fly
    )
    normalize_waveform: bool | None = None  # zero mean, unit variance per utterance; None: the checkpoint's
    max_chunk_seconds: float = 30.0  # longer utterances are chunked (Whisper: at most its 30 s window)
    overlap_seconds: float = 4.0  # consecutive chunks overlap this much; each keeps its half of the overlap
    batch_seconds: float = 60.0  # at most this much padded audio per encoder call (Whisper: 30 s per chunk)
    max_padding: float = 0.1  # padded rows share a call while padding is at most this share of it (GPU: more)
    sample_rate: int = SAMPLE_RATE
    layer_dim: int = 0  # D, from the checkpoint
    checkpoint_sha256: str = ""  # of config.json, weights and preprocessor_config.json / the weight file

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError(
                "checkpoint: the path of a local model dir or torchaudio weight file is required"
            )
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"sample_rate: every supported encoder reads 16000 Hz audio, got {self.sample_rate}"
            )
        if self.max_chunk_seconds <= 0 or self.batch_seconds <= 0:
            raise ValueError("max_chunk_seconds and batch_seconds must be positive")
        if not 0 <= self.max_padding < 1:
            raise ValueError(f"max_padding must be in [0, 1), got {self.max_padding}")
        if not 0 <= self.overlap_seconds < self.max_chunk_seconds:
            raise ValueError(
                f"overlap_seconds must be in [0, max_chunk_seconds), got {self.overlap_seconds} "
                f"with max_chunk_seconds {self.max_chunk_seconds}"
            )


def plan_chunks(
    num_samples: int, backend: Backend, chunk_samples: int, overlap_frames: int
) -> list[tuple[int, int, int, int]]:
    """Cut an utterance into chunks: ``(start, end, keep_from, keep_to)`` in samples and global frames.

    Chunks start on the frame grid (multiples of ``frame_stride``), so frame j of a chunk starting at frame
    a is frame a + j of the whole; all but the last are ``chunk_samples`` long and start ``hop`` = chunk
    frames - ``overlap_frames`` apart, and the last one is moved back to end at the utterance's end. Where
    two chunks overlap, the earlier keeps the first half of the overlap and the later the rest: every
    frame comes from exactly one chunk, at least half an overlap from any seam, and the kept ranges tile
    [0, num_frames(num_samples)).
    """
    total = backend.num_frames(num_samples)
    if num_samples <= chunk_samples:
        return [(0, num_samples, 0, total)]
    stride = backend.frame_stride
    full = backend.num_frames(chunk_samples)
    hop = full - overlap_frames
    starts = [0]
    while (starts[-1] + hop) * stride + chunk_samples < num_samples:
        starts.append(starts[-1] + hop)
    starts.append(-(-(num_samples - chunk_samples) // stride))
    seams = [(later + earlier + full) // 2 for earlier, later in zip(starts, starts[1:], strict=False)]
    bounds = [0, *seams, total]
    return [
        (a * stride, min(num_samples, a * stride + chunk_samples), bounds[k], bounds[k + 1])
        for k, a in enumerate(starts)
    ]


def normalize_waveforms(waves: torch.Tensor, lengths: torch.Tensor, eps: float) -> torch.Tensor:
    """Each row's valid samples to zero mean and unit variance, (x - mean) / sqrt(var + eps); padding 0."""
    mask = frame_mask(lengths.to(waves.device), waves.shape[1]).to(waves.dtype)
    count = lengths.to(waves.device).clamp(min=1).to(waves.dtype)[:, None]
    mean = (waves * mask).sum(dim=1, keepdim=True) / count
    var = ((waves - mean).square() * mask).sum(dim=1, keepdim=True) / count
    return (waves - mean) / torch.sqrt(var + eps) * mask


class SslEncoder(nn.Module):
    """Waves -> chosen hidden layers, chunked and stitched: ``forward(waves (B, N), lengths (B,))`` returns
    ``hidden (B, T, L, D)`` and ``frame_lengths (B,)``; frames past a row's length are zero.

    Row b's frames are what the utterance alone gives (``Backend.pads_exactly``: padded rows of one call
    share an encoder forward with an attention mask; otherwise only equal-length chunks do). Works with
    gradients (the stitching is slicing and copying), so a trainer can fine-tune ``self.backend``.
    """

    def __init__(
        self,
        backend: Backend,
        layers: list[int],
        normalize: bool,
        chunk_samples: int,
        overlap_frames: int,
        batch_samples: int,
        max_padding: float = 0.1,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.layers = list(layers)
        self.normalize = normalize
        self.chunk_samples = chunk_samples
        self.overlap_frames = overlap_frames
        self.batch_samples = batch_samples
        self.max_padding = max_padding

    @property
    def layer_dim(self) -> int:
        return self.backend.hidden_dim

    def num_frames(self, num_samples: int) -> int:
        return self.backend.num_frames(num_samples)

    def _groups(
        self, pieces: list[tuple[int, int, int, int, int]]
    ) -> list[list[tuple[int, int, int, int, int]]]:
        """Pieces (row, start, end, keep_from, keep_to) that share one encoder call.

        Sorted by length, a group grows while it fits ``batch_samples`` and, for models that take padded
        rows, while padding stays within ``max_padding`` of its samples (on CPU a padded call costs its
        padding and gains nothing over one call per row); otherwise only equal lengths share a call.
        Whisper pads every chunk to its window anyway.
        """
        fixed = self.backend.window
        groups, current, real = [], [], 0
        for piece in sorted(pieces, key=lambda p: p[2] - p[1]):
            length = piece[2] - piece[1]
            if current:
                # Sorted ascending: this piece would set the padded width of the group.
                width = fixed or length
                if (len(current) + 1) * width > self.batch_samples:
                    split = True
                elif fixed:
                    split = False
                elif self.backend.pads_exactly:
                    split = 1 - (real + length) / ((len(current) + 1) * width) > self.max_padding
                else:
                    split = length != current[-1][2] - current[-1][1]
                if split:
                    groups.append(current)
                    current, real = [], 0
            current.append(piece)
            real += length
        return groups + [current] if current else groups

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = lengths.to(waves.device)
        if self.normalize:
            waves = normalize_waveforms(waves, lengths, self.backend.normalize_eps)
        sizes = [int(n) for n in lengths.tolist()]
        frame_lengths = [self.num_frames(n) for n in sizes]
        pieces = [
            (row, *chunk)
            for row, n in enumerate(sizes)
            for chunk in plan_chunks(n, self.backend, self.chunk_samples, self.overlap_frames)
            if chunk[3] > chunk[2]  # a row too short for one frame runs no encoder call
        ]
        out = waves.new_zeros(len(sizes), max(frame_lengths, default=0), len(self.layers), self.layer_dim)
        stride = self.backend.frame_stride
        for group in self._groups(pieces):
            width = max(end - start for _, start, end, _, _ in group)
            batch = waves.new_zeros(len(group), width)
            for i, (row, start, end, _, _) in enumerate(group):
                batch[i, : end - start] = waves[row, start:end]
            piece_lengths = torch.tensor([end - start for _, start, end, _, _ in group], device=waves.device)
            states = self.backend(batch, piece_lengths)
            chosen = torch.stack([states[i] for i in self.layers], dim=2)  # (G, T', L, D)
            for i, (row, start, _, keep_from, keep_to) in enumerate(group):
                offset = start // stride
                out[row, keep_from:keep_to] = chosen[i, keep_from - offset : keep_to - offset].to(out.dtype)
        return out, torch.tensor(frame_lengths, device=waves.device)


def _resolve_layers(layers: list[int] | None, num_hidden: int, checkpoint: str) -> list[int]:
    if layers is None:
        return list(range(num_hidden))
    resolved = [i + num_hidden if i < 0 else i for i in layers]
    bad = [i for i, r in zip(layers, resolved, strict=True) if not 0 <= r < num_hidden]
    if bad or not resolved:
        raise SertkError(
            f"layers: {checkpoint} has hidden states 0..{num_hidden - 1} (0 = the transformer's input), "
            f"got {layers}"
        )
    if len(set(resolved)) != len(resolved):
        raise SertkError(f"layers: each hidden state at most once, got {layers}")
    return resolved


def checkpoint_files(cfg: SslConfig) -> list[Path]:
    """The files the checkpoint of ``cfg`` is read from (those its sha256 covers), without loading it."""
    path = Path(cfg.checkpoint).expanduser()
    if cfg.torchaudio_builder:
        if not path.is_file():
            raise SertkError(f"{path}: torchaudio weight file not found")
        return [path]
    if path.is_dir():
        return hf_dir_files(path)
    if path.is_file():
        raise SertkError(f"{path}: a weight file needs torchaudio_builder (or give a Hugging Face model dir)")
    raise SertkError(
        f"{path}: checkpoint not found (a local model dir or weight file; nothing is downloaded)"
    )


_DIGESTS: dict[tuple, str] = {}


def checkpoint_digest(cfg: SslConfig) -> str:
    """sha256 of the checkpoint files (``file_digest``), remembered per (path, size, mtime) in this process:
    a training run names its encoder in the experiment's provenance and loads it once per fold."""
    files = checkpoint_files(cfg)
    stamp = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _DIGESTS:
        _DIGESTS[stamp] = file_digest(files)
    return _DIGESTS[stamp]


def load_encoder(cfg: SslConfig) -> tuple[SslEncoder, SslConfig]:
    """The encoder a config names, and the config with what it left open filled in from the checkpoint."""
    path = Path(cfg.checkpoint).expanduser()
    digest = checkpoint_digest(cfg)
    if cfg.torchaudio_builder:
        backend = load_torchaudio_file(path, cfg.torchaudio_builder, cfg.torchaudio_args)
    else:
        backend, _ = load_hf_dir(path)
    if cfg.checkpoint_sha256 and cfg.checkpoint_sha256 != digest:
        raise SertkError(
            f"{path}: sha256 {digest[:12]}... is not the pinned checkpoint_sha256 {cfg.checkpoint_sha256[:12]}..."
        )
    if cfg.layer_dim and cfg.layer_dim != backend.hidden_dim:
        raise SertkError(
            f"layer_dim: {path} has {backend.hidden_dim}-dim hidden states, the config says {cfg.layer_dim}"
        )
    layers = _resolve_layers(cfg.layers, backend.num_hidden, str(path))
    normalize = backend.normalize_default if cfg.normalize_waveform is None else cfg.normalize_waveform
    chunk_seconds = cfg.max_chunk_seconds
    if backend.window is not None:
        chunk_seconds = min(chunk_seconds, backend.window / SAMPLE_RATE)
    chunk_samples = int(round(chunk_seconds * SAMPLE_RATE))
    overlap_frames = int(round(cfg.overlap_seconds * SAMPLE_RATE / backend.frame_stride))
    if backend.num_frames(chunk_samples) - overlap_frames < 1:
        raise SertkError(
            f"overlap_seconds: {cfg.overlap_seconds} s leaves no hop between {chunk_seconds:g}-s chunks of {path}"
        )
    batch_samples = max(int(cfg.batch_seconds * SAMPLE_RATE), chunk_samples)
    encoder = SslEncoder(
        backend, layers, normalize, chunk_samples, overlap_frames, batch_samples, cfg.max_padding
    )
    resolved = dataclasses.replace(
        cfg,
        layers=layers,
        layer_dim=backend.hidden_dim,
        normalize_waveform=normalize,
        checkpoint_sha256=digest,
    )
    return encoder.eval(), resolved


def layer_layout(feat_config: dict) -> tuple[int, int]:
    """(L, D) of an ssl dump from its recorded feature config: each (T, L·D) matrix reshapes to (T, L, D)."""
    try:
        num_layers = 1 if feat_config["average_layers"] else len(feat_config["layers"])
        return num_layers, int(feat_config["layer_dim"])
    except (KeyError, TypeError):
        raise SertkError(
            "feature config: not an ssl dump (needs layers, layer_dim, average_layers)"
        ) from None


class SslFeatures(FeatureExtractor):
    """Hidden layers of a self-supervised encoder, (T, L·D) per utterance or their mean, (T, D).

    Layer-wise features as in SUPERB (Yang et al., Interspeech 2021, §3: the frozen upstream's hidden
    states of every layer, weighted by the downstream). Frames: the conv stack's n -> floor((n - k) / s) + 1
    per layer (floor((n - 400) / 320) + 1 for the standard 7-layer stack, 50 Hz), Whisper's
    ceil(floor(n / 160) / 2). ``compute`` returns float32 like every feature; the dump stores ``dtype``
    (``storage_dtype``, float16 by default).
    """

    Config = SslConfig
    version: ClassVar[int] = 1

    def __init__(self, cfg: SslConfig) -> None:
        self.encoder, resolved = load_encoder(cfg)
        super().__init__(resolved)

    @property
    def storage_dtype(self) -> str:
        return self.cfg.dtype

    @property
    def num_layers(self) -> int:
        return 1 if self.cfg.average_layers else len(self.cfg.layers)

    @property
    def dim(self) -> int:
        return self.num_layers * self.cfg.layer_dim

    def num_frames(self, num_samples: int) -> int:
        return self.encoder.num_frames(num_samples)

    def compute(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder.to(waves.device)
        with torch.inference_mode():
            hidden, _ = encoder(waves.float(), lengths)
        return hidden.mean(dim=2) if self.cfg.average_layers else hidden.flatten(2)
