"""`effdet-rt classification evaluate` and `inference` on any classifier backend (.edrt, .onnx FP32/INT8, TensorRT
.plan/.engine)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.classification.dataset import read_classmap, relabel, scan_class_folders
from effdet_rt.classification.engines import Classifier, load_classifier
from effdet_rt.classification.images import eval_image
from effdet_rt.classification.report import (
    classification_metrics,
    format_report,
    write_report_charts,
)
from effdet_rt.errors import DataError, UserError
from effdet_rt.evaluation.report import write_metrics_json
from effdet_rt.infer.files import image_inputs, run_files
from effdet_rt.utils.atomic import atomic_write_text
from effdet_rt.utils.status import StatusLogger

INFERENCE_BATCH = 16


@dataclass
class Predictions:
    paths: list[Path]
    probabilities: np.ndarray  # (N, classes), rows in `paths` order
    skipped: list[tuple[str, str]] = field(default_factory=list)


def predict_files(classifier: Classifier, paths: list[Path], batch_size: int, workers: int,
                  description: str = "predict") -> Predictions:
    """Run ``classifier`` on files preprocessed with its own ImageFormat, in fixed chunks of the list
    (`effdet_rt.infer.files.run_files`); unreadable files are skipped and listed."""
    fmt = classifier.fmt
    run = run_files(classifier.predict, paths, lambda path: eval_image(path, fmt), batch_size, workers,
                    len(classifier.classes), description, classifier.describe())
    return Predictions(run.paths, run.outputs, run.skipped)


def resolve_model(given: str | Path | None, from_spec: str, field_name: str) -> Path:
    path = given or from_spec
    if not path:
        raise UserError(f"no model: pass -m model.edrt|model.onnx|model.plan (or set {field_name})")
    return Path(path)


def evaluate_classifier(spec: Any, *, model_path: str | Path | None, key: str | None, results_dir: str | Path,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Top-1 / top-k accuracy, per-class precision / recall / F1 and the confusion matrix on evaluate.dataset_path.

    Writes ``eval_results.json``, ``confusion_matrix.png``, ``class_scores.png`` (each chart with its JSON data) and
    status.json lines into ``results_dir``.
    """

    classifier = load_classifier(resolve_model(model_path, spec.evaluate.model_path, "evaluate.model_path"), key,
                                 spec.key)
    folder = spec.evaluate.dataset_path or spec.data.val_dataset_path
    field_name = "evaluate.dataset_path" if spec.evaluate.dataset_path else "data.val_dataset_path"
    if not folder:
        raise UserError("nothing to evaluate on: set evaluate.dataset_path (one sub-folder of images per class)")
    dataset = relabel(scan_class_folders(folder, field_name), classifier.classes, field_name)
    results = Path(results_dir)
    status = StatusLogger(results)
    status.write("STARTED", f"evaluating {classifier.describe()} on {len(dataset)} images of {folder}")
    predictions = predict_files(classifier, dataset.paths, spec.evaluate.batch_size, spec.evaluate.n_workers, "evaluate")
    labels_of = dict(zip(dataset.paths, dataset.labels, strict=True))
    labels = [labels_of[p] for p in predictions.paths]
    metrics = classification_metrics(labels, predictions.probabilities, classifier.classes, spec.evaluate.top_k)
    metrics["model"] = str(classifier.path) if hasattr(classifier, "path") else ""
    metrics["backend"], metrics["precision"] = classifier.backend, classifier.precision
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in predictions.skipped]
    log(format_report(metrics))
    if predictions.skipped:
        log(f"skipped {len(predictions.skipped)} unreadable image(s) (listed in eval_results.json)")
    write_metrics_json(results, metrics)
    write_report_charts(results, metrics, log=log)
    k = metrics["top_k"]
    status.write("SUCCESS", "evaluation done", kpi={"top_1_accuracy": metrics["top_1_accuracy"],
                                                    f"top_{k}_accuracy": metrics[f"top_{k}_accuracy"]})
    return metrics


def result_csv(paths: list[Path], probabilities: np.ndarray, classes: list[str]) -> str:
    """TAO's result.csv: one row per image, no header: image path, predicted class name, its confidence."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for path, row in zip(paths, probabilities, strict=True):
        best = int(np.argmax(row))
        writer.writerow([str(path), classes[best], repr(float(row[best]))])
    return buffer.getvalue()


def infer_classifier(spec: Any, *, model_path: str | Path | None, image_dir: str | Path | None,
                     classmap: str | Path | None, key: str | None, results_dir: str | Path,
                     log: Callable[[str], None] = print) -> tuple[Path, int]:
    """Classify an image or a folder; writes ``result.csv`` and status.json. Returns (csv path, images skipped)."""

    classifier = load_classifier(resolve_model(model_path, spec.inference.model_path, "inference.model_path"), key,
                                 spec.key)
    target = image_dir or spec.inference.image_dir
    if not target:
        raise UserError("no images: pass -i IMAGE_OR_FOLDER (or set inference.image_dir)")
    classes = list(classifier.classes)
    classmap = classmap or spec.inference.classmap
    if classmap:
        names = read_classmap(classmap)
        if len(names) != len(classes):
            raise DataError(f"{classmap}: {len(names)} classes, but the model has {len(classes)}; pass the "
                            "classmap.json of the run that trained it")
        classes = names
    paths = image_inputs(target)
    results = Path(results_dir)
    status = StatusLogger(results)
    status.write("STARTED", f"inference with {classifier.describe()} on {len(paths)} image(s)")
    predictions = predict_files(classifier, paths, INFERENCE_BATCH, spec.evaluate.n_workers, "inference")
    out = atomic_write_text(results / "result.csv", result_csv(predictions.paths, predictions.probabilities, classes))
    for path, why in predictions.skipped:
        log(f"skipped {path}: {why}")
    log(f"classified {len(predictions.paths)} image(s) -> {out}")
    status.write("SUCCESS" if not predictions.skipped else "PARTIAL",
                 f"wrote {out.name}" + (f"; {len(predictions.skipped)} unreadable skipped" if predictions.skipped else ""),
                 kpi={"images": len(predictions.paths), "skipped": len(predictions.skipped)})
    return out, len(predictions.skipped)
