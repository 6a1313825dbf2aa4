"""COCO evaluation of any Engine on the validation TFRecords (what `evaluate -m` and the trainer call)."""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from effdet_rt.data.labels import load_label_map
from effdet_rt.data.preprocess import decode_image
from effdet_rt.data.tfrecord import parse_record, read_records, resolve_tfrecords
from effdet_rt.detections import Detections
from effdet_rt.engines import load
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.errors import DataError
from effdet_rt.evaluation.coco import detections_to_coco_results, run_coco_evaluation
from effdet_rt.infer.runner import ImageResult, Source, infer_batches

if TYPE_CHECKING:
    from effdet_rt.evaluation.coco import CocoEvaluation

VAL_FIELD = "dataset.val_tfrecords"


def coco_image_id(source_id: bytes, where: str) -> int | str:
    """image/source_id holds the COCO image id as text; numeric ids become ints, as in the annotations."""
    text = source_id.decode("utf-8", errors="replace").strip()
    if not text:
        raise DataError(f"{where}: record has an empty image/source_id; convert the dataset with "
                        "`effdet-rt dataset-convert` so records carry their COCO image id")
    return int(text) if text.lstrip("-").isdigit() else text


def tfrecord_sources(val_tfrecords: Sequence[str], limit: int | None = None) -> Iterator[Source]:
    """One Source per record (files in glob order, records in file order), keyed by COCO image id."""
    records = read_records(resolve_tfrecords(val_tfrecords, VAL_FIELD))
    for path, index, serialised in itertools.islice(records, limit):
        record = parse_record(serialised)
        where = f"{path}#{index}"
        data = record["image/encoded"]
        yield Source(coco_image_id(record["image/source_id"], where),
                     lambda data=data, where=where: decode_image(data, where))


def detect_all(engine: Engine, sources: Iterator[Source], batch_size: int) -> list[ImageResult]:
    results: list[ImageResult] = []
    for batch in infer_batches(engine, sources, batch_size, keep_images=False):
        results.extend(batch)
    failed = [r for r in results if not r.ok]
    if failed:
        raise DataError(f"{len(failed)} validation image(s) could not be read, first: {failed[0].error}")
    return results


def scored_from(results: Sequence[ImageResult], floor: float) -> list[ImageResult]:
    """Each result without its detections scoring below ``floor`` (evaluate.min_score_thresh): every backend is
    scored from the same floor, whatever its own NMS threshold was."""
    kept = []
    for r in results:
        keep = r.scores >= floor
        kept.append(dataclasses.replace(r, boxes=r.boxes[keep], scores=r.scores[keep], classes=r.classes[keep]))
    return kept


def baked_score_threshold(engine: Engine) -> float | None:
    """The NMS score threshold an exported model carries in its metadata (export.min_score_thresh); None for a
    checkpoint, whose NMS follows the spec, or an engine that records none."""
    metadata = getattr(engine, "metadata", None) or {}
    value = metadata.get("score_threshold")
    return float(value) if value is not None else None


def score_floor_warning(engine: Engine, floor: float) -> str | None:
    """A warning when the engine's baked-in NMS drops detections that evaluation would score (its mAP then comes
    out lower than the checkpoint's)."""
    baked = baked_score_threshold(engine)
    if baked is None or baked <= floor:
        return None
    return (f"warning: this model's NMS keeps only scores >= {baked:g} (baked in at export: "
            f"export.min_score_thresh / --min-score), while evaluation scores detections from "
            f"evaluate.min_score_thresh = {floor:g}; its mAP is lower than the checkpoint's. For the checkpoint's "
            f"mAP, export with --min-score {floor:g}")


def results_to_coco(results: Sequence[ImageResult]) -> list[dict[str, Any]]:
    """COCO results entries for per-image results (their keys are the image ids)."""

    entries: list[dict[str, Any]] = []
    for r in results:
        single = Detections(r.boxes[None], r.scores[None], r.classes[None], [len(r.scores)])
        entries.extend(detections_to_coco_results(single, [r.key]))
    return entries


def run_engine_evaluation(
    engine: Engine,
    val_tfrecords: Sequence[str],
    val_json_file: str | os.PathLike,
    *,
    num_samples: int | None,
    batch_size: int,
    max_detections: int = 100,
    label_map: dict[int, str] | None = None,
    per_class: bool = False,
    min_score: float = 0.0,
) -> CocoEvaluation:
    """Run ``engine`` on the first ``num_samples`` validation records (all when None) and score their detections
    scoring >= ``min_score``."""

    results = scored_from(detect_all(engine, tfrecord_sources(val_tfrecords, num_samples), batch_size), min_score)
    if not results:
        raise DataError(f"{', '.join(map(str, val_tfrecords))}: no validation records found")
    return run_coco_evaluation(val_json_file, results_to_coco(results), max_detections=max_detections,
                               label_map=label_map, image_ids=[r.key for r in results], per_class=per_class)


def evaluate_engine(
    engine: Engine,
    val_tfrecords: Sequence[str],
    val_json_file: str | os.PathLike,
    *,
    num_samples: int | None,
    batch_size: int,
    max_detections: int = 100,
    label_map: dict[int, str] | None = None,
) -> dict[str, float]:
    """The COCO metrics (evaluate_coco's keys) of ``engine`` on the validation TFRecords."""
    return run_engine_evaluation(engine, val_tfrecords, val_json_file, num_samples=num_samples,
                                 batch_size=batch_size, max_detections=max_detections, label_map=label_map).metrics


def evaluate_model_file(model: str | os.PathLike, spec: Any, *, key: str | None = None,
                        warn: Callable[[str], None] = print) -> CocoEvaluation:
    """`evaluate`: load any model file and score it on dataset.val_tfrecords against dataset.val_json_file,
    as evaluate.num_samples, batch_size, max_detections_per_image, min_score_thresh and label_map say."""
    from pathlib import Path


    dataset, settings = spec.dataset, spec.evaluate
    val_json = dataset.val_json_file
    if not val_json:
        raise DataError("no ground truth: set dataset.val_json_file in the spec or pass -a/--annotations-file")
    if not Path(val_json).is_file():
        raise DataError(f"{val_json}: ground-truth json not found; fix dataset.val_json_file or -a")
    resolve_tfrecords(dataset.val_tfrecords, VAL_FIELD)  # a glob matching nothing fails here, before the model loads
    names = load_label_map(settings.label_map) if settings.label_map else None
    engine = load(model, key=key, spec=spec)
    warning = score_floor_warning(engine, settings.min_score_thresh)
    if warning:
        warn(warning)
    return run_engine_evaluation(engine, dataset.val_tfrecords, val_json, num_samples=settings.num_samples,
                                 batch_size=settings.batch_size, max_detections=settings.max_detections_per_image,
                                 label_map=names, per_class=True, min_score=settings.min_score_thresh)
