"""The detector's parts of a file converted straight from the checkpoint (the backend table's `exporter` column:
LiteRT's .tflite; the flow is export/flow.py's): its calibration batches and packed labels, and `--verify` as for
ONNX: raw heads of TensorFlow vs the written file, detections matched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.backends import Backend
from effdet_rt.calib.batches import calibration_batches
from effdet_rt.data.tfrecord import resolve_tfrecords
from effdet_rt.engines.registry import runtime_module
from effdet_rt.errors import UserError
from effdet_rt.export.verify import DetectionAgreement, Figure, MatchReport, VerifyReport, match_detections
from effdet_rt.export.verify_run import HEADS, MAX_HEAD_DIFF, comparable
from effdet_rt.onnx.tasks import default_model_task

CONVERTED_COMPARED = "same class, IoU >= 0.99, scores >= 0.05 clear of the top-k cut"


def converted_report(head_diff: float, match: MatchReport, images: int, title: str) -> VerifyReport:
    """head_diff: max |TF - file| of the class scores (after the sigmoid) and box codes, divided by the largest
    TF value of each; match: detections of the checkpoint engine vs the file's own NMS (or host NMS)."""
    heads = Figure(HEADS, head_diff, MAX_HEAD_DIFF,
                   f"raw heads max |TF - {title}| / largest = {{value:.2e}} (limit {{limit:.0e}})")
    return VerifyReport(images, (heads,), DetectionAgreement(match, CONVERTED_COMPARED))


def calibration_for(spec: Any, input_size: tuple[int, int], log: Callable[[str], None]):
    calib = spec.build.calibration
    if not calib.tfrecords:
        return None
    resolve_tfrecords(calib.tfrecords, "build.calibration.tfrecords")  # a glob that matches nothing fails first
    return lambda: calibration_batches(calib.tfrecords, input_size, calib.batch_size, calib.batches, log=log)


def class_labels(spec: Any, num_classes: int, log: Callable[[str], None]) -> list[str]:
    """The names of classes 0..N-1 (category ids 1..N) from the spec's label map (inference.label_map, else
    evaluate.label_map), to pack into the file; the ids themselves, as `infer` shows them, when neither is set."""
    from effdet_rt.data.labels import load_label_map

    field = "inference.label_map" if spec.inference.label_map else "evaluate.label_map"
    path = spec.inference.label_map or spec.evaluate.label_map
    if not path:
        log("no label map in the spec (inference.label_map or evaluate.label_map): the packed labels.txt names the "
            "classes by their ids")
        return [str(i) for i in range(1, num_classes + 1)]
    mapping = load_label_map(path)
    extra = sorted(i for i in mapping if not 1 <= i <= num_classes)
    if extra:
        raise UserError(f"{field} {path}: category id {extra[0]} is outside this model's 1..{num_classes}; pass the "
                        "label map of the dataset the checkpoint was trained on")
    return [mapping.get(i, str(i)) for i in range(1, num_classes + 1)]


def verify_written(backend: Backend, exporter: Any, engine: Any, heads: Any, path: Path,
                   batch: np.ndarray) -> VerifyReport:
    """TensorFlow's raw heads and the checkpoint engine's detections against the converted file at ``path``."""
    tf_logits, tf_codes = (t.numpy() for t in heads(batch, training=False))
    tf_scores = 1.0 / (1.0 + np.exp(-tf_logits.astype(np.float64)))
    scores, codes = exporter.written_heads(path, batch)
    diff = max(float(np.abs(scores - tf_scores).max() / max(np.abs(tf_scores).max(), 1e-12)),
               float(np.abs(codes - tf_codes).max() / max(np.abs(tf_codes).max(), 1e-12)))
    candidate = runtime_module(backend).load_engine(path).run(batch)
    reference, candidate = comparable(engine.run(batch), candidate, engine.nms_config.max_detections)
    return converted_report(diff, match_detections(reference, candidate), len(batch), backend.title)


def calib_option() -> str:
    return default_model_task().calib_data
