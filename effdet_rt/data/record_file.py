"""Writing TFRecord files without TensorFlow, so dataset-convert worker processes never import or initialise it.

A TFRecord file is a sequence of frames: the payload length (uint64, little-endian), the masked CRC-32C of
those 8 bytes (uint32), the payload, and the masked CRC-32C of the payload (uint32). The bytes are the same
as ``tf.io.TFRecordWriter`` writes with no compression.
"""

from __future__ import annotations

import os
import struct
from types import TracebackType

import google_crc32c

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
