"""Classification metrics (scikit-learn) and the PNGs: training curves and the confusion matrix (Pillow)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from effdet_rt.trainer.loss_curve import HEIGHT, WIDTH, draw_loss_curve
from effdet_rt.utils.atomic import atomic_write_bytes

CURVE_PANELS = (("loss", "training loss"), ("val_loss", "validation loss"), ("accuracy", "training accuracy"),
                ("val_accuracy", "validation accuracy"))


def write_png(path: str | os.PathLike, image: Image.Image) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def write_training_curves(path: str | os.PathLike, epochs: Sequence[int], values: dict[str, Sequence[float]]) -> Path:
    """Loss and accuracy per epoch, train and validation, as a 2x2 grid of the detector's curve panels."""
    canvas = Image.new("RGB", (2 * WIDTH, 2 * HEIGHT), "white")
    for slot, (name, title) in enumerate(CURVE_PANELS):
        series = list(values.get(name, []))
        panel = draw_loss_curve(list(epochs)[-len(series):] if series else [], series, f"{title} per epoch")
        canvas.paste(panel, ((slot % 2) * WIDTH, (slot // 2) * HEIGHT))
    return write_png(path, canvas)


def top_k_accuracy(labels: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the k most probable (k capped at the number of classes)."""
    if not len(labels):
        return 0.0
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def classification_metrics(labels: Sequence[int], probabilities: np.ndarray, classes: Sequence[str],
                           top_k: int) -> dict[str, Any]:
    """top-1 / top-k accuracy, per-class precision / recall / F1 / support and the confusion matrix (rows: truth)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0)
    matrix = confusion_matrix(labels, predicted, labels=indices)
    k = min(top_k, len(classes))
    return {
        "num_images": int(len(labels)),
        "top_1_accuracy": top_k_accuracy(labels, probabilities, 1),
        f"top_{k}_accuracy": top_k_accuracy(labels, probabilities, k),
        "top_k": k,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "classes": list(classes),
        "confusion_matrix": matrix.astype(int).tolist(),
    }


def draw_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], cell: int = 48) -> Image.Image:
    """Rows = true class, columns = predicted; each cell shaded by its share of the row, with its count."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    margin = 16 + 7 * max((len(c) for c in classes), default=4)
    image = Image.new("RGB", (margin + n * cell + 10, margin + n * cell + 30), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 4), "confusion matrix (rows: true, columns: predicted)", fill="black")
    rows = counts.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(n):
        draw.text((4, margin + i * cell + cell // 2 - 5), classes[i], fill="black")
        draw.text((margin + i * cell + 2, margin - 14), classes[i][: cell // 7], fill="black")
        for j in range(n):
            share = counts[i, j] / rows[i, 0]
            shade = int(255 - 200 * share)
            box = [margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1]
            draw.rectangle(box, fill=(shade, shade, 255), outline="black")
            draw.text((box[0] + 4, box[1] + cell // 2 - 5), str(int(counts[i, j])),
                      fill="white" if share > 0.6 else "black")
    return image


def format_report(metrics: dict[str, Any]) -> str:
    """The printed report: accuracies, a per-class table and the confusion matrix."""
    classes = metrics["classes"]
    k = metrics["top_k"]
    width = max(8, *(len(c) for c in classes))
    lines = [f"images: {metrics['num_images']}",
             f"top-1 accuracy: {metrics['top_1_accuracy']:.4f}"]
    if k > 1:
        lines.append(f"top-{k} accuracy: {metrics[f'top_{k}_accuracy']:.4f}")
    lines += ["", f"{'class':<{width}}  precision  recall     f1  support"]
    for name in classes:
        row = metrics["per_class"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  {row['support']:7d}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              f"{'':<{width}}  " + "  ".join(f"{c[:8]:>8}" for c in classes)]
    for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)
