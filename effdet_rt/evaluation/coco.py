"""COCO box metrics with pycocotools: the 12 standard numbers under stable keys, per-class AP, PR curves."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.data.coco import load_ground_truth, load_results
from effdet_rt.detections import Detections
from effdet_rt.errors import DataError

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
               "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
# (precision or recall, IoU threshold or None for 0.50:0.95, area range, index into maxDets)
_SUMMARY = {
    "AP": ("precision", None, "all", 2), "AP50": ("precision", 0.5, "all", 2),
    "AP75": ("precision", 0.75, "all", 2), "APs": ("precision", None, "small", 2),
    "APm": ("precision", None, "medium", 2), "APl": ("precision", None, "large", 2),
    "ARmax1": ("recall", None, "all", 0), "ARmax10": ("recall", None, "all", 1),
    "ARmax100": ("recall", None, "all", 2), "ARs": ("recall", None, "small", 2),
    "ARm": ("recall", None, "medium", 2), "ARl": ("recall", None, "large", 2),
}
PER_CLASS_PREFIX = "AP/"


def detections_to_coco_results(detections: Detections, image_ids: Sequence[int | str]) -> list[dict]:
    """COCO results entries (bbox as [x, y, w, h]) for the valid detections of each image."""
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} images of detections")
    results = []
    for index, image_id in enumerate(image_ids):
        boxes, scores, classes = detections.per_image(index)
        for (x1, y1, x2, y2), score, category in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            results.append({"image_id": _plain(image_id), "category_id": int(category),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class CocoEvaluation:
    metrics: dict[str, float]
    precision: np.ndarray  # (T IoU thresholds, 101 recall points, K categories, 4 areas, 3 maxDets)
    iou_thresholds: np.ndarray
    recall_points: np.ndarray
    category_ids: list[int]
    category_names: dict[int, str] = field(default_factory=dict)


def evaluate_coco(
    gt: str | os.PathLike | dict,
    results: list[dict] | str | os.PathLike,
    *,
    max_detections: int = 100,
    label_map: dict[int, str] | None = None,
    image_ids: Sequence[int | str] | None = None,
) -> dict[str, float]:
    """The 12 COCO numbers (keys in METRIC_KEYS) and, with ``label_map``, ``AP/<name>`` per class."""
    return run_coco_evaluation(gt, results, max_detections=max_detections, label_map=label_map,
                               image_ids=image_ids).metrics


def run_coco_evaluation(
    gt: str | os.PathLike | dict,
    results: list[dict] | str | os.PathLike,
    *,
    max_detections: int = 100,
    label_map: dict[int, str] | None = None,
    image_ids: Sequence[int | str] | None = None,
    per_class: bool = False,
) -> CocoEvaluation:
    """Like evaluate_coco, but also keeps the precision array (for PR curves).

    ``per_class`` adds ``AP/<name>`` for every category even without ``label_map`` (names from the annotations).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if max_detections < 10:
        raise DataError(f"max_detections is {max_detections}; use at least 10 (COCO also reports maxDets 1 and 10)")
    dataset, source = load_ground_truth(gt)
    entries, _ = load_results(results, dataset)
    _check_label_map(label_map, dataset, source)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(entries) if entries else None, iouType="bbox")
        evaluator.params.maxDets = [1, 10, int(max_detections)]
        if image_ids is not None:
            evaluator.params.imgIds = _checked_image_ids(image_ids, dataset, source)
        if entries:
            evaluator.evaluate()
            evaluator.accumulate()
    names = {cat["id"]: str(cat["name"]) for cat in dataset["categories"]}
    if entries:
        precision = evaluator.eval["precision"]
        metrics = {key: _summary_value(evaluator, *spec) for key, spec in _SUMMARY.items()}
    else:
        shape = (len(evaluator.params.iouThrs), len(evaluator.params.recThrs), len(evaluator.params.catIds), 4, 3)
        precision = np.zeros(shape)
        metrics = dict.fromkeys(METRIC_KEYS, 0.0)
    category_ids = list(evaluator.params.catIds)
    if per_class and not label_map:
        label_map = names
    if label_map:
        for category_id, name in sorted(label_map.items()):
            metrics[PER_CLASS_PREFIX + name] = _class_ap(precision, category_ids.index(category_id))
    return CocoEvaluation(metrics, precision, np.asarray(evaluator.params.iouThrs),
                          np.asarray(evaluator.params.recThrs), category_ids, {**names, **(label_map or {})})


