"""A small loss-curve PNG drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from effdet_rt.utils.atomic import atomic_write_bytes

WIDTH, HEIGHT, MARGIN = 640, 400, 50


def draw_loss_curve(steps: Sequence[int], losses: Sequence[float], title: str = "training loss") -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN, MARGIN // 2, WIDTH - MARGIN // 2, HEIGHT - MARGIN
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 5), title, fill="black")
    points = [(s, v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v)]
    if not points:
        return image
    low, high = min(v for _, v in points), max(v for _, v in points)
    first, last = points[0][0], points[-1][0]
    span_x, span_y = max(last - first, 1), max(high - low, 1e-12)

    def xy(step: float, value: float) -> tuple[float, float]:
        return (left + (step - first) / span_x * (right - left), bottom - (value - low) / span_y * (bottom - top))

    draw.line([xy(s, v) for s, v in points] if len(points) > 1 else [xy(*points[0])] * 2, fill=(31, 119, 180), width=2)
    draw.text((5, top), f"{high:.3g}", fill="black")
    draw.text((5, bottom - 10), f"{low:.3g}", fill="black")
    draw.text((left, bottom + 5), f"step {first}", fill="black")
    draw.text((right - 80, bottom + 5), f"step {last}", fill="black")
    return image


def write_loss_curve(path: str | os.PathLike, steps: Sequence[int], losses: Sequence[float]) -> Path:
    buffer = io.BytesIO()
    draw_loss_curve(steps, losses).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
