"""A deterministic synthetic detection set: rectangles, ellipses and triangles on noisy backgrounds.

Every shape is drawn as the polygon stored in its annotation's ``segmentation``, so boxes and masks agree
with the pixels exactly. The same (num_images, seed, size) gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from effdet_rt.data.labels import LABEL_MAP_NAME, write_label_map
from effdet_rt.errors import UserError
from effdet_rt.utils.atomic import atomic_dir

SHAPES = {1: "rectangle", 2: "ellipse", 3: "triangle"}
JPEG_QUALITY = 90


def shape_polygon(kind: str, x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    if kind == "rectangle":
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if kind == "ellipse":
        angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
        return [(x + w / 2 * (1 + np.cos(a)), y + h / 2 * (1 + np.sin(a))) for a in angles]
    return [(x + w / 2, y), (x + w, y + h), (x, y + h)]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(40, 216, size=3)
    noise = rng.normal(0.0, 18.0, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _draw_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[int, list[tuple[float, float]]]]]:
    image = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(image)
    shapes = []
    for _ in range(int(rng.integers(1, 5))):
        category = int(rng.integers(1, 4))
        w, h = (float(v) for v in rng.integers(size // 10, size // 2, size=2))
        x, y = float(rng.integers(0, size - int(w))), float(rng.integers(0, size - int(h)))
        polygon = [(round(px, 1), round(py, 1)) for px, py in shape_polygon(SHAPES[category], x, y, w, h)]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.polygon(polygon, fill=colour)
        shapes.append((category, polygon))
    return image, shapes


def _annotation(ann_id: int, image_id: int, category: int, polygon: list[tuple[float, float]]) -> dict[str, Any]:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "bbox": [x1, y1, round(x2 - x1, 1), round(y2 - y1, 1)],
        "area": round((x2 - x1) * (y2 - y1), 2),
        "iscrowd": 0,
        "segmentation": [[coord for point in polygon for coord in point]],
    }


def synthetic_coco(num_images: int, seed: int, size: int = 256) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(COCO dict, {file_name: JPEG bytes}) for a synthetic set."""
    if num_images < 1:
        raise UserError(f"--num-images must be at least 1, got {num_images}")
    if size < 32:
        raise UserError(f"--size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    images, annotations, files = [], [], {}
    for image_id in range(1, num_images + 1):
        picture, shapes = _draw_image(rng, size)
        file_name = f"{image_id:06d}.jpg"
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        files[file_name] = buffer.getvalue()
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for category, polygon in shapes:
            annotations.append(_annotation(len(annotations) + 1, image_id, category, polygon))
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in SHAPES.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, files


def write_synthetic_dataset(out_dir: str | os.PathLike, num_images: int, seed: int, size: int = 256) -> dict[str, int]:
    """Write DIR/annotations.json, DIR/images/*.jpg and DIR/label_map.yaml; returns counts."""
    coco, files = synthetic_coco(num_images, seed, size)
    with atomic_dir(Path(out_dir)) as tmp:
        (tmp / "images").mkdir()
        for name, data in files.items():
            (tmp / "images" / name).write_bytes(data)
        (tmp / "annotations.json").write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
        write_label_map(tmp / LABEL_MAP_NAME, dict(SHAPES))
    return {"images": len(coco["images"]), "boxes": len(coco["annotations"])}
