"""Find which TFRecord file is damaged (truncated, or a frame whose CRC does not match), without TensorFlow.

TensorFlow's reader reports a damaged frame as ``DataLossError: truncated record at 1234`` with no file name, from
deep inside the input pipeline. Checking every frame of every file before training would read the whole dataset;
so the trainer calls this only once TensorFlow has reported damage, to say which file it is and where.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from effdet_rt.data.record_file import masked_crc32c
from effdet_rt.errors import DataError

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the payload


def frame_problem(path: str | Path, chunk: int = 1 << 20) -> str | None:
    """What is wrong with the first damaged frame of ``path`` (``None`` when every frame is whole and its CRCs
    match). Reads frame by frame, so a large file costs one pass and a little memory."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            index, offset = 0, 0
            while True:
                header = handle.read(_HEADER)
                if not header:
                    return None
                if len(header) < _HEADER:
                    return f"truncated: record {index} at byte {offset} has only {len(header)} of its 12 header bytes"
                length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
                if masked_crc32c(length_bytes) != length_crc:
                    return f"corrupt: record {index} at byte {offset} has a damaged length field"
                length = struct.unpack("<Q", length_bytes)[0]
                payload = _read_exactly(handle, length, chunk)
                footer = handle.read(_FOOTER)
                if len(payload) < length or len(footer) < _FOOTER:
                    return f"truncated: record {index} at byte {offset} ends before its {length} bytes"
                if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                    return f"corrupt: record {index} at byte {offset} fails its CRC check"
                index += 1
                offset += _HEADER + length + _FOOTER
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
