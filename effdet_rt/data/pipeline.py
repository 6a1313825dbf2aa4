"""The training input pipeline: TFRecords -> augmented 0..255 images + per-anchor targets, batched.

Each example is decoded, its boxes turned into model-input pixels (y1, x1, y2, x2), optionally flipped,
colour-distorted, scale-jittered (resize then crop or pad to the input size) and translated; boxes follow the
image. Without augmentation the geometry is exactly ``data.preprocess.preprocess_image``: fit keeping the
aspect ratio, pad bottom/right with 0. Randomness is stateless, seeded by (random_seed, example index), so a run
repeats exactly and a resumed run sees the same examples as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from effdet_rt.data.tfrecord import feature_spec, read_records
from effdet_rt.detections import CLASS_ID_OFFSET, category_ids, class_indices
from effdet_rt.errors import DataError
from effdet_rt.model.labeler import label_anchors

REQUIRED_FEATURES = (
    "image/encoded",
    "image/object/bbox/xmin",
    "image/object/bbox/ymin",
    "image/object/bbox/xmax",
    "image/object/bbox/ymax",
    "image/object/class/label",
)
LABEL_RANGE_MARKER = "LABEL_OUT_OF_RANGE"
TRANSLATE_FRACTION = 0.1  # auto_translate_xy shifts by up to this fraction of the input size
SCAN_RECORDS = 256  # records checked up front for features and label range


@dataclass(frozen=True)
class PipelineOptions:
    input_size: tuple[int, int]
    num_classes: int  # real classes; labels must be 1..num_classes
    max_instances: int = 100
    skip_crowd: bool = True
    rand_hflip: bool = True
    crop_min_scale: float = 0.1
    crop_max_scale: float = 2.0
    color_distortion: bool = False
    translate_xy: bool = False
    augment: bool = True
    seed: int = 42


def options_from_spec(spec: Any, num_classes: int, augment: bool = True) -> PipelineOptions:
    data, aug = spec.dataset, spec.dataset.augmentation
    return PipelineOptions(
        input_size=spec.model.input_size,
        num_classes=num_classes,
        max_instances=data.max_instances_per_image,
        skip_crowd=data.skip_crowd_during_training,
        rand_hflip=aug.rand_hflip,
        crop_min_scale=aug.random_crop_min_scale,
        crop_max_scale=aug.random_crop_max_scale,
        color_distortion=aug.auto_color_distortion,
        translate_xy=aug.auto_translate_xy,
        augment=augment,
        seed=spec.train.random_seed,
    )


# ---------------------------------------------------------------- files and checks


def check_records(files: list[Path], num_classes: int, min_examples: int) -> int:
    """Check the first records for the features we need and labels within 1..num_classes.

    Returns how many records were seen (at most max(SCAN_RECORDS, min_examples)); raises DataError when fewer
    than ``min_examples`` exist, a feature is missing, or a label exceeds num_classes.
    """
    limit = max(SCAN_RECORDS, min_examples)
    seen = 0
    for _, _, raw in itertools.islice(read_records(files), limit):
        _check_example(tf.train.Example.FromString(raw.numpy()), files, num_classes)
        seen += 1
    if seen < min_examples:
        raise DataError(
            f"dataset.train_tfrecords hold only {seen} example(s) but one global batch needs {min_examples}; "
            "lower train.batch_size (or num_gpus) or add data"
        )
    return seen


def _check_example(example: Any, files: list[Path], num_classes: int) -> None:
    features = example.features.feature
    missing = [key for key in REQUIRED_FEATURES if key not in features]
    if missing:
        where = files[0] if len(files) == 1 else f"{files[0]} (and {len(files) - 1} more)"
        raise DataError(
            f"{where}: TFRecords lack feature(s) {missing}; they were not written by dataset-convert — "
            "convert the dataset with `effdet-rt dataset-convert`"
        )
    labels = list(features["image/object/class/label"].int64_list.value)
    first, last = category_ids(0), category_ids(num_classes - 1)
    if labels and (max(labels) > last or min(labels) < first):
        needed = class_indices(max(labels)) + 1  # real classes up to the highest label
        raise DataError(
            f"dataset.num_classes = {num_classes + CLASS_ID_OFFSET} is too small: the TFRecords hold label "
            f"{max(labels)} (labels must be {first}..{last}); set dataset.num_classes to at least "
            f"{needed + CLASS_ID_OFFSET}"
        )


# ---------------------------------------------------------------- per-example steps


def decode_example(record: tf.Tensor, opts: PipelineOptions) -> dict[str, tf.Tensor]:
    """Parse one record: image uint8 (h, w, 3), boxes (G, 4) pixels y1, x1, y2, x2, classes (G,) 0-based."""
    parsed = tf.io.parse_single_example(record, feature_spec())
    image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    size = tf.cast(tf.shape(image)[:2], tf.float32)

    def dense(key, dtype):
        return tf.cast(tf.sparse.to_dense(parsed[key]), dtype)

    boxes = tf.stack(
        [dense("image/object/bbox/ymin", tf.float32) * size[0], dense("image/object/bbox/xmin", tf.float32) * size[1],
         dense("image/object/bbox/ymax", tf.float32) * size[0], dense("image/object/bbox/xmax", tf.float32) * size[1]],
        axis=-1,
    )
    labels = dense("image/object/class/label", tf.int32)
    tf.debugging.assert_less_equal(labels, opts.num_classes, message=LABEL_RANGE_MARKER)
    keep = tf.ones_like(labels, tf.bool)
    if opts.skip_crowd:
        crowd = dense("image/object/is_crowd", tf.int32)
        crowd = tf.pad(crowd, [[0, tf.maximum(0, tf.shape(labels)[0] - tf.shape(crowd)[0])]])[: tf.shape(labels)[0]]
        keep = tf.equal(crowd, 0)
    boxes = tf.boolean_mask(boxes, keep)[: opts.max_instances]
    classes = class_indices(tf.boolean_mask(labels, keep)[: opts.max_instances])
    return {"image": image, "boxes": boxes, "classes": classes}


def flip_horizontally(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    return tf.image.flip_left_right(image), tf.stack([y1, width - x2, y2, width - x1], axis=-1)


def distort_colors(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random brightness, contrast, saturation and hue on a 0..255 float image."""
    image = image / 255.0
    image = tf.image.stateless_random_brightness(image, 0.1, seed=seed + [0, 11])
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seed=seed + [0, 12])
    image = tf.image.stateless_random_saturation(image, 0.8, 1.2, seed=seed + [0, 13])
    image = tf.image.stateless_random_hue(image, 0.02, seed=seed + [0, 14])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def scale_crop_pad(
    image: tf.Tensor, boxes: tf.Tensor, size: tuple[int, int], jitter: tf.Tensor, crop_fraction: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize to fit ``jitter * size`` keeping the aspect ratio, crop at ``crop_fraction`` of the excess, pad to size.

    With jitter 1 this is exactly the inference preprocessing (fit, pad bottom/right with 0).
    """
    out_h, out_w = size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(jitter * out_h / shape[0], jitter * out_w / shape[1])
    new_size = tf.maximum(1, tf.cast(tf.round(shape * scale), tf.int32))
    resized = tf.image.resize(tf.cast(image, tf.float32), new_size, method="bilinear", antialias=True)  # as PIL
    excess = tf.maximum(0, new_size - [out_h, out_w])
    offset = tf.cast(tf.floor(tf.cast(excess, tf.float32) * crop_fraction), tf.int32)
    cropped = resized[offset[0]: offset[0] + out_h, offset[1]: offset[1] + out_w]
    padded = tf.image.pad_to_bounding_box(cropped, 0, 0, out_h, out_w)
    shift = tf.cast(tf.concat([offset, offset], 0), tf.float32)
    return padded, boxes * scale - shift


def translate(image: tf.Tensor, boxes: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shift the image content by (dy, dx) pixels, filling with 0; boxes move by the same amount."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded = tf.pad(image, [[tf.maximum(dy, 0), tf.maximum(-dy, 0)], [tf.maximum(dx, 0), tf.maximum(-dx, 0)], [0, 0]])
    top, left = tf.maximum(-dy, 0), tf.maximum(-dx, 0)
    shifted = padded[top: top + height, left: left + width]
    offset = tf.cast(tf.stack([dy, dx, dy, dx]), boxes.dtype)
    return shifted, boxes + offset


def clip_and_drop(boxes: tf.Tensor, classes: tf.Tensor, size: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Clip boxes to the input and drop those left without area."""
    limit = tf.constant([size[0], size[1], size[0], size[1]], tf.float32)
    clipped = tf.clip_by_value(boxes, 0.0, limit)
    keep = tf.logical_and(clipped[:, 2] > clipped[:, 0], clipped[:, 3] > clipped[:, 1])
    return tf.boolean_mask(clipped, keep), tf.boolean_mask(classes, keep)


def transform_example(example: dict[str, tf.Tensor], index: tf.Tensor, opts: PipelineOptions) -> dict[str, tf.Tensor]:
    """Augment (when opts.augment) and fit one decoded example to the input size."""
    seed = tf.stack([tf.constant(opts.seed, tf.int64), tf.cast(index, tf.int64)])
    image, boxes, classes = tf.cast(example["image"], tf.float32), example["boxes"], example["classes"]
    jitter, crop_fraction = tf.constant(1.0), tf.zeros([2])
    if opts.augment:
        if opts.rand_hflip:
            flip = tf.random.stateless_uniform([], seed=seed + [0, 1]) < 0.5
            image, boxes = tf.cond(flip, lambda: flip_horizontally(image, boxes), lambda: (image, boxes))
        if opts.color_distortion:
            image = distort_colors(image, seed)
        jitter = tf.random.stateless_uniform([], seed + [0, 2], opts.crop_min_scale, opts.crop_max_scale)
        crop_fraction = tf.random.stateless_uniform([2], seed + [0, 3])
    image, boxes = scale_crop_pad(image, boxes, opts.input_size, jitter, crop_fraction)
    boxes, classes = clip_and_drop(boxes, classes, opts.input_size)  # before translating: cropped-off parts stay off
    if opts.augment and opts.translate_xy:
        limits = [int(TRANSLATE_FRACTION * s) for s in opts.input_size]
        dy = tf.random.stateless_uniform([], seed + [0, 4], -limits[0], limits[0] + 1, dtype=tf.int32)
        dx = tf.random.stateless_uniform([], seed + [0, 5], -limits[1], limits[1] + 1, dtype=tf.int32)
        image, boxes = translate(image, boxes, dy, dx)
        boxes, classes = clip_and_drop(boxes, classes, opts.input_size)
    image = tf.ensure_shape(image, [*opts.input_size, 3])
    return {"image": image, "boxes": boxes, "classes": classes}


def pad_instances(boxes: tf.Tensor, classes: tf.Tensor, count: int) -> tuple[tf.Tensor, tf.Tensor]:
    missing = count - tf.shape(classes)[0]
    boxes = tf.pad(boxes[:count], [[0, tf.maximum(missing, 0)], [0, 0]])
    classes = tf.pad(classes[:count], [[0, tf.maximum(missing, 0)]], constant_values=-1)
    return tf.ensure_shape(boxes, [count, 4]), tf.ensure_shape(classes, [count])


def add_targets(example: dict[str, tf.Tensor], anchors: np.ndarray, max_instances: int) -> tuple[tf.Tensor, dict]:
    boxes, classes = pad_instances(example["boxes"], example["classes"], max_instances)
    class_targets, box_targets = label_anchors(anchors, boxes, classes)
    return example["image"], {
        "class_targets": class_targets,
        "box_targets": box_targets,
        "boxes": boxes,
        "classes": classes,
    }


# ---------------------------------------------------------------- the dataset


def shuffled_files(files: list[Path], loader: Any, seed: int) -> list[str]:
    order = [str(f) for f in files]  # tf.data takes strings, not paths
    if not loader.shuffle_file:
        return order
    random.Random(seed).shuffle(order)
    return order


def train_dataset(
    files: list[Path],
    opts: PipelineOptions,
    anchors: np.ndarray,
    batch_size: int,
    loader: Any,
    start_example: int = 0,
    repeat: bool = True,
    rows: tuple[int, int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (images (B, H, W, 3) float32 0..255, targets dict); deterministic for a given seed.

    ``start_example`` skips that many examples (before decoding) so a resumed run continues where it stopped.
    ``rows = (period, first, stop)`` keeps only the examples at positions first..stop-1 of every ``period`` (before
    decoding): with period = the global batch, one worker's rows of each global batch (multi-worker training).
    """
    files = shuffled_files(files, loader, opts.seed)
    records = tf.data.Dataset.from_tensor_slices(files)
    cycle = min(loader.cycle_length, len(files))
    records = records.interleave(
        tf.data.TFRecordDataset, cycle_length=cycle, block_length=loader.block_length,
        num_parallel_calls=tf.data.AUTOTUNE if cycle > 1 else None, deterministic=True if cycle > 1 else None,
    )
    if opts.augment:
        records = records.shuffle(loader.shuffle_buffer, seed=opts.seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    indexed = records.enumerate().skip(start_example)
    if rows is not None:
        period, first, stop = rows
        indexed = indexed.filter(lambda index, _record: (index % period >= first) & (index % period < stop))

    def prepare(index, record):
        example = transform_example(decode_example(record, opts), index, opts)
        return add_targets(example, anchors, opts.max_instances)

    dataset = indexed.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(loader.prefetch_size)