def _check_label_map(label_map: dict[int, str] | None, dataset: dict, source: str) -> None:
    known = {cat["id"] for cat in dataset["categories"]}
    unknown = sorted(set(label_map or {}) - known)
    if unknown:
        raise DataError(f"{source}: label map ids {unknown} are not categories of the annotations "
                        f"(known: {sorted(known)}); use the label map the dataset was converted with")


def _checked_image_ids(image_ids: Sequence[int | str], dataset: dict, source: str) -> list:
    known = {image["id"] for image in dataset["images"]}
    unknown = [i for i in image_ids if i not in known]
    if unknown:
        raise DataError(f"{source}: image ids {unknown[:5]} are not images of the annotations")
    return list(image_ids)


def _summary_value(evaluator: Any, kind: str, iou: float | None, area: str, max_det_index: int) -> float:
    params = evaluator.params
    values = evaluator.eval[kind]
    if iou is not None:
        values = values[np.isclose(params.iouThrs, iou)]
    area_index = params.areaRngLbl.index(area)
    values = values[..., area_index, max_det_index]
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _class_ap(precision: np.ndarray, category_index: int) -> float:
    values = precision[:, :, category_index, 0, -1]
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _as_evaluation(evaluation: CocoEvaluation | Any) -> CocoEvaluation:
    """A CocoEvaluation, or one made from a pycocotools COCOeval after accumulate()."""
    if isinstance(evaluation, CocoEvaluation):
        return evaluation
    params = evaluation.params
    return CocoEvaluation({}, evaluation.eval["precision"], np.asarray(params.iouThrs), np.asarray(params.recThrs),
                          list(params.catIds))


def class_curves(evaluation: CocoEvaluation | Any) -> dict[str, dict[str, Any]]:
    """Per class (area all, largest maxDets): precision at each recall point at IoU 0.50, its AP50 (the curve's
    mean, as COCO computes it) and AP at IoU 0.50:0.95 (the same number as ``AP/<name>``). Classes without ground
    truth are left out."""
    evaluation = _as_evaluation(evaluation)
    at_50 = evaluation.precision[np.isclose(evaluation.iou_thresholds, 0.5)][..., 0, -1]  # (1, R, K)
    curves = {}
    for index, category_id in enumerate(evaluation.category_ids):
        curve = _mean_valid(at_50[:, :, index], axes=(0,))
        if curve is None:
            continue
        name = evaluation.category_names.get(category_id, str(category_id))
        curves[name] = {"category_id": int(category_id), "precision": [float(v) for v in curve],
                        "AP50": float(np.mean(curve)), "AP": _class_ap(evaluation.precision, index)}
    return curves


def mean_curves(evaluation: CocoEvaluation | Any) -> dict[str, list[float]]:
    """Precision at each recall point averaged over classes at IoU 0.50, 0.75 and 0.50:0.95."""
    evaluation = _as_evaluation(evaluation)
    precision = evaluation.precision[..., 0, -1]  # (T, R, K)
    curves = {}
    for label, rows in (("IoU 0.50", np.isclose(evaluation.iou_thresholds, 0.5)),
                        ("IoU 0.75", np.isclose(evaluation.iou_thresholds, 0.75)),
                        ("IoU 0.50:0.95", np.ones(len(evaluation.iou_thresholds), bool))):
        curve = _mean_valid(precision[rows], axes=(0, 2))
        if curve is not None:
            curves[label] = [float(v) for v in curve]
    return curves


def write_pr_curve(evaluation: CocoEvaluation | Any, path: str | os.PathLike) -> Path:
    """PNG of precision against recall, one curve per class with its AP50 and AP in the legend and the class means
    dashed, with the plotted numbers in a JSON file beside it. Takes a CocoEvaluation or an accumulated COCOeval."""
    from effdet_rt.utils.charts import write_pr_curves

    evaluation = _as_evaluation(evaluation)
    return write_pr_curves(path, [float(r) for r in evaluation.recall_points], class_curves(evaluation),
                           mean_curves(evaluation))


def write_class_ap_chart(evaluation: CocoEvaluation | Any, path: str | os.PathLike) -> Path:
    """Bar chart of AP (0.50:0.95) and AP50 per class, with its numbers in a JSON file beside it."""
    from effdet_rt.utils.charts import write_class_ap_bars

    curves = class_curves(evaluation)
    return write_class_ap_bars(path, {n: c["AP"] for n, c in curves.items()}, {n: c["AP50"] for n, c in curves.items()})


def _mean_valid(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray | None:
    valid = values > -1
    if not valid.any():
        return None
    counts = valid.sum(axis=axes)
    sums = np.where(valid, values, 0.0).sum(axis=axes)
    return np.divide(sums, counts, out=np.zeros_like(sums, dtype=float), where=counts > 0)
