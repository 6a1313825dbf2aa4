"""TFRecords, all of it: the layout dataset-convert writes, the writer, the glob resolver and the reader.

Each record is a ``tf.train.Example`` with the keys automl's and TAO's EfficientDet readers use. Boxes are
normalised to 0..1 by the image size; ``image/object/class/label`` holds the COCO category ids of the
annotation file (1..N for VOC imports, sorted class names), so a spec trained on them sets
``num_classes = N + 1`` (0 is background).

Writing needs no TensorFlow (the Example wire format and the file framing are a few lines each), so converter
worker processes never import it. Reading, ``feature_spec`` and ``FEATURE_SPEC`` import TensorFlow, lazily.

A TFRecord file is a sequence of frames: the payload length (uint64, little-endian), the masked CRC-32C of
those 8 bytes (uint32), the payload, and the masked CRC-32C of the payload (uint32). The bytes are the same
as ``tf.io.TFRecordWriter`` writes with no compression.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import google_crc32c
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


# ---- TFRecord file framing --------------------------------------------------------------------------------

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return b"".join(
        (length, struct.pack("<I", masked_crc32c(length)), payload, struct.pack("<I", masked_crc32c(payload)))
    )


class RecordFileWriter:
    """Appends framed records to one uncompressed TFRecord file; use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self._handle = open(path, "wb")  # closed by close() / __exit__

    def write(self, payload: bytes) -> None:
        self._handle.write(frame_record(payload))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordFileWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


# ---- finding the files ------------------------------------------------------------------------------------


def tfrecord_files(pattern: str | os.PathLike) -> list[Path]:
    """Files matching a glob pattern (or one file, or every *.tfrecord in a folder), sorted."""
    text = str(pattern)
    if os.path.isdir(text):
        text = os.path.join(text, "*.tfrecord")
    files = sorted(glob.glob(text))
    if not files:
        raise DataError(f"{pattern}: no TFRecord files match this glob; pass a pattern such as 'out/train-*.tfrecord'")
    return [Path(f) for f in files]


def resolve_tfrecords(patterns: str | os.PathLike | Sequence[str | os.PathLike],
                      field: str = "dataset.train_tfrecords") -> list[Path]:
    """Every file the globs of spec field ``field`` match, sorted, each once; an empty list or a glob that
    matches nothing is an error naming the field."""
    if isinstance(patterns, str | os.PathLike):
        patterns = [patterns]
    if not patterns:
        raise DataError(f"{field} is empty; set it to the TFRecord glob(s) written by dataset-convert")
    files: set[Path] = set()
    for pattern in patterns:
        try:
            files.update(tfrecord_files(pattern))
        except DataError as exc:
            raise DataError(f"{field}: {exc}") from exc
    return sorted(files)


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


def read_records(files: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, int, Any]]:
    """(file, record index, serialised record tensor) for every record, files in the given order, records in
    file order; a damaged or foreign file is a DataError naming it."""
    import tensorflow as tf

    for path in files:
        try:
            for index, record in enumerate(tf.data.TFRecordDataset([str(path)])):
                yield Path(path), index, record
        except tf.errors.DataLossError as exc:
            raise damaged_record_error([path], "the TFRecord files", exc.message) from exc


def parse_record(record: Any) -> dict[str, Any]:
    """One serialised record as a dict: scalar features as bytes/int, list features as numpy arrays."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(record, feature_spec())
    return {key: _to_python(key, value) for key, value in parsed.items()}


def _to_python(key: str, value: Any) -> Any:
    if key in SCALAR_STRING_KEYS:
        return bytes(value.numpy())
    if key in SCALAR_INT_KEYS:
        return int(value.numpy())
    return value.values.numpy()


# Which file is damaged (truncated, or a frame whose CRC does not match), found without TensorFlow. TensorFlow's
# reader reports a damaged frame as ``DataLossError: truncated record at 1234`` with no file name, from deep inside
# the input pipeline; checking every frame before training would read the whole dataset, so the trainer calls this
# only once TensorFlow has reported damage, to say which file it is and where.
_FRAME_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FRAME_FOOTER = 4  # uint32 masked CRC of the payload


def frame_problem(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """What is wrong with the first damaged frame of ``path`` (``None`` when every frame is whole and its CRCs
    match). Reads frame by frame, so a large file costs one pass and a little memory."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            index, offset = 0, 0
            while True:
                header = handle.read(_FRAME_HEADER)
                if not header:
                    return None
                if len(header) < _FRAME_HEADER:
                    return f"truncated: record {index} at byte {offset} has only {len(header)} of its 12 header bytes"
                length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
                if masked_crc32c(length_bytes) != length_crc:
                    return f"corrupt: record {index} at byte {offset} has a damaged length field"
                length = struct.unpack("<Q", length_bytes)[0]
                payload = _read_exactly(handle, length, chunk)
                footer = handle.read(_FRAME_FOOTER)
                if len(payload) < length or len(footer) < _FRAME_FOOTER:
                    return f"truncated: record {index} at byte {offset} ends before its {length} bytes"
                if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                    return f"corrupt: record {index} at byte {offset} fails its CRC check"
                index += 1
                offset += _FRAME_HEADER + length + _FRAME_FOOTER
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"


def _read_exactly(handle, length: int, chunk: int) -> bytes:
    parts, left = [], length
    while left > 0:
        part = handle.read(min(left, chunk))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def damaged_record_error(files: Iterable[str | Path], field: str, tf_message: str) -> DataError:
    """The DataError to raise after TensorFlow reported damage while reading ``files`` (spec field ``field``):
    names the damaged file and where it breaks, or, when every frame checks out, repeats TensorFlow's words."""
    files = list(files)
    for path in files:
        problem = frame_problem(path)
        if problem is not None:
            return DataError(f"{path}: damaged TFRecord file ({problem}); convert the dataset again with "
                             f"`effdet-rt dataset-convert`, or remove the file from {field}")
    first = files[0] if files else field
    return DataError(f"{first} (one of {len(files)} file(s) in {field}): TFRecord data could not be read "
                     f"({tf_message}); convert the dataset again with `effdet-rt dataset-convert`")
