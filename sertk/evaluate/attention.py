"""Attention plots: a test utterance's waveform and features with the model's attention weights beneath.

lstm_attention.txt §2 argues that the LSTM attention gives low weight to silence and to non-emotional
voiced parts; these PNGs let a reader check that on real utterances. Any arch with an
``attention(feats, lengths) -> (B, T)`` method can be plotted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sertk.data.folds import select_folds
from sertk.errors import SertkError
from sertk.evaluate.inference import experiment_inputs
from sertk.features.audio import read_audio
from sertk.inputs.batch import model_batch
from sertk.inputs.featureset import build_feature_set, load_frames
from sertk.models.trained import TrainedModel
from sertk.utils import atomic_path, console, resolve_device


def pick_utterances(labels: list[int], count: int) -> list[int]:
    """Indices of ``count`` utterances taking the classes in turn: each class's first, then its second, ..."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    queues = [by_class[c] for c in sorted(by_class)]
    picked: list[int] = []
    depth = 0
    while len(picked) < count and any(depth < len(q) for q in queues):
        picked += [q[depth] for q in queues if depth < len(q)]
        depth += 1
    return picked[:count]


def plot_utterance_attention(
    path: Path,
    feats: np.ndarray,
    alpha: np.ndarray,
    frame_shift_s: float,
    title: str,
    wave: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """PNG of the waveform (when given), the (T, D) features and the attention curve alpha (T,) under them."""
    panels = 3 if wave is not None else 2
    fig = Figure(figsize=(10, 1.2 + 1.8 * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True)
    fig.suptitle(title, fontsize=10)
    duration = len(alpha) * frame_shift_s
    if wave is not None:
        time = np.arange(len(wave)) / sample_rate
        axes[0].plot(time, wave, linewidth=0.4, color="0.3")
        axes[0].set_ylabel("waveform")
    feat_ax, alpha_ax = axes[-2], axes[-1]
    feat_ax.imshow(
        feats.T, aspect="auto", origin="lower", cmap="viridis", extent=(0, duration, 0, feats.shape[1])
    )
    feat_ax.set_ylabel("feature dim")
    centres = (np.arange(len(alpha)) + 0.5) * frame_shift_s
    alpha_ax.plot(centres, alpha, color="C3")
    alpha_ax.fill_between(centres, alpha, color="C3", alpha=0.3)
    alpha_ax.set_ylim(bottom=0)
    alpha_ax.set_xlim(0, duration)
    alpha_ax.set(xlabel="time (s)", ylabel="attention")
    alpha_ax.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _waveform(wav_path: str, sample_rate: int, seconds: float) -> np.ndarray | None:
    """The first ``seconds`` of an utterance's audio, or None when it cannot be read."""
    try:
        wave, _, _ = read_audio(wav_path, sample_rate)
    except SertkError as err:
        console.print(f"attention plot: no waveform panel ({err})")
        return None
    return wave[: int(round(seconds * sample_rate))]


@torch.no_grad()
def plot_attention(
    exp: Path, count: int = 4, fold: str = "all", device: str = "auto", checkpoint: str = "best.pt"
) -> list[Path]:
    """Write ``<exp>/<fold>/attention/<utt>.png`` for ``count`` test utterances of each selected fold.

    The model sees exactly what ``sertk eval`` gives it (cropped, normalised; a segmented config's first
    segment). The waveform is drawn over the same frames, so it is left out when a centre or random crop
    moved the start of a long utterance.
    """
    exp = Path(exp)
    if count < 1:
        raise SertkError(f"--plot-attention: expected a number of utterances >= 1, got {count}")
    info, data, folds = experiment_inputs(exp)
    dev = resolve_device(device)
    written = []
    for spec in select_folds(folds, fold):
        trained = TrainedModel.from_checkpoint(exp / spec["name"] / checkpoint)
        model = trained.build(dev)
        if not callable(getattr(model, "attention", None)):
            raise SertkError(f"{trained.source}: arch {trained.arch} has no attention weights to plot")
        labels = data.labels(list(spec["test"]))
        chosen = [spec["test"][i] for i in pick_utterances(labels, count)]
        store = load_frames(Path(info["feats"]), chosen, 2**30)
        fset = build_feature_set(store, chosen, data.labels(chosen), trained.input, training=False)
        # The first row of each utterance: the utterance itself, or its first segment.
        rows = torch.searchsorted(fset.owner, torch.arange(len(chosen)))
        batch, lengths, _ = model_batch(fset, rows, dev, trained.normalizer)
        alpha = model.attention(batch, lengths).float().cpu().numpy()
        probs = model(batch, lengths).softmax(dim=-1).float().cpu().numpy()
        shift_s = float(trained.feat_config.get("frame_shift_ms", 10.0)) / 1000.0
        sample_rate = int(trained.feat_config.get("sample_rate", 16000))
        out_dir = exp / spec["name"] / "attention"
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, utt in enumerate(chosen):
            length = int(lengths[k])
            real = int(fset.lengths[rows[k]])
            starts_at_zero = int(fset.crop_start[k]) == 0
            wave = _waveform(data["wav.scp"][utt], sample_rate, real * shift_s) if starts_at_zero else None
            label, pred = trained.classes[int(fset.labels[k])], trained.classes[int(probs[k].argmax())]
            title = f"{utt}: true {label}, predicted {pred} (p={probs[k].max():.2f}), {trained.arch}"
            path = out_dir / f"{utt}.png"
            plot_utterance_attention(
                path, batch[k, :length].cpu().numpy(), alpha[k, :length], shift_s, title, wave, sample_rate
            )
            written.append(path)
        console.print(f"{spec['name']}: {len(chosen)} attention plot(s) -> {out_dir}")
    return written
