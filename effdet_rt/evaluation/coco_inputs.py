"""Read and check COCO ground truth and COCO results before pycocotools sees them.

pycocotools answers bad input with asserts, KeyErrors or silently wrong numbers; here each problem becomes a
DataError naming the file, the entry and the fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effdet_rt.errors import DataError

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what} file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the {what} file ({exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                        f"expected a COCO {what} file") from None


def load_ground_truth(gt: str | os.PathLike | dict) -> tuple[dict, str]:
    """A checked copy of a COCO instances dataset, and the name to use in messages."""
    source = "ground truth" if isinstance(gt, dict) else str(gt)
    raw = gt if isinstance(gt, dict) else read_json(gt, "annotations")
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise DataError(f"{source}: missing the '{key}' list; is this a COCO instances json?")
    images = [_checked_image(source, i, image) for i, image in enumerate(raw["images"])]
    categories = [_checked_category(source, i, cat) for i, cat in enumerate(raw["categories"])]
    image_ids = {image["id"] for image in images}
    category_ids = {cat["id"] for cat in categories}
    annotations = []
    for i, ann in enumerate(raw["annotations"]):
        where = f"{source}: annotation {i}"
        ann = _checked_entry(where, ann, ("image_id", "category_id", "bbox"))
        _check_known(where, ann, image_ids, category_ids, "annotations")
        ann["bbox"] = _checked_bbox(where, ann["bbox"])
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
        ann.setdefault("id", i + 1)
        annotations.append(ann)
    if len({ann["id"] for ann in annotations}) != len(annotations):
        raise DataError(f"{source}: annotation ids are not unique; give every annotation its own id")
    return {**raw, "images": images, "annotations": annotations, "categories": categories}, source


def load_results(results: Sequence[dict] | str | os.PathLike, gt: dict) -> tuple[list[dict], str]:
    """Checked copies of COCO result entries whose image and category ids exist in ``gt``."""
    source = "results" if isinstance(results, list | tuple) else str(results)
    raw = list(results) if isinstance(results, list | tuple) else read_json(results, "results")
    if not isinstance(raw, list):
        raise DataError(f"{source}: expected a JSON list of results like "
                        '{"image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "score": 0.9}')
    image_ids = {image["id"] for image in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    checked = []
    for i, entry in enumerate(raw):
        where = f"{source}: result {i}"
        entry = _checked_entry(where, entry, RESULT_KEYS)
        _check_known(where, entry, image_ids, category_ids, "ground truth")
        entry["bbox"] = _checked_bbox(where, entry["bbox"])
        entry["score"] = _checked_number(where, "score", entry["score"])
        checked.append(entry)
    return checked, source


def _checked_entry(where: str, entry: Any, keys: Sequence[str]) -> dict:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise DataError(f"{where}: missing {', '.join(repr(k) for k in missing)}; each entry needs {', '.join(keys)}")
    return dict(entry)


def _checked_id(where: str, field: str, value: Any) -> None:
    """COCO ids are integers (strings are accepted for image ids written by other tools); a list, object, float or
    boolean there is a broken file, said as such instead of failing later on an unhashable id."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DataError(f"{where}: {field} {value!r} must be an integer id")


def _checked_image(source: str, index: int, image: Any) -> dict:
    where = f"{source}: image {index}"
    image = _checked_entry(where, image, ("id",))
    _checked_id(where, "id", image["id"])
    return image


def _checked_category(source: str, index: int, category: Any) -> dict:
    where = f"{source}: category {index}"
    category = _checked_entry(where, category, ("id",))
    _checked_id(where, "id", category["id"])
    category.setdefault("name", str(category["id"]))
    return category


def _check_known(where: str, entry: dict, image_ids: set, category_ids: set, whose: str) -> None:
    for field in ("image_id", "category_id", *(("id",) if "id" in entry else ())):
        _checked_id(where, field, entry[field])
    if entry["image_id"] not in image_ids:
        raise DataError(f"{where}: image_id {entry['image_id']!r} is not an image of the {whose}; "
                        "use the ids from the annotations' 'images' list")
    if entry["category_id"] not in category_ids:
        raise DataError(f"{where}: category_id {entry['category_id']!r} is not a category of the {whose} "
                        f"(known: {sorted(category_ids, key=str)}); map classes to the annotations' category ids")


def _checked_number(where: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{where}: {field} {value!r} is not a finite number")
    return float(value)


def _checked_bbox(where: str, bbox: Any) -> list[float]:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        raise DataError(f"{where}: bbox {bbox!r} must be [x, y, width, height]")
    x, y, w, h = (_checked_number(where, "bbox value", v) for v in bbox)
    if w < 0 or h < 0:
        raise DataError(f"{where}: bbox {list(bbox)!r} has a negative {'width' if w < 0 else 'height'}; "
                        "COCO boxes are [x, y, width, height], not [x1, y1, x2, y2]")
    return [x, y, w, h]
