"""COCO evaluation of any Engine on the validation TFRecords (what `evaluate -m` and the trainer call)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
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
) -> CocoEvaluation:
    """Run ``engine`` on the first ``num_samples`` validation records (all when None) and score them."""

    results = detect_all(engine, tfrecord_sources(val_tfrecords, num_samples), batch_size)
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


def evaluate_model_file(model: str | os.PathLike, spec: Any, *, key: str | None = None) -> CocoEvaluation:
    """`evaluate`: load any model file and score it on dataset.val_tfrecords against dataset.val_json_file,
    as evaluate.num_samples, batch_size, max_detections_per_image and label_map say."""
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
    return run_engine_evaluation(engine, dataset.val_tfrecords, val_json, num_samples=settings.num_samples,
                                 batch_size=settings.batch_size, max_detections=settings.max_detections_per_image,
                                 label_map=names, per_class=True)
