"""Inference over a folder of images: annotated copies, KITTI label files and a COCO results json.

Everything is written into a staging folder beside OUT_DIR and moved in at the end (utils.atomic.atomic_dir),
so an interrupted run leaves OUT_DIR as it was. Images that cannot be read are listed, not fatal.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdet_rt.data.coco import load_coco
from effdet_rt.data.labels import load_label_map
from effdet_rt.data.preprocess import IMAGE_SUFFIXES, read_image
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.errors import DataError
from effdet_rt.infer.draw import draw_detections
from effdet_rt.infer.kitti import kitti_line
from effdet_rt.infer.runner import ImageResult, Source, infer_batches
from effdet_rt.utils.atomic import atomic_dir

ANNOTATED_DIR = "images_annotated"
LABELS_DIR = "labels"
DETECTIONS_FILE = "detections.json"


@dataclass(frozen=True)
class InferOptions:
    batch_size: int = 1
    min_score: float = 0.4
    max_boxes_to_draw: int = 100
    dump_label: bool = False
    label_map: dict[int, str] = field(default_factory=dict)
    workers: int = 2
    labels_dir: Path | None = None  # KITTI labels here instead of OUT_DIR/labels (TAO's -l/--out_label_path)

    @classmethod
    def from_spec(cls, inference: Any, labels_dir: Path | None = None) -> InferOptions:
        """The spec's inference section; a labels_dir turns label dumping on."""

        return cls(
            batch_size=inference.batch_size,
            min_score=inference.min_score_thresh,
            max_boxes_to_draw=inference.max_boxes_to_draw,
            dump_label=inference.dump_label or labels_dir is not None,
            label_map=load_label_map(inference.label_map) if inference.label_map else {},
            labels_dir=labels_dir,
        )


def packed_label_map(engine: Any) -> dict[int, str]:
    """Category id -> name from the class names a model file carries (a .tflite's packed labels.txt: class k is
    category id k + 1); {} for a file without them."""
    names = getattr(engine, "metadata", {}).get("classes") or []
    return {index: str(name) for index, name in enumerate(names, start=1)}


def with_inference_nms(spec: Any) -> Any:
    """``spec`` whose evaluate NMS settings (which the checkpoint backend reads) are inference.iou_thresh and
    inference.pre_nms_top_k, so `infer` on a checkpoint runs the NMS its own section asks for."""
    inference = spec.inference
    evaluate = spec.evaluate.model_copy(update={"iou_thresh": inference.iou_thresh,
                                                "pre_nms_top_k": inference.pre_nms_top_k})
    return spec.model_copy(update={"evaluate": evaluate})


@dataclass
class InferSummary:
    images: int = 0
    written: int = 0
    detections: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)

    def line(self) -> str:
        text = f"{self.written} of {self.images} image(s) processed, {self.detections} detection(s) kept"
        if self.failures:
            text += f"; {len(self.failures)} image(s) failed: " + ", ".join(name for name, _ in self.failures[:5])
            text += " ..." if len(self.failures) > 5 else ""
        return text


def list_images(image_dir: str | os.PathLike) -> list[Path]:
    """The JPEG/PNG/BMP files directly inside ``image_dir``, sorted by name."""
    folder = Path(image_dir)
    if not folder.exists():
        raise DataError(f"{folder}: image folder not found; pass an existing folder with -i/--image-dir")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a folder; pass the folder that holds the images with -i")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder; "
                        "point -i/--image-dir at a folder of images")
    return images


def image_ids_from_annotations(annotations_file: str | os.PathLike, images: list[Path]) -> dict[str, Any]:
    """file name -> COCO image id, matched on the base name of each annotation image's file_name."""

    dataset = load_coco(annotations_file)
    by_name = {Path(str(image["file_name"])).name: image["id"] for image in dataset.images}
    missing = [p.name for p in images if p.name not in by_name]
    if missing:
        raise DataError(f"{annotations_file}: {len(missing)} image(s) of the folder are not listed under 'images' "
                        f"(e.g. {missing[0]}); pass the matching annotation file, or leave out -a to use file names")
    return {p.name: by_name[p.name] for p in images}


def class_names(label_map: dict[int, str], classes: Any) -> list[str]:
    return [label_map.get(int(c), str(int(c))) for c in classes]


def write_image_outputs(staging: Path, labels: Path, path: Path, result: ImageResult, options: InferOptions) -> None:
    """The annotated picture (same name, original size) and, with dump_label, its KITTI label file."""

    picture = draw_detections(result.image, result.boxes, result.scores, result.classes,
                              label_map=options.label_map, min_score=0.0, max_boxes=options.max_boxes_to_draw)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    name = path.name if fmt == "JPEG" or path.suffix.lower() == ".png" else path.stem + ".png"
    picture.save(staging / ANNOTATED_DIR / name, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    if options.dump_label:  # the staging folder is moved in as a whole, so a plain write (no fsync) is enough
        names = class_names(options.label_map, result.classes)
        lines = [kitti_line(n, box, score) for n, box, score in zip(names, result.boxes, result.scores, strict=True)]
        (labels / f"{path.stem}.txt").write_text("".join(line + "\n" for line in lines))


def coco_entries(image_id: Any, result: ImageResult) -> list[dict[str, Any]]:
    return [{"image_id": image_id, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            for (x1, y1, x2, y2), s, c in zip(result.boxes.tolist(), result.scores.tolist(),
                                              result.classes.tolist(), strict=True)]


def _kept(result: ImageResult, min_score: float) -> ImageResult:
    keep = result.scores >= min_score
    return ImageResult(result.key, result.image, result.boxes[keep], result.scores[keep], result.classes[keep])


def infer_folder(
    engine: Engine,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: InferOptions,
    *,
    image_ids: dict[str, Any] | None = None,
    on_image: Callable[[ImageResult], None] | None = None,
) -> InferSummary:
    """Run ``engine`` on every image of ``image_dir``; outputs land in ``out_dir`` when the run completes.

    ``image_ids`` maps file names to the ids detections.json uses (see image_ids_from_annotations); default: names.
    """
    images = list_images(image_dir)
    ids = image_ids or {p.name: p.name for p in images}
    summary = InferSummary(images=len(images))
    entries: list[dict[str, Any]] = []
    sources = [Source(p, lambda p=p: read_image(p)) for p in images]
    with contextlib.ExitStack() as stack:
        staging = stack.enter_context(atomic_dir(out_dir))
        labels = stack.enter_context(atomic_dir(options.labels_dir)) if options.labels_dir else staging / LABELS_DIR
        writers = stack.enter_context(ThreadPoolExecutor(options.workers, "effdet-write"))
        (staging / ANNOTATED_DIR).mkdir()
        if options.dump_label and options.labels_dir is None:
            labels.mkdir()
        pending: collections.deque[Future[None]] = collections.deque()
        for batch in infer_batches(engine, sources, options.batch_size, workers=options.workers):
            for result in batch:
                path: Path = result.key
                if not result.ok:
                    summary.failures.append((path.name, str(result.error)))
                else:
                    kept = _kept(result, options.min_score)
                    summary.written += 1
                    summary.detections += len(kept.scores)
                    entries.extend(coco_entries(ids[path.name], kept))
                    pending.append(writers.submit(write_image_outputs, staging, labels, path, kept, options))
                if on_image is not None:
                    on_image(result)
            while len(pending) > 2 * options.workers:
                pending.popleft().result()
        for future in pending:
            future.result()
        (staging / DETECTIONS_FILE).write_text(json.dumps(entries) + "\n", encoding="utf-8")
    return summary
