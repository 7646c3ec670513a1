"""Evaluation pictures: confusion matrix, most confident mistakes, training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.evaluate._metrics import Evaluation
from transferpilot.images import open_rgb
from transferpilot.plotting import pyplot, save_figure


@dataclass(frozen=True)
class Mistake:
    """One wrong answer: the image, the truth, the answer and its probability."""

    path: str
    actual: str
    predicted: str
    confidence: float


def confident_mistakes(
    paths: Sequence[str], labels: Sequence[str], proba: np.ndarray, classes: Sequence[str], n: int
) -> list[Mistake]:
    """The ``n`` wrong predictions made with the highest probability."""
    pred = np.asarray(proba).argmax(axis=1)
    conf = np.asarray(proba).max(axis=1)
    wrong = [i for i, (p, lb) in enumerate(zip(pred, labels, strict=True)) if classes[p] != lb]
    wrong.sort(key=lambda i: (-conf[i], paths[i]))
    return [
        Mistake(str(paths[i]), str(labels[i]), str(classes[pred[i]]), float(conf[i]))
        for i in wrong[:n]
    ]


def plot_confusion(evaluation: Evaluation, path: Path, title: str) -> Path:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    plt = pyplot()
    n = len(evaluation.classes)
    side = min(14.0, 2.5 + 0.45 * n)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side + 0.6), dpi=100)
    matrices = (np.asarray(evaluation.confusion), np.asarray(evaluation.confusion_normalised))
    for ax, matrix, name in zip(
        axes, matrices, ("counts", "normalised by true class"), strict=True
    ):
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=matrix.max() or 1)
        ax.set_xticks(range(n), evaluation.classes, rotation=45, ha="right")
        ax.set_yticks(range(n), evaluation.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(name)
        if n <= 25:
            top = matrix.max() or 1
            for (r, c), value in np.ndenumerate(matrix):
                text = f"{value:d}" if matrix.dtype.kind == "i" else f"{value:.2f}"
                color = "white" if value > 0.6 * top else "black"
                ax.text(c, r, text, ha="center", va="center", fontsize=8, color=color)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_mistakes(
    mistakes: Sequence[Mistake],
    path: Path,
    root: Path = Path("."),
    title: str = "Most confident mistakes (actual → predicted, probability)",
    overlays: Sequence[Any | None] = (),
) -> Path:
    """A grid of thumbnails, each captioned 'actual → predicted (probability)'; where
    ``overlays`` has an explanation for a mistake (:class:`~transferpilot.explain.Explanation`,
    in the same order), its heat map over the image as the model saw it instead."""
    plt = pyplot()
    cols = 4
    rows = max(1, -(-len(mistakes) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), dpi=90, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not mistakes:
        axes[0][0].text(0, 0.5, "no mistakes", fontsize=14)
    shown = list(overlays) + [None] * (len(mistakes) - len(overlays))
    for ax, m, explained in zip(axes.flat, mistakes, shown, strict=False):
        try:
            if explained is not None:
                image = explained.overlay()
            else:
                image = open_rgb(root / m.path)
                image.thumbnail((256, 256))
            ax.imshow(np.asarray(image))
        except (OSError, ValueError) as err:
            ax.text(0, 0.5, f"unreadable: {err}", fontsize=7, wrap=True)
        ax.set_title(f"{m.actual} → {m.predicted} ({m.confidence:.2f})", fontsize=9)
        ax.set_xlabel(Path(m.path).name, fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_curves(curves: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Per-epoch loss and accuracy (train, and the held-in split that chose the epoch)."""
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for ax, kind in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        for split in ("train", "held_in"):
            values = curves.get(f"{split}_{kind}")
            if values:
                ax.plot(
                    range(1, len(values) + 1), values, marker="o", label=split.replace("_", "-")
                )
        ax.set_xlabel("epoch")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)
