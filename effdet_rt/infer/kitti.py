"""KITTI label lines for detections, one text file per image (what TAO's inference writes).

A line is ``class 0.00 0 0.00 x1 y1 x2 y2 0.00 0.00 0.00 0.00 0.00 0.00 0.00 score``:
- coordinates are original-image pixels with 2 decimals;
- the score is written with the fewest digits that read back to the same value of its own type
  (``np.float32(float(text)) == score`` for float32 scores, ``float(text) == score`` for Python floats);
- spaces in class names become '_' so the line still splits into 16 fields.
A file with no detections is empty. Ground-truth files with 15 fields (no score) parse with score None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
