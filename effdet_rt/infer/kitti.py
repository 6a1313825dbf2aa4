"""KITTI label lines for detections, one text file per image (what TAO's inference writes).

A line is ``class 0.00 0 0.00 x1 y1 x2 y2 0.00 0.00 0.00 0.00 0.00 0.00 0.00 score``:
- coordinates are original-image pixels with 2 decimals;
- the score is written with the fewest digits that read back to the same value of its own type
  (``np.float32(float(text)) == score`` for float32 scores, ``float(text) == score`` for Python floats);
- spaces in class names become '_' so the line still splits into 16 fields.
A file with no detections is empty. Ground-truth files with 15 fields (no score) parse with score None.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from effdet_rt.errors import DataError
from effdet_rt.utils.atomic import atomic_write_text

_UNUSED_3D = "0.00 0.00 0.00 0.00 0.00 0.00 0.00"  # dimensions (h, w, l), location (x, y, z), rotation_y


def kitti_class_name(name: str) -> str:
    cleaned = "_".join(str(name).split())
    if not cleaned:
        raise ValueError("a KITTI class name cannot be empty")
    return cleaned


def format_score(score: float) -> str:
    return np.format_float_positional(score, unique=True, trim="0")


def kitti_line(class_name: str, box_xyxy: Sequence[float], score: float) -> str:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return (f"{kitti_class_name(class_name)} 0.00 0 0.00 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
            f"{_UNUSED_3D} {format_score(score)}")


def write_kitti_labels(
    path: str | os.PathLike, boxes: np.ndarray, scores: np.ndarray, class_names: Sequence[str]
) -> Path:
    """One line per detection (``class_names[i]`` is the name of detection i), written atomically."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if not len(boxes) == len(scores) == len(class_names):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(class_names)} class names differ")
    lines = [kitti_line(name, box, score) for name, box, score in zip(class_names, boxes, scores, strict=True)]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def parse_kitti_file(path: str | os.PathLike) -> list[tuple[str, tuple[float, float, float, float], float | None]]:
    """(class name, (x1, y1, x2, y2), score or None) for each line; DataError names the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the KITTI label file ({exc.strerror})") from exc
    return [_parse_line(path, number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _parse_line(path: Path, number: int, line: str) -> tuple[str, tuple[float, float, float, float], float | None]:
    fields = line.split()
    if len(fields) not in (15, 16):
        raise DataError(f"{path}:{number}: expected 15 or 16 KITTI fields, found {len(fields)}")
    try:
        box = tuple(float(v) for v in fields[4:8])
        score = float(fields[15]) if len(fields) == 16 else None
    except ValueError:
        raise DataError(f"{path}:{number}: box or score is not a number") from None
    return fields[0], box, score  # type: ignore[return-value]
