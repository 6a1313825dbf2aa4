"""A KITTI label writer and reader independent of the inference path: the tests write reference files with one
and read back what `infer --dump-label` wrote with the other."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from effdet_rt.errors import DataError
from effdet_rt.infer.kitti import kitti_line
from effdet_rt.utils.atomic import atomic_write_text


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
