"""Precision/recall curves drawn with Pillow (no matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from effdet_rt.utils.atomic import atomic_path
from effdet_rt.utils.colours import class_colour

WIDTH, HEIGHT = 720, 520
LEFT, RIGHT, TOP, BOTTOM = 64, 200, 36, 56  # margins around the plot area; the legend sits on the right


def draw_pr_curves(recall: np.ndarray, curves: dict[str, np.ndarray], path: str | os.PathLike,
                   title: str = "Precision / recall (area all)") -> Path:
    """Write a PNG with one line per curve (precision values at the ``recall`` points), atomically."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    _draw_axes(draw, font, title)
    items = list(enumerate(curves.items()))
    for number, (_, precision) in reversed(items):  # the first curves end up on top
        points = [_to_pixel(r, p) for r, p in zip(np.asarray(recall), np.asarray(precision), strict=True)]
        draw.line(points, fill=class_colour(number), width=3 if number < 3 else 2)
    for number, (label, _) in items:
        colour = class_colour(number)
        legend_y = TOP + 8 + 18 * number
        draw.line([(WIDTH - RIGHT + 14, legend_y + 7), (WIDTH - RIGHT + 38, legend_y + 7)], fill=colour, width=3)
        draw.text((WIDTH - RIGHT + 44, legend_y), label[:20], fill="black", font=font)
    target = Path(path)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
    return target


def _to_pixel(recall: float, precision: float) -> tuple[float, float]:
    x = LEFT + float(recall) * (WIDTH - LEFT - RIGHT)
    y = HEIGHT - BOTTOM - float(precision) * (HEIGHT - TOP - BOTTOM)
    return x, y


def _draw_axes(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, title: str) -> None:
    for tick in np.linspace(0.0, 1.0, 6):
        x, _ = _to_pixel(tick, 0.0)
        _, y = _to_pixel(0.0, tick)
        draw.line([(x, TOP), (x, HEIGHT - BOTTOM)], fill=(225, 225, 225))
        draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=(225, 225, 225))
        draw.text((x, HEIGHT - BOTTOM + 6), f"{tick:.1f}", fill="black", font=font, anchor="mt")
        draw.text((LEFT - 6, y), f"{tick:.1f}", fill="black", font=font, anchor="rm")
    draw.rectangle([LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM], outline="black")
    draw.text(((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 18), "recall", fill="black", font=font, anchor="mm")
    draw.text((10, TOP - 22), "precision", fill="black", font=font)
    draw.text(((LEFT + WIDTH - RIGHT) / 2, 12), title, fill="black", font=font, anchor="mm")
