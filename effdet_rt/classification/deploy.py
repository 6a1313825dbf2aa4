"""What `build`, `engine-info` and `deepstream-config` do differently for a classifier ONNX.

They tell one apart by the ONNX metadata key ``effdet_rt.task`` = ``classification``.
- INT8 calibration batches: images of a folder (searched recursively), preprocessed with the model's own
  `ImageFormat` exactly as evaluation and inference do (`images.eval_image`), never augmented.
- DeepStream: a secondary classifier (``network-type=1``, ``process-mode=2``) on 0..255 NHWC input, the
  normalisation being inside the graph; DeepStream resizes each object crop to the network size (it has no centre
  crop, so a model trained with ``enable_center_crop`` sees slightly different framing there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.calib.batches import FixedBatches
from effdet_rt.classification.images import ImageFormat, eval_image
from effdet_rt.errors import DataError, UserError
from effdet_rt.infer.files import image_files


def calibration_batches(folder: str | Path, meta: dict[str, Any], batch_size: int, num_batches: int,
                        log: Callable[[str], None] = print) -> Iterator[np.ndarray]:
    """Up to ``num_batches`` (batch_size, H, W, C) batches of the folder's images, spread over it (`spread_evenly`),
    as inference sees them; unreadable files are skipped (and counted); a final partial batch is dropped."""

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--calib-images {folder}: not a folder of images")
    fmt = ImageFormat.from_metadata(meta["image_format"])
    skipped: list[Path] = []

    def readable_images() -> Iterator[np.ndarray]:
        for path in spread_evenly(image_files(folder), batch_size * num_batches):
            try:
                yield eval_image(path, fmt)
            except UserError:
                skipped.append(path)

    batching = FixedBatches(batch_size, num_batches)
    yield from batching.batches(readable_images())
    if batching.produced == 0:
        raise DataError(f"--calib-images {folder}: found {batching.left_over} readable image(s), fewer than one "
                        f"calibration batch of {batch_size}; lower --calib-batch-size or add images")
    note = f", {len(skipped)} unreadable skipped" if skipped else ""
    log(f"calibration: {batching.produced} batch(es) of {batch_size} images from {folder}{note}")


def spread_evenly(files: list[Path], wanted: int) -> list[Path]:
    """The sorted files reordered so that the first ``wanted`` are evenly spaced over the whole list, the others
    after them in order (to stand in for unreadable ones). A folder of class folders sorts by class: its first 80
    files were all ants of hymenoptera's 124 ants and 121 bees, and a range calibrated on one class clips the
    activations another class has."""
    if len(files) <= wanted or wanted < 1:
        return files
    step = len(files) / wanted
    picked = [int(i * step) for i in range(wanted)]
    chosen = set(picked)
    return [files[i] for i in picked] + [f for i, f in enumerate(files) if i not in chosen]


def calibration_source(images: str | None, meta: dict[str, Any], batch_size: int, num_batches: int,
                       log: Callable[[str], None]):
    if not images:
        return None
    if not Path(images).is_dir():
        raise DataError(f"--calib-images {images}: not a folder of images")
    return lambda: calibration_batches(images, meta, batch_size, num_batches, log)


def build_calibration(meta: dict[str, Any], images: Path | None, calibration: Any, log: Callable[[str], None]):
    """`build`'s INT8 calibration of a classifier ONNX: batches from the folder of images (--calib-images)."""
    log(f"classifier ONNX ({meta.get('model_name')}, {len(meta['classes'])} classes)")
    if calibration.tfrecords:
        raise UserError("a classifier calibrates on a folder of images: pass --calib-images DIR, not --calib-tfrecords")
    return calibration_source(str(images) if images else None, meta, calibration.batch_size, calibration.batches, log)
