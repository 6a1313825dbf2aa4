"""COCO json, one set of checks: reading the file, an instances dataset (images, annotations, categories) and
detection results, each problem a DataError naming the file, the entry and the fix.

dataset-convert and evaluation check a dataset with the same functions. Conversion needs more of it: every image's
file name and size, categories that are class ids (positive integers, with names) and an id on every annotation
(the warnings file lists them). Evaluation needs less, fills in what pycocotools uses but a dataset may leave out
(area, iscrowd, annotation ids, category names) and refuses boxes of negative size, which conversion drops with a
warning. pycocotools itself answers bad input with asserts, KeyErrors or silently wrong numbers.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdet_rt.errors import DataError

ImageId = int | str
LISTS = ("images", "annotations", "categories")
CONVERSION_IMAGE_KEYS = ("id", "file_name", "height", "width")
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


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


# ---- reading ------------------------------------------------------------------------------------------------


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed json of a COCO ``what`` file ("annotation", "results")."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} file ({exc.strerror or exc}); pass an existing COCO json") from exc
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; pass a COCO json {what} file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                        f"expected a COCO {what} file") from None


def load_coco(path: str | os.PathLike) -> CocoDataset:
    """A COCO json file checked for conversion."""
    return parse_coco(read_json(path, "annotation"), str(path))


def parse_coco(data: Any, source: str) -> CocoDataset:
    """Check a COCO dict for conversion and index it. ``source`` names the file in error messages."""
    check_instances(data, source, for_conversion=True)
    by_image: dict[ImageId, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    categories = {cat["id"]: str(cat["name"]) for cat in data["categories"]}
    return CocoDataset(source, data["images"], categories, dict(by_image))


def load_ground_truth(gt: str | os.PathLike | dict) -> tuple[dict, str]:
    """A checked copy of a COCO instances dataset for pycocotools, and the name to use in messages."""
    source = "ground truth" if isinstance(gt, dict) else str(gt)
    raw = gt if isinstance(gt, dict) else read_json(gt, "annotation")
    check_instances(raw, source, for_conversion=False)
    annotations = []
    for index, ann in enumerate(raw["annotations"]):
        ann = dict(ann, bbox=[float(v) for v in ann["bbox"]])
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
        ann.setdefault("id", index + 1)
        annotations.append(ann)
    _check_unique_ids(source, "annotation", annotations)  # again: the ids filled in may repeat given ones
    categories = [dict(cat, name=cat.get("name", str(cat["id"]))) for cat in raw["categories"]]
    return {**raw, "images": [dict(image) for image in raw["images"]], "annotations": annotations,
            "categories": categories}, source


# ---- an instances dataset ---------------------------------------------------------------------------------


def check_instances(data: Any, source: str, *, for_conversion: bool) -> None:
    """Raise DataError at the first problem of a COCO instances dict (see the module docstring for what
    conversion needs beyond evaluation)."""
    _check_lists(data, source, for_conversion)
    for index, cat in enumerate(data["categories"]):
        _check_category(cat, index, source, for_conversion)
    _check_unique_ids(source, "category", data["categories"])
    for index, image in enumerate(data["images"]):
        _check_image(image, index, source, for_conversion)
    _check_unique_ids(source, "image", data["images"])
    image_ids = {image["id"] for image in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    for index, ann in enumerate(data["annotations"]):
        _check_annotation(ann, index, source, image_ids, category_ids, for_conversion)
    _check_unique_ids(source, "annotation", [ann for ann in data["annotations"] if "id" in ann])


def _check_lists(data: Any, source: str, for_conversion: bool) -> None:
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in LISTS:
        if key not in data and for_conversion:  # dataset-convert speaks of the json's keys, evaluation of COCO's lists
            raise DataError(f"{source}: missing the '{key}' key; a COCO detection json needs images, annotations, "
                            "categories")
        if key not in data:
            raise DataError(f"{source}: missing the '{key}' list; is this a COCO instances json?")
        if not isinstance(data[key], list):
            raise DataError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")
    if for_conversion and not data["categories"]:
        raise DataError(f"{source}: 'categories' is empty; list at least one {{'id': 1, 'name': ...}}")
    if for_conversion and not data["images"]:
        raise DataError(f"{source}: 'images' is empty; the dataset has nothing to convert")


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value != "")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_category(cat: Any, index: int, source: str, for_conversion: bool) -> None:
    required = ("id", "name") if for_conversion else ("id",)
    if not isinstance(cat, dict) or any(key not in cat for key in required):
        raise DataError(f"{source}: categories[{index}] needs {' and '.join(repr(key) for key in required)}")
    if for_conversion and not _is_positive_int(cat["id"]):
        raise DataError(f"{source}: categories[{index}] id {cat['id']!r} must be a positive integer (0 is background)")
    if not _is_id(cat["id"]):
        raise DataError(f"{source}: categories[{index}] id {cat['id']!r} must be an integer or a string")


def _check_image(image: Any, index: int, source: str, for_conversion: bool) -> None:
    if not isinstance(image, dict):
        raise DataError(f"{source}: images[{index}] must be an object")
    for key in CONVERSION_IMAGE_KEYS if for_conversion else ("id",):
        if key not in image:
            raise DataError(f"{source}: images[{index}] is missing the '{key}' key")
    if not _is_id(image["id"]):
        raise DataError(f"{source}: images[{index}] id {image['id']!r} must be an integer or a string")
    for key in ("height", "width") if for_conversion else ():
        if not _is_positive_int(image[key]):
            raise DataError(f"{source}: image {image['id']} '{key}' must be a positive integer, got {image[key]!r}")


def _check_annotation(ann: Any, index: int, source: str, image_ids: set[Any], category_ids: set[Any],
                      for_conversion: bool) -> None:
    if not isinstance(ann, dict):
        raise DataError(f"{source}: annotations[{index}] must be an object")
    if ("id" in ann or for_conversion) and not _is_id(ann.get("id")):
        raise DataError(f"{source}: annotations[{index}] needs an integer or string 'id'")
    name = f"annotation {ann['id']}" if "id" in ann else f"annotations[{index}]"
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise DataError(f"{source}: {name} is missing the '{key}' key")
    for key in ("image_id", "category_id"):
        if not _is_id(ann[key]):
            raise DataError(f"{source}: {name} '{key}' must be an integer or string id, got {ann[key]!r}")
    if ann["image_id"] not in image_ids:
        raise DataError(f"{source}: {name} names image_id {ann['image_id']!r}, which is not in 'images'")
    if ann["category_id"] not in category_ids:
        raise DataError(f"{source}: {name} names category_id {ann['category_id']!r}, which is not in 'categories' "
                        f"(known: {_sorted_ids(category_ids)})")
    _check_bbox(f"{source}: {name}", ann["bbox"])
    if not for_conversion:
        _check_box_size(f"{source}: {name}", ann["bbox"])


def _sorted_ids(ids: set[Any]) -> list[Any]:
    return sorted(ids, key=lambda value: (isinstance(value, str), value))  # numbers in order, then names


def _check_unique_ids(source: str, what: str, entries: list[dict[str, Any]]) -> None:
    seen: set[Any] = set()
    for entry in entries:
        if entry["id"] in seen:
            raise DataError(f"{source}: {what} id {entry['id']} appears twice; {what} ids must be unique")
        seen.add(entry["id"])


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_bbox(where: str, bbox: Any) -> None:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4 or not all(_is_finite_number(v) for v in bbox):
        raise DataError(f"{where} 'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}")


def _check_box_size(where: str, bbox: Sequence[float]) -> None:
    if bbox[2] < 0 or bbox[3] < 0:
        raise DataError(f"{where}: bbox {list(bbox)!r} has a negative {'width' if bbox[2] < 0 else 'height'}; "
                        "COCO boxes are [x, y, width, height], not [x1, y1, x2, y2]")


# ---- detection results --------------------------------------------------------------------------------------


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
    for index, entry in enumerate(raw):
        where = f"{source}: result {index}"
        _check_result(where, entry, image_ids, category_ids)
        checked.append(dict(entry, bbox=[float(v) for v in entry["bbox"]], score=float(entry["score"])))
    return checked, source


def _check_result(where: str, entry: Any, image_ids: set, category_ids: set) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in RESULT_KEYS if key not in entry]
    if missing:
        raise DataError(f"{where}: missing {', '.join(repr(k) for k in missing)}; "
                        f"each entry needs {', '.join(RESULT_KEYS)}")
    if entry["image_id"] not in image_ids:
        raise DataError(f"{where}: image_id {entry['image_id']!r} is not an image of the ground truth; "
                        "use the ids from the annotations' 'images' list")
    if entry["category_id"] not in category_ids:
        raise DataError(f"{where}: category_id {entry['category_id']!r} is not a category of the ground truth "
                        f"(known: {_sorted_ids(category_ids)}); map classes to the annotations' category ids")
    _check_bbox(where, entry["bbox"])
    _check_box_size(where, entry["bbox"])
    if not _is_finite_number(entry["score"]):
        raise DataError(f"{where}: score {entry['score']!r} is not a finite number")
