"""The classification task's charts: confusion matrix, precision / recall / F1 per class, and training curves.

Drawn like every chart of the package (`effdet_rt.utils.charts`): matplotlib's object-oriented API on an Agg canvas,
each PNG written atomically beside a JSON file of the numbers it plots.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from effdet_rt.utils.charts import GRID, finite, new_figure, save_chart


def write_confusion_matrix(path: str | os.PathLike, matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Path:
    """Counts and row-normalised shares (rows: true class, columns: predicted), side by side."""
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64).reshape(len(classes), len(classes))
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    side = max(4.0, 0.5 * len(classes) + 2.5)
    figure, axes = new_figure(2 * side + 1, side, 1, 2)
    for ax, values, title, text in ((axes[0], counts, "counts", lambda v: f"{int(v)}"),
                                    (axes[1], shares, "normalised by true class", lambda v: f"{v:.2f}")):
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(1, values.max()) if values is counts else 1)
        figure.colorbar(image, ax=ax, shrink=0.8)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right")
        ax.set_yticks(ticks, classes)
        ax.set(title=title, xlabel="predicted", ylabel="true")
        if len(classes) <= 30:
            for i in ticks:
                for j in ticks:
                    ax.text(j, i, text(values[i, j]), ha="center", va="center", fontsize="small",
                            color="white" if shares[i, j] > 0.6 else "black")
    figure.suptitle("confusion matrix")
    return save_chart(figure, path, {"classes": list(classes), "counts": counts.tolist(),
                                     "normalised": shares.round(6).tolist()})


def write_class_scores(path: str | os.PathLike, per_class: Mapping[str, Mapping[str, float]]) -> Path:
    """Precision, recall and F1 per class as grouped bars."""
    import numpy as np

    names = list(per_class)
    figure, ax = new_figure(max(6.0, 0.8 * len(names) + 3), 5)
    x = np.arange(len(names))
    for offset, (score, colour) in zip((-0.27, 0.0, 0.27), (("precision", "tab:blue"), ("recall", "tab:orange"),
                                                            ("f1", "tab:green")), strict=True):
        ax.bar(x + offset, [float(per_class[n][score]) for n in names], width=0.27, label=score, color=colour)
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set(title="precision / recall / F1 per class", ylim=(0, 1.1))
    ax.grid(True, axis="y", **GRID)
    ax.legend(loc="upper right")
    data = {score: [float(per_class[n][score]) for n in names] for score in ("precision", "recall", "f1")}
    return save_chart(figure, path, {"classes": names, **data})


CLASSIFIER_PANELS = (("loss", "val_loss", "loss"), ("accuracy", "val_accuracy", "accuracy"))


def write_classifier_curves(path: str | os.PathLike, epochs: Sequence[int], values: Mapping[str, Sequence[float]]) -> Path:
    """Loss and accuracy per epoch, training and validation on the same axes."""
    figure, axes = new_figure(11, 4.5, 1, 2)
    epochs = list(epochs)
    for ax, (train_name, val_name, title) in zip(axes, CLASSIFIER_PANELS, strict=True):
        for name, label, colour in ((train_name, "training", "tab:blue"), (val_name, "validation", "tab:orange")):
            series = finite(values.get(name, []))
            if series:
                ax.plot(epochs[-len(series):], series, marker="o", color=colour, label=label)
        ax.set(title=f"{title} per epoch", xlabel="epoch", ylabel=title)
        ax.grid(True, **GRID)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    return save_chart(figure, path, {"epochs": epochs, **{k: finite(v) for k, v in values.items()}})
