"""Demo data: a VOC folder, a COCO folder, or a synthetic set, converted to train/val TFRecords."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from effdet_rt.data.coco import load_coco, parse_coco
from effdet_rt.data.convert import convert_dataset
from effdet_rt.data.synth import write_synthetic_dataset
from effdet_rt.data.voc import voc_to_coco
from effdet_rt.detections import CLASS_ID_OFFSET, class_indices
from effdet_rt.errors import DataError

SYNTH_TRAIN_IMAGES = 96
SYNTH_VAL_IMAGES = 24


@dataclass(frozen=True)
class DemoData:
    source: str
    train_tfrecords: str
    val_tfrecords: str
    val_json: Path
    val_image_dir: Path
    val_file_names: tuple[str, ...]
    categories: dict[int, str]
    train_images: int

    @property
    def num_classes(self) -> int:
        """The spec's dataset.num_classes: real classes (up to the highest category id) + background."""
        return class_indices(max(self.categories)) + 1 + CLASS_ID_OFFSET


def _convert(dataset, json_bytes: bytes, image_dir: Path, out_dir: Path, tag: str):
    """TFRecords of a checked COCO dataset into out_dir/tag, with its json beside them as tag.json."""

    extra = {f"{tag}.json": json_bytes}
    return convert_dataset(dataset, image_dir, out_dir / tag, tag, num_shards=4, extra_files=extra)


def _coco_file(path: Path, image_dir: Path):
    return load_coco(path), path.read_bytes(), image_dir


def _voc_split_set(root: Path, split: str):
    coco = voc_to_coco(root, split)
    return parse_coco(coco, f"{root} (split {split})"), json.dumps(coco).encode("utf-8"), root / "JPEGImages"


def _voc_split(root: Path, names: tuple[str, ...]) -> str:
    for name in names:
        if (root / "ImageSets" / "Main" / f"{name}.txt").is_file():
            return name
    return "all"


def _coco_pairs(root: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    if (root / "train" / "annotations.json").is_file() and (root / "val" / "annotations.json").is_file():
        return (root / "train" / "annotations.json", root / "train" / "images"), (root / "val" / "annotations.json", root / "val" / "images")
    if (root / "annotations.json").is_file():
        pair = (root / "annotations.json", root / "images")
        return pair, pair
    raise DataError(
        f"{root}: not a dataset folder the demo knows; give a Pascal VOC root (Annotations/, JPEGImages/, "
        "ImageSets/Main/), a COCO folder (annotations.json + images/, or train/ and val/ with those), or no --data"
    )


def prepare_demo_data(data: Path | None, work: Path, log=print) -> DemoData:
    """Convert the data the demo was given into work/train and work/val TFRecords."""
    if data is None:

        write_synthetic_dataset(work / "synth_train", SYNTH_TRAIN_IMAGES, seed=0)
        write_synthetic_dataset(work / "synth_val", SYNTH_VAL_IMAGES, seed=1)
        pairs = ((work / "synth_train" / "annotations.json", work / "synth_train" / "images"),
                 (work / "synth_val" / "annotations.json", work / "synth_val" / "images"))
        source = f"synthetic shapes ({SYNTH_TRAIN_IMAGES} train / {SYNTH_VAL_IMAGES} val images)"
        sets = [_coco_file(j, d) for j, d in pairs]
    elif not data.is_dir():
        raise DataError(f"{data}: --data folder not found")
    elif (data / "Annotations").is_dir():
        train_split = _voc_split(data, ("train", "trainval"))
        val_split = _voc_split(data, ("val", "test"))
        source = f"Pascal VOC {data} (train: {train_split}, val: {val_split})"
        sets = [_voc_split_set(data, s) for s in (train_split, val_split)]
    else:
        pairs = _coco_pairs(data)
        source = f"COCO {data}" + (" (the same images for training and evaluation)" if pairs[0] == pairs[1] else "")
        sets = [_coco_file(j, d) for j, d in pairs]
    (train_set, train_json, train_dir), (val_set, val_json, val_dir) = sets
    log(f"data: {source}")
    train_report = _convert(train_set, train_json, train_dir, work, "train")
    _convert(val_set, val_json, val_dir, work, "val")
    return DemoData(
        source=source,
        train_tfrecords=str(work / "train" / "train-*.tfrecord"),
        val_tfrecords=str(work / "val" / "val-*.tfrecord"),
        val_json=work / "val" / "val.json",
        val_image_dir=val_dir,
        val_file_names=tuple(img["file_name"] for img in val_set.images),
        categories=dict(val_set.categories) | dict(train_set.categories),
        train_images=train_report.images_written,
    )
