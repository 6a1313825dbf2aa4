"""Classification metrics (scikit-learn) and their charts: training curves, confusion matrix, per-class scores."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.classification.charts import (
    write_class_scores,
    write_classifier_curves,
    write_confusion_matrix,
)
from effdet_rt.utils.charts import draw_safely


def write_training_curves(path: str | os.PathLike, epochs: Sequence[int], values: dict[str, Sequence[float]]) -> Path:
    """Loss and accuracy per epoch, training and validation (training_curves.png and its JSON data)."""
    return write_classifier_curves(path, epochs, values)


def write_report_charts(results_dir: str | os.PathLike, metrics: dict[str, Any],
                        log: Callable[[str], None] = print) -> list[Path]:
    """confusion_matrix.png (counts and normalised) and class_scores.png (precision / recall / F1 per class), each
    with its JSON data; a chart that cannot be drawn is a warning."""
    results = Path(results_dir)
    charts = [draw_safely(write_confusion_matrix, results / "confusion_matrix.png", metrics["confusion_matrix"],
                          metrics["classes"], log=log),
              draw_safely(write_class_scores, results / "class_scores.png", metrics["per_class"], log=log)]
    return [c for c in charts if c is not None]


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
