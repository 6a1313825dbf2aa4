"""dataset-convert on the real BCCD set (VOC XML), checked against the XML parsed here independently."""

import hashlib
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from effdet_rt.cli.main import run
from effdet_rt.data.labels import load_label_map
from tests.support.data import read_tfrecords


def _xml_objects(root: Path) -> list[dict]:
    """Every object of every XML in sorted file order; its position (1-based) is its annotation id."""
    objects = []
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml_path).getroot()
        width, height = int(tree.findtext("size/width")), int(tree.findtext("size/height"))
        for obj in tree.findall("object"):
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            objects.append(
                {"id": len(objects) + 1, "file": tree.findtext("filename"), "name": obj.findtext("name"),
                 "box": box, "width": width, "height": height}
            )
    return objects


@pytest.fixture(scope="module")
def converted(bccd_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bccd") / "records"
    code = run(["dataset-convert", "--voc", str(bccd_root), "--split", "all", "-o", str(out), "-s", "4"])
    assert code == 0
    return out


def test_bccd_xml_facts(bccd_root):
    objects = _xml_objects(bccd_root)
    assert len(objects) == 4888
    assert Counter(o["name"] for o in objects) == {"RBC": 4155, "WBC": 372, "Platelets": 361}


def test_bccd_output_files(converted):
    names = sorted(p.name for p in converted.iterdir())
    assert names == [
        "all-00000-of-00004.tfrecord", "all-00001-of-00004.tfrecord", "all-00002-of-00004.tfrecord",
        "all-00003-of-00004.tfrecord", "all.json", "all_warnings.json", "label_map.yaml",
    ]
    assert load_label_map(converted / "label_map.yaml") == {1: "Platelets", 2: "RBC", 3: "WBC"}
    coco = json.loads((converted / "all.json").read_text())
    assert len(coco["images"]) == 364 and len(coco["annotations"]) == 4888


def test_bccd_warnings_list_degenerate_and_out_of_bounds_boxes(bccd_root, converted):
    objects = _xml_objects(bccd_root)
    zero_area = [o["id"] for o in objects if o["box"][2] <= o["box"][0] or o["box"][3] <= o["box"][1]]
    outside = [
        o["id"] for o in objects
        if o["id"] not in zero_area
        and (min(o["box"][:2]) < 0 or o["box"][2] > o["width"] or o["box"][3] > o["height"])
    ]
    # BCCD: 2 zero-area boxes (dropped), none reaching outside its image (so none clipped).
    assert zero_area == [3951, 4005] and outside == []
    warnings = json.loads((converted / "all_warnings.json").read_text())
    listed = sorted(i for entry in warnings.values() for i in entry["box"])
    assert listed == sorted(zero_area + outside)
    assert all(entry["mask"] == [] and "image" not in entry for entry in warnings.values())


def test_bccd_records_round_trip_boxes_labels_and_bytes(bccd_root, converted):
    objects = _xml_objects(bccd_root)
    kept = [o for o in objects if o["box"][2] > o["box"][0] and o["box"][3] > o["box"][1]]
    assert len(kept) == 4886  # 4,888 in the XML - 2 zero-area dropped; 0 clipped
    by_file: dict[str, list[dict]] = {}
    for o in kept:
        by_file.setdefault(o["file"], []).append(o)
    ids = {"Platelets": 1, "RBC": 2, "WBC": 3}
    seen, labels = set(), Counter()
    for record in read_tfrecords(converted / "all-*-of-00004.tfrecord"):
        name = record["image/filename"].decode()
        seen.add(name)
        data = (bccd_root / "JPEGImages" / name).read_bytes()
        assert record["image/encoded"] == data
        assert record["image/key/sha256"].decode() == hashlib.sha256(data).hexdigest()
        assert (record["image/format"], record["image/width"], record["image/height"]) == (b"jpeg", 640, 480)
        want = np.array([o["box"] for o in by_file.get(name, [])], np.float64).reshape(-1, 4) / [640, 480, 640, 480]
        got = np.stack([record[f"image/object/bbox/{k}"] for k in ("xmin", "ymin", "xmax", "ymax")], axis=1)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert record["image/object/class/label"].tolist() == [ids[o["name"]] for o in by_file.get(name, [])]
        assert [t.decode() for t in record["image/object/class/text"]] == [o["name"] for o in by_file.get(name, [])]
        labels.update(record["image/object/class/label"].tolist())
    assert len(seen) == 364
    assert labels == {2: 4155 - 2, 3: 372, 1: 361}  # both dropped boxes are RBC


def test_bccd_one_and_two_workers_write_identical_shards(bccd_root, converted, tmp_path):
    out = tmp_path / "one"
    assert run(["dataset-convert", "--voc", str(bccd_root), "--split", "all", "-o", str(out), "-s", "4",
                "--workers", "1"]) == 0
    for shard in sorted(converted.glob("*.tfrecord")):
        assert (out / shard.name).read_bytes() == shard.read_bytes()


def test_bccd_val_split_keeps_ids_of_all(bccd_root, converted, tmp_path):
    out = tmp_path / "val.json"
    assert run(["dataset", "import-voc", str(bccd_root), "--split", "val", "-o", str(out)]) == 0
    val = json.loads(out.read_text())
    full = json.loads((converted / "all.json").read_text())
    stems = (bccd_root / "ImageSets" / "Main" / "val.txt").read_text().split()
    assert sorted(Path(i["file_name"]).stem for i in val["images"]) == sorted(stems)
    full_ids = {i["file_name"]: i["id"] for i in full["images"]}
    assert all(full_ids[i["file_name"]] == i["id"] for i in val["images"])
    assert val["categories"] == full["categories"]
