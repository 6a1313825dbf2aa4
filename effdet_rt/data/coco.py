"""COCO detection json: load it and check its shape, with errors that name the file, key and id."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdet_rt.errors import DataError

ImageId = int | str


@dataclass
class CocoDataset:
    """A checked COCO json: images in file order, category id -> name, annotations grouped by image id."""

    source: str
    images: list[dict[str, Any]]
    categories: dict[int, str]
    annotations_by_image: dict[ImageId, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def num_annotations(self) -> int:
        return sum(len(anns) for anns in self.annotations_by_image.values())


def load_coco(path: str | os.PathLike) -> CocoDataset:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the annotation file ({exc.strerror}); pass an existing COCO json") from exc
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; pass a COCO json annotation file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return parse_coco(data, str(path))


def parse_coco(data: Any, source: str) -> CocoDataset:
    """Check a COCO dict and index it. ``source`` names the file in error messages."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{source}: missing the '{key}' key; a COCO detection json needs images, annotations, categories")
        if not isinstance(data[key], list):
            raise DataError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")
    categories = _check_categories(data["categories"], source)
    images = _check_images(data["images"], source)
    image_ids = {image["id"] for image in images}
    by_image: dict[ImageId, list[dict[str, Any]]] = defaultdict(list)
    seen: set[Any] = set()
    for index, ann in enumerate(data["annotations"]):
        _check_annotation(ann, index, source, image_ids, categories)
        if ann["id"] in seen:
            raise DataError(f"{source}: annotation id {ann['id']} appears twice; annotation ids must be unique")
        seen.add(ann["id"])
        by_image[ann["image_id"]].append(ann)
    return CocoDataset(source, images, categories, dict(by_image))


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value != "")


def _check_categories(raw: list[Any], source: str) -> dict[int, str]:
    if not raw:
        raise DataError(f"{source}: 'categories' is empty; list at least one {{'id': 1, 'name': ...}}")
    categories: dict[int, str] = {}
    for index, cat in enumerate(raw):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{source}: categories[{index}] needs 'id' and 'name'")
        cat_id = cat["id"]
        if not isinstance(cat_id, int) or isinstance(cat_id, bool) or cat_id < 1:
            raise DataError(f"{source}: categories[{index}] id {cat_id!r} must be a positive integer (0 is background)")
        if cat_id in categories:
            raise DataError(f"{source}: category id {cat_id} appears twice; category ids must be unique")
        categories[cat_id] = str(cat["name"])
    return categories


def _check_images(raw: list[Any], source: str) -> list[dict[str, Any]]:
    if not raw:
        raise DataError(f"{source}: 'images' is empty; the dataset has nothing to convert")
    seen: set[Any] = set()
    for index, image in enumerate(raw):
        if not isinstance(image, dict):
            raise DataError(f"{source}: images[{index}] must be an object")
        for key in ("id", "file_name", "height", "width"):
            if key not in image:
                raise DataError(f"{source}: images[{index}] is missing the '{key}' key")
        if not _is_id(image["id"]):
            raise DataError(f"{source}: images[{index}] id {image['id']!r} must be an integer or a string")
        for key in ("height", "width"):
            value = image[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"{source}: image {image['id']} '{key}' must be a positive integer, got {value!r}")
        if image["id"] in seen:
            raise DataError(f"{source}: image id {image['id']} appears twice; image ids must be unique")
        seen.add(image["id"])
    return raw


def _check_annotation(ann: Any, index: int, source: str, image_ids: set[Any], categories: dict[int, str]) -> None:
    if not isinstance(ann, dict):
        raise DataError(f"{source}: annotations[{index}] must be an object")
    if "id" not in ann or not _is_id(ann["id"]):
        raise DataError(f"{source}: annotations[{index}] needs an integer or string 'id'")
    name = f"annotation {ann['id']}"
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise DataError(f"{source}: {name} is missing the '{key}' key")
    for key in ("image_id", "category_id"):
        if not _is_id(ann[key]):
            raise DataError(f"{source}: {name} '{key}' must be an integer or string id, got {ann[key]!r}")
    if ann["image_id"] not in image_ids:
        raise DataError(f"{source}: {name} names image_id {ann['image_id']!r}, which is not in 'images'")
    if ann["category_id"] not in categories:
        raise DataError(
            f"{source}: {name} names category_id {ann['category_id']!r}, which is not in 'categories' "
            f"(known: {sorted(categories)})"
        )
    bbox = ann["bbox"]
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    ):
        raise DataError(f"{source}: {name} 'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}")
