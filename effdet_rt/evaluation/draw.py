"""Draw detections on the original image: a box and a "name score" tag per detection, one colour per class."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from effdet_rt.evaluation.colours import class_colour, text_colour_on


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    label_map: dict[int, str] | None = None,
    min_score: float = 0.0,
    max_boxes: int = 100,
) -> Image.Image:
    """Boxes are x1, y1, x2, y2 in the image's pixels; the highest-scoring ``max_boxes`` >= ``min_score`` are drawn."""
    picture = Image.fromarray(_as_rgb_uint8(image))
    draw = ImageDraw.Draw(picture)
    width = max(2, round(min(picture.size) / 250))
    font = ImageFont.load_default(size=max(10, round(min(picture.size) / 40)))
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score][:max_boxes]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    for index in reversed(order):  # best detection drawn last, on top
        class_id = int(classes[index])
        name = (label_map or {}).get(class_id, str(class_id))
        _draw_one(draw, font, boxes[index], f"{name} {scores[index]:.2f}", class_colour(class_id), width, picture.size)
    return picture


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


def _draw_one(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, box: np.ndarray, text: str,
              colour: tuple[int, int, int], width: int, size: tuple[int, int]) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0.0), size[0] - 1), min(max(x2, 0.0), size[0] - 1)))
    y1, y2 = sorted((min(max(y1, 0.0), size[1] - 1), min(max(y2, 0.0), size[1] - 1)))
    draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tag_w, tag_h = right - left + 4, bottom - top + 4
    tag_y = y1 - tag_h if y1 - tag_h >= 0 else y1 + width  # above the box, or inside it at the top edge
    tag_x = min(x1, max(0.0, size[0] - tag_w))
    draw.rectangle([tag_x, tag_y, tag_x + tag_w, tag_y + tag_h], fill=colour)
    draw.text((tag_x + 2 - left, tag_y + 2 - top), text, fill=text_colour_on(colour), font=font)
