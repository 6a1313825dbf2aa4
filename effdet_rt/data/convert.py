"""dataset-convert: a COCO json + image folder -> sharded TFRecords, <tag>_warnings.json, label_map.yaml.

Image k of the json goes to shard k % n (as TAO does when no image is skipped; a skipped image leaves its
shard one record short). With one worker the main process converts the shards in order; with more, a
``concurrent.futures`` process pool does, each worker taking the next unconverted shard when it is free. A
worker reads each image of its shard, checks that it decodes, cleans its boxes, serialises the Example and writes
the shard's TFRecord file itself, in image order; only small per-image summaries (counts, warnings) go back to
the main process. So the files are the same for any number of workers, and no process needs TensorFlow.

Box cleaning: a box reaching outside the image is clipped to it and kept; a box with no area (width or
height <= 0, also after clipping) is dropped. Both are listed in the warnings file, TAO's format:
``{"<image_id>": {"box": [annotation ids], "mask": [annotation ids]}}``; an image that cannot be used
(missing, unreadable, corrupt, size differing from the json) is skipped and its entry gets
``"image": "<reason>"``.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from effdet_rt.data.coco import CocoDataset
from effdet_rt.data.labels import LABEL_MAP_NAME, write_label_map
from effdet_rt.data.tfrecord import RecordFileWriter, encode_example, shard_path
from effdet_rt.errors import DataError, UserError
from effdet_rt.utils.atomic import atomic_dir
from effdet_rt.utils.cpu import usable_cpus
from effdet_rt.utils.status import progress_bar

DEFAULT_NUM_SHARDS = 256
BOX_OK, BOX_CLIPPED, BOX_DROPPED = "ok", "clipped", "dropped"


def default_workers() -> int:
    return max(1, min(2, usable_cpus()))


def clean_box(bbox: list[float], width: int, height: int) -> tuple[tuple[float, float, float, float] | None, str]:
    """COCO [x, y, w, h] -> ((x1, y1, x2, y2) clipped to the image, status ok|clipped|dropped)."""
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return None, BOX_DROPPED
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:
        return None, BOX_DROPPED
    status = BOX_OK if (x1, y1, x2, y2) == (x, y, x + w, y + h) else BOX_CLIPPED
    return (x1, y1, x2, y2), status


@dataclass
class ImageResult:
    image_id: Any
    record: bytes | None = None
    skipped: str | None = None
    box_warnings: list[Any] = field(default_factory=list)
    mask_warnings: list[Any] = field(default_factory=list)
    kept: int = 0
    clipped: int = 0
    dropped: int = 0


@dataclass
class ConvertReport:
    out_dir: Path
    tag: str
    shards: list[Path]
    images_written: int
    images_skipped: int
    boxes_kept: int
    boxes_clipped: int
    boxes_dropped: int
    warnings: dict[str, dict[str, Any]]
    seconds: float

    @property
    def warnings_path(self) -> Path:
        return self.out_dir / f"{self.tag}_warnings.json"

    def summary(self) -> str:
        return (
            f"wrote {self.images_written} images in {len(self.shards)} shards to {self.out_dir} "
            f"({self.boxes_kept} boxes kept, {self.boxes_clipped} of them clipped, {self.boxes_dropped} dropped; "
            f"{self.images_skipped} images skipped; details in {self.warnings_path.name})"
        )


# ---- one image (runs in any worker process) -------------------------------------------------------------


def check_image_bytes(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of encoded image bytes; decodes the image (JPEG at 1/8 scale) to catch damage."""
    with Image.open(io.BytesIO(data)) as img:
        fmt, (width, height) = (img.format or "").lower(), img.size
        if fmt == "jpeg":
            img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        img.load()
    return fmt, width, height


def convert_image(
    image: dict[str, Any], annotations: list[dict[str, Any]], categories: dict[int, str], image_dir: str,
    include_mask: bool,
) -> ImageResult:
    result = ImageResult(image["id"])
    path = os.path.join(image_dir, image["file_name"])
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        result.skipped = f"cannot read {path} ({exc.strerror})"
        return result
    try:
        fmt, width, height = check_image_bytes(data)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        result.skipped = f"corrupt image {path} ({exc})"
        return result
    if (width, height) != (image["width"], image["height"]):
        result.skipped = f"{path} is {width}x{height} but the json says {image['width']}x{image['height']}"
        return result
    result.record = encode_example(_features(image, annotations, categories, data, fmt, include_mask, result))
    return result


