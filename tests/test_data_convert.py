"""dataset-convert / dataset-synth on small synthetic inputs: box cleaning, masks, shards, errors."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effdet_rt.cli.main import run
from effdet_rt.data.convert import BOX_CLIPPED, BOX_DROPPED, BOX_OK, clean_box
from effdet_rt.data.tfrecord import encode_example, feature_spec
from tests.support.data import read_tfrecords


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    assert run(["dataset-synth", "-o", str(out), "--num-images", "4", "--seed", "7", "--size", "64"]) == 0
    return out


def test_clean_box_keeps_clips_and_drops():
    assert clean_box([1, 2, 3, 4], 10, 10) == ((1.0, 2.0, 4.0, 6.0), BOX_OK)
    assert clean_box([-2, 5, 6, 8], 10, 10) == ((0.0, 5.0, 4.0, 10.0), BOX_CLIPPED)
    assert clean_box([3, 3, 0, 4], 10, 10) == (None, BOX_DROPPED)
    assert clean_box([3, 3, 4, -1], 10, 10) == (None, BOX_DROPPED)
    assert clean_box([12, 3, 4, 4], 10, 10) == (None, BOX_DROPPED)  # wholly outside: nothing left after clipping


def test_encode_example_parses_with_tensorflow():
    import tensorflow as tf

    record = encode_example({
        "image/encoded": [b"\x00\xffabc"], "image/height": [480], "image/width": [640],
        "image/object/bbox/xmin": [0.25, 0.5], "image/object/class/label": [3, -1],
        "image/object/class/text": [b"RBC", b""], "image/object/area": [],
    })
    parsed = tf.io.parse_single_example(record, feature_spec())
    assert parsed["image/encoded"].numpy() == b"\x00\xffabc"
    assert (int(parsed["image/height"]), int(parsed["image/width"])) == (480, 640)
    assert parsed["image/object/bbox/xmin"].values.numpy().tolist() == [0.25, 0.5]
    assert parsed["image/object/class/label"].values.numpy().tolist() == [3, -1]
    assert parsed["image/object/class/text"].values.numpy().tolist() == [b"RBC", b""]
    assert parsed["image/object/area"].values.numpy().size == 0
    assert parsed["image/format"].numpy() == b"jpeg"  # default when absent


def test_synth_is_deterministic(synth, tmp_path):
    again = tmp_path / "again"
    other = tmp_path / "other"
    assert run(["dataset-synth", "-o", str(again), "--num-images", "4", "--seed", "7", "--size", "64"]) == 0
    assert run(["dataset-synth", "-o", str(other), "--num-images", "4", "--seed", "8", "--size", "64"]) == 0
    hashes = _tree_hash(synth)
    assert sorted(hashes) == ["annotations.json", "images/000001.jpg", "images/000002.jpg", "images/000003.jpg",
                              "images/000004.jpg", "label_map.yaml"]
    assert _tree_hash(again) == hashes
    assert _tree_hash(other)["annotations.json"] != hashes["annotations.json"]
    coco = json.loads((synth / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["rectangle", "ellipse", "triangle"]
    assert all(Image.open(synth / "images" / i["file_name"]).size == (64, 64) for i in coco["images"])


def _broken_copy(synth: Path, tmp_path: Path) -> tuple[Path, dict]:
    """The synthetic set with a box reaching outside, a zero-width box, a missing and a corrupt image."""
    coco = json.loads((synth / "annotations.json").read_text())
    images = tmp_path / "images"
    images.mkdir()
    for image in coco["images"]:
        (images / image["file_name"]).write_bytes((synth / "images" / image["file_name"]).read_bytes())
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    first[0]["bbox"] = [-6.0, 10.0, 20.0, 70.0]  # x from -6 to 14, y from 10 to 80 -> clipped to 0..14, 10..64
    if len(first) == 1:
        coco["annotations"].append(dict(first[0], id=999, bbox=[5.0, 5.0, 0.0, 9.0]))
    else:
        first[1]["bbox"] = [5.0, 5.0, 0.0, 9.0]
    coco["images"].append({"id": 5, "file_name": "missing.jpg", "width": 64, "height": 64})
    coco["images"].append({"id": 6, "file_name": "corrupt.jpg", "width": 64, "height": 64})
    (images / "corrupt.jpg").write_bytes((images / "000001.jpg").read_bytes()[:300])
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(coco))
    return path, coco


def test_convert_clips_drops_and_skips_with_warnings(synth, tmp_path):
    ann_path, coco = _broken_copy(synth, tmp_path)
    out = tmp_path / "out"
    assert run(["dataset-convert", "-i", str(tmp_path / "images"), "-a", str(ann_path), "-o", str(out)]) == 0
    # 6 images in the json -> 6 shards (never more than images); 2 images skipped -> 4 records.
    shards = sorted(p.name for p in out.glob("*.tfrecord"))
    assert shards == [f"broken-{i:05d}-of-00006.tfrecord" for i in range(6)]
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    warnings = json.loads((out / "broken_warnings.json").read_text())
    assert sorted(warnings) == ["1", "5", "6"]
    assert warnings["1"] == {"box": [first[0]["id"], first[1]["id"]], "mask": []}
    assert warnings["5"]["box"] == [] and "cannot read" in warnings["5"]["image"]
    assert "corrupt image" in warnings["6"]["image"]
    records = {int(r["image/source_id"]): r for r in read_tfrecords(out / "broken-*.tfrecord")}
    assert sorted(records) == [1, 2, 3, 4]
    rec = records[1]
    assert rec["image/object/bbox/xmin"].size == len(first) - 1
    np.testing.assert_allclose(
        [rec[f"image/object/bbox/{k}"][0] for k in ("xmin", "ymin", "xmax", "ymax")],
        [0.0, 10 / 64, 14 / 64, 1.0], atol=1e-7)
    per_image = {i: sum(a["image_id"] == i for a in coco["annotations"]) for i in range(1, 5)}
    assert {i: r["image/object/class/label"].size for i, r in records.items()} == {**per_image, 1: per_image[1] - 1}


def test_convert_with_masks_writes_pngs_inside_boxes(synth, tmp_path):
    out = tmp_path / "out"
    assert run(["dataset-convert", "-i", str(synth / "images"), "-a", str(synth / "annotations.json"),
                "-o", str(out), "-t", "train", "-s", "2", "--include-mask", "--workers", "1"]) == 0
    coco = json.loads((synth / "annotations.json").read_text())
    assert sorted(p.name for p in out.glob("*.tfrecord")) == ["train-00000-of-00002.tfrecord",
                                                             "train-00001-of-00002.tfrecord"]
    records = list(read_tfrecords(out / "train-*.tfrecord"))
    assert [int(r["image/source_id"]) for r in records] == [1, 3, 2, 4]  # round-robin: shard 0 has 1, 3
    masks = [m for r in records for m in r["image/object/mask"]]
    assert len(masks) == len(coco["annotations"])
    for mask_png in masks:
        mask = np.asarray(Image.open(io.BytesIO(mask_png)))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1} and mask.sum() > 0
    assert json.loads((out / "train_warnings.json").read_text()) == {}


def _coco(**changes) -> dict:
    base = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
        "annotations": [{"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "bad.json: not valid JSON (line 1, column 2"),
        (json.dumps({"images": [], "categories": []}), "bad.json: missing the 'annotations' key"),
        (json.dumps(_coco(images=[])), "bad.json: 'images' is empty"),
        (json.dumps(_coco(images=[{"id": 1, "file_name": "a.jpg", "width": 8}])), "images[0] is missing the 'height'"),
        (json.dumps(_coco(images=[{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}] * 2)),
         "image id 1 appears twice"),
        (json.dumps(_coco(annotations=[{"id": 11, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2]}])),
         "annotation 11 names image_id 7, which is not in 'images'"),
        (json.dumps(_coco(annotations=[{"id": 12, "image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 2]}])),
         "annotation 12 names category_id 4, which is not in 'categories'"),
        (json.dumps(_coco(annotations=[{"id": 13, "image_id": 1, "category_id": 1, "bbox": [1, 2]}])),
         "annotation 13 'bbox' must be 4 finite numbers"),
    ],
)
def test_convert_bad_json_is_one_error_line(tmp_path, capsys, content, message):
    (tmp_path / "bad.json").write_text(content)
    (tmp_path / "images").mkdir()
    out = tmp_path / "out"
    code = run(["dataset-convert", "-i", str(tmp_path / "images"), "-a", str(tmp_path / "bad.json"), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "images"]


def _run_error(argv: list[str], capsys) -> str:
    code = run(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_convert_environment_errors(synth, tmp_path, capsys):
    ann = str(synth / "annotations.json")
    images = str(synth / "images")
    as_file = tmp_path / "taken"
    as_file.write_text("x")
    assert "taken: exists and is not a folder" in _run_error(
        ["dataset-convert", "-i", images, "-a", ann, "-o", str(as_file)], capsys)
    assert "cannot create the output folder" in _run_error(
        ["dataset-convert", "-i", images, "-a", ann, "-o", str(as_file / "sub")], capsys)
    assert "nowhere: image folder not found" in _run_error(
        ["dataset-convert", "-i", str(tmp_path / "nowhere"), "-a", ann, "-o", str(tmp_path / "o1")], capsys)
    assert "nope.json: cannot read the annotation file" in _run_error(
        ["dataset-convert", "-i", images, "-a", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o2")], capsys)
    assert "exactly one of -a" in _run_error(["dataset-convert", "-o", str(tmp_path / "o3")], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_convert_every_image_missing_is_an_error(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(_coco()))
    (tmp_path / "images").mkdir()
    line = _run_error(["dataset-convert", "-i", str(tmp_path / "images"), "-a", str(tmp_path / "a.json"),
                       "-o", str(tmp_path / "out")], capsys)
    assert "none of the 1 images could be used" in line and "a.jpg" in line
    assert not (tmp_path / "out").exists()


def test_include_mask_needs_segmentation(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(_coco()))
    (tmp_path / "images").mkdir()
    line = _run_error(["dataset-convert", "-i", str(tmp_path / "images"), "-a", str(tmp_path / "a.json"),
                       "-o", str(tmp_path / "out"), "--include-mask"], capsys)
    assert "annotation 11 has no 'segmentation'" in line


def test_voc_errors(tmp_path, capsys):
    assert "no Annotations/ folder" in _run_error(
        ["dataset", "import-voc", str(tmp_path), "-o", str(tmp_path / "x.json")], capsys)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object><name>x</name></object>")
    assert "a.xml: not a readable VOC XML" in _run_error(
        ["dataset", "import-voc", str(tmp_path), "-o", str(tmp_path / "x.json")], capsys)
    assert "split 'nosuch' not found" in _run_error(
        ["dataset-convert", "--voc", str(tmp_path), "--split", "nosuch", "-o", str(tmp_path / "o")], capsys)
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "o").exists()


def test_synth_rejects_bad_counts(tmp_path, capsys):
    assert "--num-images must be at least 1" in _run_error(
        ["dataset-synth", "-o", str(tmp_path / "s"), "--num-images", "0"], capsys)
    assert not (tmp_path / "s").exists()
