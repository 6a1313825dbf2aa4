"""Draw detections on the original image: a box and a "name score" tag per detection, one colour per class."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from effdet_rt.utils.colours import class_colour, text_colour_on


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
    font_size = max(10, round(min(picture.size) / 40))
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score][:max_boxes]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    for index in reversed(order):  # best detection drawn last, on top
        class_id = int(classes[index])
        name = (label_map or {}).get(class_id, str(class_id))
        _draw_one(picture, draw, font_size, boxes[index], f"{name} {scores[index]:.2f}", class_colour(class_id), width)
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


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4096)
def _tag_text(text: str, font_size: int) -> Image.Image:
    """The text of a tag rendered once as an 8-bit coverage mask (2 px margin), reused for every box that shows it.

    FreeType rendering is the costly part of drawing a tag, and a detector's tags repeat ("RBC 0.91"), so with many
    boxes per image rendering each distinct text once removes most of the drawing time."""
    font = _font(font_size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(mask).text((2 - left, 2 - top), text, fill=255, font=font)
    return mask


def _draw_one(picture: Image.Image, draw: ImageDraw.ImageDraw, font_size: int, box: np.ndarray, text: str,
              colour: tuple[int, int, int], width: int) -> None:
    size = picture.size
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((min(max(x1, 0.0), size[0] - 1), min(max(x2, 0.0), size[0] - 1)))
    y1, y2 = sorted((min(max(y1, 0.0), size[1] - 1), min(max(y2, 0.0), size[1] - 1)))
    draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
    mask = _tag_text(text, font_size)
    tag_w, tag_h = mask.size
    tag_y = round(y1 - tag_h if y1 - tag_h >= 0 else y1 + width)  # above the box, or inside it at the top edge
    tag_x = round(min(x1, max(0.0, size[0] - tag_w)))
    draw.rectangle([tag_x, tag_y, tag_x + tag_w, tag_y + tag_h], fill=colour)
    picture.paste(text_colour_on(colour), (tag_x, tag_y), mask)
