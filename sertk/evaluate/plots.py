"""PNG figures for scoring: confusion matrices (crnn_discriminative.txt Fig. 2), learning curves and
per-class recall bars.

Figures are built on matplotlib's object API with the Agg canvas, so no display or global pyplot state is
involved. Each ``*_figure`` function builds a figure; ``plot_*`` writes it as a PNG under a temporary name
renamed into place, and ``png_bytes`` renders it in memory (for the HTML report).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sertk.utils import atomic_path

DPI = 100


def _save(fig: Figure, path: Path) -> None:
    """Render ``fig`` to ``path`` atomically; the temp name has no .png suffix, so the format is explicit."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def png_bytes(fig: Figure) -> bytes:
    """``fig`` rendered as PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def row_normalised_percent(cm: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix as percentages of that true class; rows without utterances stay 0."""
    cm = np.asarray(cm, dtype=float)
    support = cm.sum(axis=1, keepdims=True)
    return 100.0 * cm / np.maximum(support, 1.0)


def draw_confusion(ax: Axes, cm: np.ndarray, classes: list[str], title: str, fontsize: float = 9) -> None:
    """Row-normalised % as colour and text, with the raw counts beneath; true class on rows."""
    cm = np.asarray(cm)
    pct = row_normalised_percent(cm)
    ax.imshow(pct, cmap="Blues", vmin=0.0, vmax=100.0)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, fontsize=fontsize)
    ax.set_yticks(ticks, labels=classes, fontsize=fontsize)
    ax.set_xlabel("predicted", fontsize=fontsize)
    ax.set_ylabel("true", fontsize=fontsize)
    ax.set_title(title, fontsize=fontsize + 1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            # White text on dark cells keeps the numbers legible across the colour map.
            colour = "white" if pct[i, j] > 60 else "black"
            ax.text(
                j,
                i,
                f"{pct[i, j]:.1f}%\n({cm[i, j]})",
                ha="center",
                va="center",
                color=colour,
                fontsize=fontsize,
            )


def confusion_figure(cm: np.ndarray, classes: list[str], title: str) -> Figure:
    """One confusion matrix (row-normalised %, counts in cells)."""
    side = 1.2 + 0.9 * len(classes)
    fig = Figure(figsize=(side + 0.6, side), layout="constrained")
    draw_confusion(fig.add_subplot(), cm, classes, title)
    return fig


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Write one confusion matrix (row-normalised %, counts in cells) as a PNG."""
    _save(confusion_figure(cm, classes, title), path)


def plot_confusion_grid(cms: list[tuple[str, np.ndarray, list[str]]], path: Path, title: str) -> None:
    """Write a grid of small confusion matrices, one per system (crnn_discriminative.txt Fig. 2)."""
    cols = min(3, len(cms))
    rows = math.ceil(len(cms) / cols)
    cell = 1.0 + 0.7 * max(len(classes) for _, _, classes in cms)
    fig = Figure(figsize=(cols * cell, rows * cell + 0.4), layout="constrained")
    fig.suptitle(title)
    for k, (name, cm, classes) in enumerate(cms):
        draw_confusion(fig.add_subplot(rows, cols, k + 1), cm, classes, name, fontsize=7)
    _save(fig, path)


def learning_curves_figure(histories: dict[str, dict[str, np.ndarray]], title: str) -> Figure:
    """Per fold: train/valid loss (left) and valid WA/UA (right) against epoch, from metrics.csv.

    Empty valid_* cells (NaN: a fold without a validation set) leave gaps; a panel with nothing to draw
    says so.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    fig.suptitle(title)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for k, (fold, hist) in enumerate(histories.items()):
        colour = f"C{k % 10}"
        epoch = hist["epoch"]
        # One legend entry per fold (its colour); the panel titles say what solid and dashed mean.
        loss_ax.plot(epoch, hist["train_loss"], color=colour, label=fold)
        loss_ax.plot(epoch, hist["valid_loss"], color=colour, linestyle="--")
        acc_ax.plot(epoch, hist["valid_wa"], color=colour, label=fold)
        acc_ax.plot(epoch, hist["valid_ua"], color=colour, linestyle="--")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss (solid train, dashed valid)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="valid WA (solid), UA (dashed)")
    if histories:
        for ax in (loss_ax, acc_ax):
            ax.legend(fontsize=7, ncol=2)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not any(np.isfinite(h[c]).any() for h in histories.values() for c in ("valid_wa", "valid_ua")):
            acc_ax.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=acc_ax.transAxes)
    else:
        loss_ax.text(0.5, 0.5, "no metrics.csv found", ha="center", va="center", transform=loss_ax.transAxes)
    return fig


def plot_learning_curves(histories: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> None:
    """Write the learning curves of ``histories`` (see learning_curves_figure) as a PNG."""
    _save(learning_curves_figure(histories, title), path)


def recall_bars_figure(
    systems: list[tuple[str, np.ndarray, np.ndarray | None]], classes: list[str], title: str
) -> Figure:
    """Grouped bars of per-class recall (%), one colour per system (crnn_discriminative.txt Fig. 2's
    per-class view), with (2, C) lower/upper interval bounds as error bars where given; NaN recall
    (a class the system never saw) draws no bar."""
    width = 0.8 / max(len(systems), 1)
    fig = Figure(
        figsize=(max(6.0, 1.2 + len(classes) * (0.4 + 0.25 * len(systems))), 4), layout="constrained"
    )
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    for k, (name, recall, interval) in enumerate(systems):
        recall = 100 * np.asarray(recall, dtype=float)
        errors = None
        if interval is not None:
            errors = np.abs(100 * np.asarray(interval, dtype=float) - recall)
        ax.bar(
            x + (k - (len(systems) - 1) / 2) * width,
            np.nan_to_num(recall),
            width,
            yerr=None if errors is None else np.nan_to_num(errors),
            capsize=2,
            label=name,
            color=f"C{k % 10}",
        )
    ax.set_xticks(x, labels=classes)
    ax.set(ylabel="recall (%)", ylim=(0, 105), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, max(len(systems), 1)), loc="lower right")
    return fig
