"""Pascal VOC (XML per image, ImageSets/Main/<split>.txt) to a COCO detection dict.

Ids are stable whatever the split: categories are the sorted class names of every XML under
Annotations/ numbered 1..N; image ids number the sorted XML files 1..M and annotation ids number their
objects in that order, so an image keeps its ids in train, val and "all" alike.
Boxes keep VOC's pixel values: COCO bbox = [xmin, ymin, xmax - xmin, ymax - ymin].
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from effdet_rt.detections import category_ids
from effdet_rt.errors import DataError

ALL_SPLIT = "all"


@dataclass(frozen=True)
class VocObject:
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class VocImage:
    stem: str
    file_name: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


def annotations_dir(root: str | os.PathLike) -> Path:
    folder = Path(root) / "Annotations"
    if not folder.is_dir():
        raise DataError(f"{root}: no Annotations/ folder; pass a Pascal VOC root (Annotations/, JPEGImages/, ImageSets/)")
    return folder


def split_stems(root: str | os.PathLike, split: str) -> list[str]:
    """Image stems of a split (``all`` = every XML under Annotations/), in file order."""
    if split == ALL_SPLIT:
        return sorted(path.stem for path in annotations_dir(root).glob("*.xml"))
    split_file = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        found = sorted(p.stem for p in (Path(root) / "ImageSets" / "Main").glob("*.txt"))
        raise DataError(f"{split_file}: split '{split}' not found; use one of {found + [ALL_SPLIT]}")
    return [line.split()[0] for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def parse_voc_xml(path: Path, image_dir: Path | None = None) -> VocImage:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{path}: not a readable VOC XML file ({exc}); fix or remove it") from None
    file_name = (root.findtext("filename") or "").strip() or f"{path.stem}.jpg"
    width, height = _image_size(root, path, file_name, image_dir)
    objects = tuple(_parse_object(obj, index, path) for index, obj in enumerate(root.findall("object")))
    return VocImage(path.stem, file_name, width, height, objects)


def _number(node: ET.Element, key: str, where: str) -> float:
    text = node.findtext(key)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' is {text!r}, expected a number") from None


def _parse_object(obj: ET.Element, index: int, path: Path) -> VocObject:
    where = f"{path} object {index}"
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DataError(f"{where}: missing <name>; every object needs a class name")
    box = obj.find("bndbox")
    if box is None:
        raise DataError(f"{where} ({name}): missing <bndbox>")
    return VocObject(name, *(_number(box, key, where) for key in ("xmin", "ymin", "xmax", "ymax")))


def _image_size(root: ET.Element, path: Path, file_name: str, image_dir: Path | None) -> tuple[int, int]:
    size = root.find("size")
    if size is not None:
        try:
            width, height = int(float(size.findtext("width") or 0)), int(float(size.findtext("height") or 0))
        except (ValueError, OverflowError):  # not a number, NaN, or "inf"
            width = height = 0
        if width > 0 and height > 0:
            return width, height
    if image_dir is not None and (image_dir / file_name).is_file():
        with Image.open(image_dir / file_name) as img:
            return img.size
    raise DataError(f"{path}: no usable <size> and no image {file_name} to read it from; add <size> to the XML")


def voc_to_coco(root: str | os.PathLike, split: str = ALL_SPLIT) -> dict[str, Any]:
    """A COCO detection dict for one split of a VOC dataset (file names relative to JPEGImages/)."""
    folder = annotations_dir(root)
    image_dir = Path(root) / "JPEGImages"
    all_stems = sorted(path.stem for path in folder.glob("*.xml"))
    if not all_stems:
        raise DataError(f"{folder}: no .xml files; the dataset is empty")
    wanted = split_stems(root, split)
    missing = sorted(set(wanted) - set(all_stems))
    if missing:
        raise DataError(f"{root}: split '{split}' lists {missing[0]} but Annotations/{missing[0]}.xml does not exist")
    parsed = [parse_voc_xml(folder / f"{stem}.xml", image_dir) for stem in all_stems]
    names = sorted({obj.name for image in parsed for obj in image.objects})
    if not names:
        raise DataError(f"{folder}: no <object> in any XML; the dataset has no boxes")
    id_of_name = {name: category_ids(index) for index, name in enumerate(names)}
    wanted_set = set(wanted)
    images, annotations = [], []
    ann_id = 0
    for image_id, image in enumerate(parsed, start=1):
        keep = image.stem in wanted_set
        if keep:
            images.append({"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for obj in image.objects:
            ann_id += 1
            if keep:
                annotations.append(_coco_annotation(ann_id, image_id, id_of_name[obj.name], obj))
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "none"} for name, cid in id_of_name.items()],
    }


def _coco_annotation(ann_id: int, image_id: int, category_id: int, obj: VocObject) -> dict[str, Any]:
    width, height = obj.xmax - obj.xmin, obj.ymax - obj.ymin
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [obj.xmin, obj.ymin, width, height],
        "area": max(width, 0.0) * max(height, 0.0),
        "iscrowd": 0,
    }
