"""Calibration batches from TFRecords, preprocessed exactly like inference (never augmented).

Files are read in sorted order and records in file order, so the same TFRecords always give the same batches.
Both INT8 paths (TensorRT's calibrator and the ONNX Runtime Q/DQ quantizer) consume these batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effdet_rt.data.preprocess import decode_image, preprocess_image
from effdet_rt.data.tfrecord import read_records, resolve_tfrecords
from effdet_rt.errors import DataError

IMAGE_FEATURE = "image/encoded"
FIELD = "calibration.tfrecords"


def encoded_images(files: Sequence[Path]) -> Iterator[tuple[bytes, str]]:
    """Yield (encoded image bytes, 'file#record') for every record, files in the given order."""
    import tensorflow as tf

    features = {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
    for path, index, record in read_records(files):
        try:
            example = tf.io.parse_single_example(record, features)
        except tf.errors.InvalidArgumentError as exc:
            raise DataError(
                f"{path}: record {index} has no '{IMAGE_FEATURE}' bytes feature; "
                "write the TFRecords with `effdet-rt dataset-convert`"
            ) from exc
        yield example[IMAGE_FEATURE].numpy(), f"{path}#{index}"


@dataclass
class FixedBatches:
    """Images gathered into calibration batches of one size (calibrators need a fixed batch), at most
    ``num_batches`` of them; what every task's calibration source does with its own images. After `batches` has
    run, ``produced`` says how many batches it gave and ``left_over`` how many images of a last, partial batch were
    dropped."""

    batch_size: int
    num_batches: int
    produced: int = 0
    left_over: int = 0

    def batches(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stops reading ``images`` once ``num_batches`` are made."""
        pending: list[np.ndarray] = []
        for image in images:
            pending.append(image)
            if len(pending) == self.batch_size:
                yield np.stack(pending)
                pending = []
                self.produced += 1
                if self.produced == self.num_batches:
                    return
        self.left_over = len(pending)

    def complete(self) -> bool:
        return self.produced == self.num_batches


def calibration_batches(
    tfrecord_globs: Sequence[str],
    input_size: tuple[int, int],
    batch_size: int,
    num_batches: int,
    log: Callable[[str], None] = print,
) -> Iterator[np.ndarray]:
    """Yield up to ``num_batches`` float32 (batch_size, H, W, 3) 0..255 batches, input_size = (H, W).

    With fewer images than batch_size * num_batches, the full batches there are are used (and said so);
    a final partial batch is dropped because calibrators need a fixed batch size.
    """
    if batch_size < 1 or num_batches < 1:
        raise DataError(
            f"calibration batch_size={batch_size}, batches={num_batches}: both must be >= 1; "
            "fix calibration.batch_size / calibration.batches"
        )
    files = resolve_tfrecords(tfrecord_globs, FIELD)
    wanted = batch_size * num_batches
    batching = FixedBatches(batch_size, num_batches)
    yield from batching.batches(preprocess_image(decode_image(data, name), input_size)[0]
                                for data, name in encoded_images(files))
    if batching.complete():
        return
    produced = batching.produced
    if produced == 0:
        raise DataError(
            f"{', '.join(map(str, tfrecord_globs))}: found {batching.left_over} image(s), fewer than one calibration "
            f"batch of {batch_size}; lower calibration.batch_size or add images"
        )
    log(
        f"calibration: only {produced * batch_size + batching.left_over} of {wanted} images available; "
        f"using {produced} batch(es) of {batch_size}"
    )