def _features(
    image: dict[str, Any], annotations: list[dict[str, Any]], categories: dict[int, str], data: bytes, fmt: str,
    include_mask: bool, result: ImageResult,
) -> dict[str, Any]:
    width, height = image["width"], image["height"]
    boxes: list[tuple[float, float, float, float]] = []
    labels, texts, areas, crowd, masks = [], [], [], [], []
    for ann in annotations:
        box, status = clean_box(ann["bbox"], width, height)
        if status != BOX_OK:
            result.box_warnings.append(ann["id"])
        if box is None:
            result.dropped += 1
            continue
        result.kept += 1
        result.clipped += status == BOX_CLIPPED
        boxes.append(box)
        labels.append(int(ann["category_id"]))
        texts.append(categories[int(ann["category_id"])].encode("utf-8"))
        areas.append(float(ann.get("area", (box[2] - box[0]) * (box[3] - box[1]))))
        crowd.append(int(ann.get("iscrowd", 0)))
        if include_mask:
            mask = _mask(ann, height, width)
            if _mask_outside_box(mask, box):
                result.mask_warnings.append(ann["id"])
            masks.append(_png(mask))
    coords = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    features: dict[str, Any] = {
        "image/height": [height],
        "image/width": [width],
        "image/filename": [str(image["file_name"]).encode("utf-8")],
        "image/source_id": [str(image["id"]).encode("utf-8")],
        "image/key/sha256": [hashlib.sha256(data).hexdigest().encode("ascii")],
        "image/encoded": [data],
        "image/format": [fmt.encode("ascii")],
        "image/object/bbox/xmin": coords[:, 0] / width,
        "image/object/bbox/xmax": coords[:, 2] / width,
        "image/object/bbox/ymin": coords[:, 1] / height,
        "image/object/bbox/ymax": coords[:, 3] / height,
        "image/object/class/text": texts,
        "image/object/class/label": labels,
        "image/object/is_crowd": crowd,
        "image/object/area": areas,
    }
    if include_mask:
        features["image/object/mask"] = masks
    return features


