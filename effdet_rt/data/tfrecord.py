"""The TFRecord layout written by dataset-convert and parsed by the training pipeline.

Each record is a ``tf.train.Example`` with the keys automl's and TAO's EfficientDet readers use. Boxes are
normalised to 0..1 by the image size; ``image/object/class/label`` holds the COCO category ids of the
annotation file (1..N for VOC imports, sorted class names), so a spec trained on them sets
``num_classes = N + 1`` (0 is background).

Examples are serialised here without TensorFlow (the protobuf wire format is a few lines), so converter
worker processes never import it. ``FEATURE_SPEC`` and ``read_tfrecords`` do import TensorFlow, lazily.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.errors import DataError

SCALAR_STRING_KEYS = ("image/encoded", "image/format", "image/source_id", "image/filename", "image/key/sha256")
SCALAR_INT_KEYS = ("image/height", "image/width")
LIST_FLOAT_KEYS = (
    "image/object/bbox/xmin",
    "image/object/bbox/ymin",
    "image/object/bbox/xmax",
    "image/object/bbox/ymax",
    "image/object/area",
)
LIST_INT_KEYS = ("image/object/class/label", "image/object/is_crowd")
LIST_STRING_KEYS = ("image/object/class/text", "image/object/mask")

FeatureValue = list[bytes] | list[float] | list[int] | np.ndarray


def shard_path(out_dir: str | os.PathLike, tag: str, index: int, count: int) -> Path:
    return Path(out_dir) / f"{tag}-{index:05d}-of-{count:05d}.tfrecord"


def shard_pattern(out_dir: str | os.PathLike, tag: str) -> str:
    return str(Path(out_dir) / f"{tag}-*-of-*.tfrecord")


# ---- tf.train.Example wire format -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def _bytes_list(values: list[bytes]) -> bytes:
    return _length_delimited(1, b"".join(_length_delimited(1, value) for value in values))


def _float_list(values: FeatureValue) -> bytes:
    packed = np.asarray(values, dtype="<f4").tobytes()
    return _length_delimited(2, _length_delimited(1, packed) if packed else b"")


def _int64_list(values: FeatureValue) -> bytes:
    packed = b"".join(_varint(int(value)) for value in values)
    return _length_delimited(3, _length_delimited(1, packed) if packed else b"")


def _feature(key: str, values: FeatureValue) -> bytes:
    if key in SCALAR_STRING_KEYS or key in LIST_STRING_KEYS:
        body = _bytes_list(list(values))
    elif key in LIST_FLOAT_KEYS:
        body = _float_list(values)
    elif key in SCALAR_INT_KEYS or key in LIST_INT_KEYS:
        body = _int64_list(values)
    else:
        raise KeyError(f"unknown TFRecord feature {key!r}")
    entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, body)
    return _length_delimited(1, entry)


def encode_example(features: dict[str, FeatureValue]) -> bytes:
    """Serialise ``{feature key: list of values}`` as a tf.train.Example (scalars are one-element lists)."""
    return _length_delimited(1, b"".join(_feature(key, values) for key, values in features.items()))


# ---- reading (TensorFlow) ---------------------------------------------------------------------------------


def feature_spec() -> dict[str, Any]:
    """The ``tf.io.parse_single_example`` feature dict for the records dataset-convert writes."""
    import tensorflow as tf

    spec: dict[str, Any] = {key: tf.io.FixedLenFeature((), tf.string, default_value="") for key in SCALAR_STRING_KEYS}
    spec["image/format"] = tf.io.FixedLenFeature((), tf.string, default_value="jpeg")
    spec.update({key: tf.io.FixedLenFeature((), tf.int64, default_value=0) for key in SCALAR_INT_KEYS})
    spec.update({key: tf.io.VarLenFeature(tf.float32) for key in LIST_FLOAT_KEYS})
    spec.update({key: tf.io.VarLenFeature(tf.int64) for key in LIST_INT_KEYS})
    spec.update({key: tf.io.VarLenFeature(tf.string) for key in LIST_STRING_KEYS})
    return spec


def __getattr__(name: str) -> Any:
    # FEATURE_SPEC is built on first use so that importing this module does not import TensorFlow.
    if name == "FEATURE_SPEC":
        return feature_spec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tfrecord_files(pattern: str | os.PathLike) -> list[str]:
    """Files matching a glob pattern (or one file, or every *.tfrecord in a folder), sorted."""
    text = str(pattern)
    if os.path.isdir(text):
        text = os.path.join(text, "*.tfrecord")
    files = sorted(glob.glob(text))
    if not files:
        raise DataError(f"{pattern}: no TFRecord files match this glob; pass a pattern such as 'out/train-*.tfrecord'")
    return files


def resolve_tfrecords(patterns: str | os.PathLike | Sequence[str], field: str) -> list[str]:
    """Every file the globs of spec field ``field`` match, sorted, each once; an empty list or a glob that
    matches nothing is an error naming the field."""
    if isinstance(patterns, str | os.PathLike):
        patterns = [str(patterns)]
    if not patterns:
        raise DataError(f"{field} is empty; set it to the TFRecord glob(s) written by dataset-convert")
    files: set[str] = set()
    for pattern in patterns:
        try:
            files.update(tfrecord_files(pattern))
        except DataError as exc:
            raise DataError(f"{field}: {exc}") from exc
    return sorted(files)


def read_tfrecords(pattern: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield one dict per record, in file order: scalar features as bytes/int, list features as numpy arrays."""
    import tensorflow as tf

    spec = feature_spec()
    dataset = tf.data.TFRecordDataset(tfrecord_files(pattern))
    try:
        for record in dataset:
            parsed = tf.io.parse_single_example(record, spec)
            yield {key: _to_python(key, value) for key, value in parsed.items()}
    except tf.errors.DataLossError as exc:
        raise DataError(f"{pattern}: damaged TFRecord file ({exc.message}); convert the dataset again") from exc


def _to_python(key: str, value: Any) -> Any:
    if key in SCALAR_STRING_KEYS:
        return bytes(value.numpy())
    if key in SCALAR_INT_KEYS:
        return int(value.numpy())
    return value.values.numpy()
