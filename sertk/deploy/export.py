"""``sertk export``: a model package as a TorchScript or ONNX network, checked against PyTorch on the spot.

Exported interface (documented in README; ``OUT.json`` beside the network repeats it with the classes):

- features input (default): ``feats`` (batch, time, D) float32 raw features as ``sertk feats`` writes
  them (normalisation is inside the network), ``lengths`` (batch,) int64 valid frames per row;
- waveform input (``--from-waveform``, where the feature transform traces): ``waves`` (batch, samples)
  float32 in [-1, 1] at the package's sample rate, mono, zero-padded, ``lengths`` (batch,) int64 samples;
- output ``posteriors`` (batch, C) float32, softmax over the classes in the package's order.

Batch and time axes are dynamic. Cropping (``input.max_frames``) and segmenting (``input.segment_frames``)
stay outside the network: a segment-trained model (attn-pool) scores one row per segment and the caller
averages an utterance's rows, as ``sertk infer`` does. Both formats are traced with a padded batch, so the
masking branches of the models are the ones exported (they are exact for unpadded rows too).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sertk.deploy.package import load_models, manifest
from sertk.errors import SertkError
from sertk.features import build_feature
from sertk.features.base import FeatureExtractor
from sertk.features.frames import num_frames
from sertk.inputs.batch import Normalizer
from sertk.inputs.featureset import minmax_mulaw
from sertk.models.trained import TrainedModel
from sertk.utils import atomic_path, console, write_json

EXPORT_FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 17
TOLERANCE = 1e-4
# (rows, frames) of the traced batch and of the parity checks: one larger, one smaller in both.
TRACE_SIZE = (3, 120)
CHECK_SIZES = ((5, 173), (2, 61))


class FeaturesToPosteriors(nn.Module):
    """Per-row scaling (``segment_scaling``), normalisation on real frames, fixed padding, network, softmax.

    (B, T, D), (B,) -> (B, C): what ``sertk.inputs.batch.model_batch`` does to a batch of rows, in a graph.
    """

    def __init__(self, model: nn.Module, trained: TrainedModel) -> None:
        super().__init__()
        self.model = model
        self.normalized = trained.norm_mean is not None
        self.register_buffer("mean", trained.norm_mean if self.normalized else torch.zeros(0))
        self.register_buffer("std", trained.norm_std if self.normalized else torch.ones(0))
        cfg = trained.input
        self.mu = cfg.segment_mu if cfg.segment_scaling == "minmax-mulaw" else 0.0
        self.fixed_pad = cfg.pad == "fixed"

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.mu > 0:
            feats = minmax_mulaw(feats, lengths, self.mu)
        if self.normalized:
            feats = Normalizer(self.mean, self.std)(feats, lengths)
        if self.fixed_pad:
            lengths = torch.full_like(lengths, feats.shape[1])
        return self.model(feats, lengths).softmax(dim=-1)


def frame_rule(extractor: FeatureExtractor) -> tuple[int, int]:
    """(first, shift) with num_frames(n) = max(0, 1 + (n - first) // shift), read off the extractor.

    Kaldi-style framing with and without snip_edges both have this form; a feature type that does not is
    refused, because the exported network must count frames with tensor arithmetic.
    """
    first = next((n for n in range(1, 10 * extractor.sample_rate) if extractor.num_frames(n) >= 1), None)
    if first is None:
        raise SertkError("feature gives no frame for 10 s of audio")
    shift = next(n for n in range(1, extractor.sample_rate) if extractor.num_frames(first + n) == 2)
    probe = np.random.default_rng(0).integers(0, 30 * extractor.sample_rate, 200)
    if any(extractor.num_frames(int(n)) != max(0, 1 + (int(n) - first) // shift) for n in probe):
        raise SertkError("feature's frame count is not of the form 1 + (samples - first) // shift")
    return first, shift


class WaveformToPosteriors(nn.Module):
    """Feature transform + FeaturesToPosteriors: (B, N) waveforms, (B,) samples -> (B, C) posteriors."""

    def __init__(self, extractor: FeatureExtractor, net: FeaturesToPosteriors) -> None:
        super().__init__()
        self.extractor = extractor
        self.first, self.shift = frame_rule(extractor)
        self.net = net

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.extractor.compute(waves, lengths)
        frames = num_frames(lengths, self.first, self.shift)
        return self.net(feats, frames.clamp(min=1, max=feats.shape[1]))


def example_batch(
    package: TrainedModel, extractor: FeatureExtractor, waveform: bool, seed: int, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random padded batch of ``size`` = (rows, frames), with rows of different lengths (first row full)."""
    gen = torch.Generator().manual_seed(seed)
    rows, frames = size
    if waveform:
        width = frames * extractor.sample_rate // 100 + extractor.sample_rate // 40
        lengths = torch.randint(width // 3, width + 1, (rows,), generator=gen)
        lengths[0] = width
        waves = 0.1 * torch.randn(rows, width, generator=gen)
        return waves * (torch.arange(width)[None, :] < lengths[:, None]), lengths
    lengths = torch.randint(max(1, frames // 3), frames + 1, (rows,), generator=gen)
    lengths[0] = frames
    scale = package.norm_std if package.norm_std is not None else torch.ones(extractor.dim)
    shift = package.norm_mean if package.norm_mean is not None else torch.zeros(extractor.dim)
    feats = torch.randn(rows, frames, extractor.dim, generator=gen) * scale + shift
    return feats * (torch.arange(frames)[None, :] < lengths[:, None])[..., None], lengths


def trace(net: nn.Module, example: tuple[torch.Tensor, torch.Tensor], fmt: str, names: list[str]) -> bytes:
    """The traced network as the bytes of a TorchScript archive or an ONNX model."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Tracing warns about every Python int it records; the parity check is what tells if one mattered.
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(net, example, check_trace=False), buffer)
        else:
            axes = {names[0]: {0: "batch", 1: "time"}, names[1]: {0: "batch"}, "posteriors": {0: "batch"}}
            torch.onnx.export(
                net,
                example,
                buffer,
                dynamo=False,
                input_names=names,
                output_names=["posteriors"],
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
            )
    return buffer.getvalue()


def run_exported(
    data: bytes, fmt: str, names: list[str], batch: tuple[torch.Tensor, torch.Tensor]
) -> np.ndarray:
    """Posteriors of the exported network (TorchScript, or onnxruntime on CPU) for one batch."""
    if fmt == "torchscript":
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.11 deprecates TorchScript loading
            return torch.jit.load(io.BytesIO(data)).eval()(*batch).numpy()
    try:
        import onnxruntime
    except ImportError:
        raise SertkError(
            "--format onnx: the parity check needs onnxruntime (pip install 'sertk[onnx]')"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failing node is reported once, in sertk's error, not also in ORT's log
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {name: x.numpy() for name, x in zip(names, batch, strict=True)})[0]


def build_network(
    package: TrainedModel, from_waveform: bool
) -> tuple[nn.Module, list[str], FeatureExtractor]:
    """The network to export (features or waveform -> posteriors), its input names and feature extractor."""
    extractor = build_feature(package.feat, package.feat_config)
    net: nn.Module = FeaturesToPosteriors(package.build("cpu"), package).eval()
    for module in net.modules():
        if not getattr(module, "traceable", True):
            raise SertkError(
                f"{package.arch}: does not export: its {type(module).__name__} loops over the steps in Python, "
                "which a trace would unroll to the traced length"
            )
    if not from_waveform:
        return net, ["feats", "lengths"], extractor
    try:
        return WaveformToPosteriors(extractor, net).eval(), ["waves", "lengths"], extractor
    except SertkError as err:
        raise SertkError(f"--from-waveform: {package.feat}: {err}") from None


def traced_with_parity(
    package: TrainedModel, net: nn.Module, names: list[str], extractor: FeatureExtractor, fmt: str, seed: int
) -> tuple[bytes, float, list[tuple[int, ...]]]:
    """(exported bytes, max |Δ| against PyTorch, checked batch shapes), traced at TRACE_SIZE.

    The check batches have more and fewer rows and frames than the traced one: a batch or time size baked
    into the graph (a Python loop over the frames, unrolled by the tracer) fails one of them.
    """
    waveform = names[0] == "waves"
    checks = [
        example_batch(package, extractor, waveform, seed + 1 + i, size) for i, size in enumerate(CHECK_SIZES)
    ]
    try:
        data = trace(net, example_batch(package, extractor, waveform, seed, TRACE_SIZE), fmt, names)
        got = [run_exported(data, fmt, names, check) for check in checks]
    except SertkError:
        raise
    except Exception as err:  # tracing and exporters raise many types for an unsupported operation
        what = f"{package.feat} + {package.arch}" if waveform else package.arch
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        # The TorchScript interpreter puts its traceback between a generic first line and the cause.
        reason = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
        raise SertkError(f"{what}: does not export to {fmt} ({type(err).__name__}: {reason[:200]})") from None
    with torch.inference_mode():
        delta = max(
            float(np.abs(g - net(*check).numpy()).max()) for g, check in zip(got, checks, strict=True)
        )
    return data, delta, [tuple(check[0].shape) for check in checks]


def export_model(
    model: Path, out: Path, fmt: str = "torchscript", from_waveform: bool = False, seed: int = 0
) -> float:
    """Export ``model`` (one package, best.pt or fold dir) to ``out``; return the parity check's max |Δ|.

    The parity check runs PyTorch and the exported network on random padded batches larger and smaller
    than the one traced (so a baked-in batch or time size fails it); above 1e-4 nothing is written.
    """
    if fmt not in EXPORT_FORMATS:
        raise SertkError(f"--format {fmt}: expected one of {', '.join(EXPORT_FORMATS)}")
    if Path(out).is_dir():
        raise SertkError(
            f"{out}: is a directory; give the network file to write (e.g. {Path(out) / 'model.onnx'})"
        )
    packages = load_models(model)
    if len(packages) > 1:
        raise SertkError(
            f"{model}: holds {len(packages)} models; export one fold (e.g. {packages[0].source})"
        )
    package = packages[0]
    if package.encoder is not None:
        raise SertkError(
            f"{package.source}: the model runs a pretrained SSL encoder (model.encoder); export supports models "
            "on dumped features (train on --feat ssl to export one)"
        )
    net, names, extractor = build_network(package, from_waveform)
    data, delta, shapes = traced_with_parity(package, net, names, extractor, fmt, seed)
    console.print(
        f"export: parity check on random batches {' and '.join(map(str, shapes))}: max |Δ| = {delta:.3g}"
    )
    if not delta < TOLERANCE:
        raise SertkError(
            f"{model}: exported {fmt} network differs from PyTorch by {delta:.3g} (> {TOLERANCE})"
        )
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    shapes = ["batch", "samples"] if from_waveform else ["batch", "time", package.input_dim]
    interface = {
        **{k: v for k, v in manifest(package).items() if k != "format"},
        "export_format": fmt,
        "inputs": {names[0]: shapes, "lengths": ["batch"]},
        "outputs": {"posteriors": ["batch", len(package.classes)]},
        "sample_rate": extractor.sample_rate,
        "parity_max_abs_diff": delta,
    }
    write_json(Path(f"{out}.json"), interface)
    console.print(f"export: {package.arch} ({names[0]} -> posteriors, {fmt}) -> {out} (+ {out}.json)")
    return delta
