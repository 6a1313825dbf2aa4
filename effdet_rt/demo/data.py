"""Demo data: a VOC folder, a COCO folder, or a synthetic set, converted to train/val TFRecords."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
        """The spec's dataset.num_classes: real classes + background."""
        return max(self.categories) + 1


def _convert(coco: dict, source: str, image_dir: Path, out_dir: Path, tag: str):
    from effdet_rt.data.coco import parse_coco
    from effdet_rt.data.convert import convert_dataset

    dataset = parse_coco(coco, source)
    extra = {f"{tag}.json": json.dumps(coco).encode("utf-8")}
    report = convert_dataset(dataset, image_dir, out_dir / tag, tag, num_shards=4, extra_files=extra)
    return dataset, report


def _read_json(path: Path) -> dict:
    from effdet_rt.data.coco import load_coco

    load_coco(path)  # checks shape, names the problem
    return json.loads(path.read_text(encoding="utf-8"))


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
    from effdet_rt.data.voc import voc_to_coco

    if data is None:
        from effdet_rt.data.synth import write_synthetic_dataset

        write_synthetic_dataset(work / "synth_train", SYNTH_TRAIN_IMAGES, seed=0)
        write_synthetic_dataset(work / "synth_val", SYNTH_VAL_IMAGES, seed=1)
        pairs = ((work / "synth_train" / "annotations.json", work / "synth_train" / "images"),
                 (work / "synth_val" / "annotations.json", work / "synth_val" / "images"))
        source = f"synthetic shapes ({SYNTH_TRAIN_IMAGES} train / {SYNTH_VAL_IMAGES} val images)"
        cocos = [(_read_json(j), str(j), d) for j, d in pairs]
    elif not data.is_dir():
        raise DataError(f"{data}: --data folder not found")
    elif (data / "Annotations").is_dir():
        train_split = _voc_split(data, ("train", "trainval"))
        val_split = _voc_split(data, ("val", "test"))
        source = f"Pascal VOC {data} (train: {train_split}, val: {val_split})"
        cocos = [(voc_to_coco(data, s), f"{data} (split {s})", data / "JPEGImages") for s in (train_split, val_split)]
    else:
        pairs = _coco_pairs(data)
        source = f"COCO {data}" + (" (the same images for training and evaluation)" if pairs[0] == pairs[1] else "")
        cocos = [(_read_json(j), str(j), d) for j, d in pairs]
    (train_coco, train_src, train_dir), (val_coco, val_src, val_dir) = cocos
    log(f"data: {source}")
    train_set, train_report = _convert(train_coco, train_src, train_dir, work, "train")
    val_set, _ = _convert(val_coco, val_src, val_dir, work, "val")
    return DemoData(
        source=source,
        train_tfrecords=str(work / "train" / "train-*.tfrecord"),
        val_tfrecords=str(work / "val" / "val-*.tfrecord"),
        val_json=work / "val" / "val.json",
        val_image_dir=val_dir,
        val_file_names=tuple(img["file_name"] for img in val_coco["images"]),
        categories=dict(val_set.categories) | dict(train_set.categories),
        train_images=train_report.images_written,
    )