def _mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def _mask_outside_box(mask: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """True when the mask's pixels reach more than one pixel beyond the box (TAO lists these as 'mask')."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return False
    x1, y1, x2, y2 = box
    return bool(cols.min() < x1 - 1 or rows.min() < y1 - 1 or cols.max() + 1 > x2 + 1 or rows.max() + 1 > y2 + 1)


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- input checks ----------------------------------------------------------------------------------------


def check_masks_available(dataset: CocoDataset) -> None:
    for anns in dataset.annotations_by_image.values():
        for ann in anns:
            seg = ann.get("segmentation")
            if not (isinstance(seg, list) and seg) and not (isinstance(seg, dict) and "counts" in seg):
                raise DataError(
                    f"{dataset.source}: annotation {ann['id']} has no 'segmentation' (polygons or RLE); "
                    "--include-mask needs one on every annotation, or leave --include-mask out"
                )


def check_output_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; choose another output path")
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK):
        raise UserError(f"{out_dir}: output folder is not writable; choose a writable path")


# ---- one shard (runs in any worker process) -------------------------------------------------------------


@dataclass(frozen=True)
class ConvertJob:
    """Everything a worker needs; handed to each worker process once, so a task is just a shard index."""

    images: list[dict[str, Any]]
    annotations_by_image: dict[Any, list[dict[str, Any]]]
    categories: dict[int, str]
    image_dir: str
    include_mask: bool
    shard_dir: str
    tag: str
    num_shards: int

    def shard_images(self, index: int) -> range:
        """Positions (in the json's image order) of the images shard ``index`` holds: index, index + n, ..."""
        return range(index, len(self.images), self.num_shards)


def write_shard(job: ConvertJob, index: int) -> list[tuple[int, ImageResult]]:
    """Convert the images of one shard and write its TFRecord file; returns (position, result) without records."""
    results = []
    with RecordFileWriter(shard_path(job.shard_dir, job.tag, index, job.num_shards)) as writer:
        for position in job.shard_images(index):
            image = job.images[position]
            annotations = job.annotations_by_image.get(image["id"], [])
            result = convert_image(image, annotations, job.categories, job.image_dir, job.include_mask)
            if result.record is not None:
                writer.write(result.record)
                result.record = None  # only the small summary goes back to the main process
            results.append((position, result))
    return results


# ---- the worker processes ----------------------------------------------------------------------------------


class HelperProcessDied(UserError):
    """A worker process exited without finishing (killed, out of memory); its shard's result is lost."""


_worker_job: ConvertJob | None = None  # the job of this worker process, set once when the pool starts it


def _start_worker(job: ConvertJob) -> None:
    global _worker_job
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it cancels the rest
    _worker_job = job


def _write_shard_in_worker(index: int) -> list[tuple[int, ImageResult]]:
    return write_shard(_worker_job, index)


def converted_shards(job: ConvertJob, workers: int) -> Iterator[list[tuple[int, ImageResult]]]:
    """write_shard's results for every shard, in finishing order, on ``workers`` processes.

    The job goes to each worker once, when the pool starts it, so a task is just a shard index. A worker's
    exception is raised here; on any exception (Ctrl-C included) the shards not yet started are cancelled and
    the workers are joined before it propagates.
    """
    workers = min(workers, job.num_shards)
    if workers <= 1:
        yield from (write_shard(job, index) for index in range(job.num_shards))
        return
    context = _RecordingContext("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(job,))
    try:
        futures = [pool.submit(_write_shard_in_worker, index) for index in range(job.num_shards)]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            raise HelperProcessDied(
                f"a helper process stopped (exit code {context.first_exit_code()}) before finishing its tasks; "
                "was it killed or out of memory? Run again, or with --workers 1") from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _RecordingContext:
    """A multiprocessing context that keeps the processes it starts: a broken pool does not say which worker
    died or how, and the exit code tells a user whether it was killed (9) or crashed."""

    def __init__(self, method: str):
        self._context = multiprocessing.get_context(method)
        self.processes: list[Any] = []

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the multiprocessing context API
        process = self._context.Process(*args, **kwargs)
        self.processes.append(process)
        return process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def first_exit_code(self) -> int | str:
        """The exit code of a worker that died by itself: the pool ends the others with SIGTERM."""
        codes = [p.exitcode for p in self.processes if p.exitcode is not None]
        own = [code for code in codes if code != -signal.SIGTERM]
        return (own or codes or ["unknown"])[0]


# ---- the whole dataset -------------------------------------------------------------------------------------


def remove_stale_staging(out_dir: Path) -> None:
    """Remove staging folders (``.name.XXXX.tmp`` beside ``out_dir``, see utils.atomic.atomic_dir) of conversions
    into the same folder that were killed; they never became output, and each holds a dataset's worth of shards."""
    import shutil

    for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def convert_dataset(
    dataset: CocoDataset,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    tag: str,
    num_shards: int = DEFAULT_NUM_SHARDS,
    include_mask: bool = False,
    workers: int | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> ConvertReport:
    """Convert a checked COCO dataset; everything lands in ``out_dir`` at once, or nothing does.

    Image k (json order) goes to shard k % n, whichever worker writes it, so the files are the same for any
    number of workers.
    """
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found; pass the folder the json's file_name entries are in")
    if num_shards < 1:
        raise UserError(f"--num-shards must be at least 1, got {num_shards}")
    if not tag or "/" in tag or tag.startswith("."):
        raise UserError(f"--tag {tag!r} must be a plain file name prefix such as 'train'")
    if include_mask:
        check_masks_available(dataset)
    check_output_dir(out_dir)
    remove_stale_staging(out_dir)
    workers = workers or default_workers()
    count = min(num_shards, len(dataset.images))
    start = time.perf_counter()
    totals = ConvertReport(out_dir, tag, [], 0, 0, 0, 0, 0, {}, 0.0)
    with atomic_dir(out_dir) as tmp:
        job = ConvertJob(list(dataset.images), dataset.annotations_by_image, dataset.categories, str(image_dir),
                         include_mask, str(tmp), tag, count)
        by_position: list[ImageResult | None] = [None] * len(job.images)
        with progress_bar() as progress:
            bar = progress.add_task(f"converting {tag}", total=len(job.images), info="")
            for shard in converted_shards(job, workers):
                for position, result in shard:
                    by_position[position] = result
                progress.update(bar, advance=len(shard))
        for result in by_position:
            _add(totals, result)
        if totals.images_written == 0:
            first = next(iter(totals.warnings.values()))
            raise DataError(f"{dataset.source}: none of the {len(job.images)} images could be used (first: {first['image']})")
        (tmp / totals.warnings_path.name).write_text(json.dumps(totals.warnings, indent=1) + "\n", encoding="utf-8")
        write_label_map(tmp / LABEL_MAP_NAME, dataset.categories)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
    totals.shards = [shard_path(out_dir, tag, i, count) for i in range(count)]
    totals.seconds = time.perf_counter() - start
    return totals


def _add(totals: ConvertReport, result: ImageResult) -> None:
    if result.skipped is None:
        totals.images_written += 1
    else:
        totals.images_skipped += 1
    totals.boxes_kept += result.kept
    totals.boxes_clipped += result.clipped
    totals.boxes_dropped += result.dropped
    if result.skipped or result.box_warnings or result.mask_warnings:
        entry: dict[str, Any] = {"box": result.box_warnings, "mask": result.mask_warnings}
        if result.skipped:
            entry["image"] = result.skipped
        totals.warnings[str(result.image_id)] = entry
