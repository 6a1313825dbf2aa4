"""`effdet-rt infer` end to end on BCCD images plus grayscale, RGBA, EXIF-rotated and corrupt files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effdet_rt.cli.main import run
from effdet_rt.export.verify import match_detections
from effdet_rt.export.verify_run import comparable
from effdet_rt.utils.colours import class_colour
from tests.support.infer import KEY, bccd_images
from tests.support.kitti import parse_kitti_file

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

EXIF_ORIENTATION = 0x0112


def make_mixed_folder(folder: Path, bccd_root: Path) -> dict[str, tuple[int, int]]:
    """3 BCCD JPEGs, a grayscale PNG, an RGBA PNG, an EXIF-rotated JPEG and a corrupt file.

    Returns name -> (width, height) as the picture is displayed (EXIF orientation applied)."""
    folder.mkdir()
    sizes = {}
    for path in bccd_images(bccd_root, 3):
        shutil.copy(path, folder / path.name)
        sizes[path.name] = (640, 480)
    source = Image.open(bccd_images(bccd_root, 4)[3]).convert("RGB")
    source.convert("L").resize((200, 120)).save(folder / "gray.png")
    sizes["gray.png"] = (200, 120)
    rgba = source.resize((96, 160)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    sizes["rgba.png"] = (96, 160)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored landscape, displayed rotated 90 degrees: portrait
    source.resize((160, 100)).save(folder / "rotated.jpg", exif=exif)
    sizes["rotated.jpg"] = (100, 160)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return sizes


@pytest.fixture(scope="module")
def mixed_run(bccd_root, tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("infer")
    sizes = make_mixed_folder(root / "images", bccd_root)
    out = root / "out"
    code = run(["infer", "-m", str(tiny_checkpoint), "-k", KEY, "-i", str(root / "images"), "-o", str(out),
                "--batch-size", "2", "--min-score", "0.3", "--max-boxes-to-draw", "3", "--dump-label"])
    return code, sizes, out, root


def detections_by_image(out: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for entry in json.loads((out / "detections.json").read_text()):
        grouped.setdefault(entry["image_id"], []).append(entry)
    return grouped


def test_corrupt_image_is_reported_and_others_complete(mixed_run, capsys):
    code, sizes, out, _ = mixed_run
    assert code == 1
    good = sorted(name for name in sizes)
    assert sorted(p.name for p in (out / "images_annotated").iterdir()) == good
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(Path(n).stem + ".txt" for n in good)
    assert "broken.jpg" not in detections_by_image(out)
    status = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "FAILURE" and status[-1]["kpi"] == {
        "images": 7, "failed": 1, "detections": sum(len(v) for v in detections_by_image(out).values())}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")]  # no staging folder left


def test_annotated_images_keep_the_displayed_size(mixed_run):
    _, sizes, out, _ = mixed_run
    for name, size in sizes.items():
        with Image.open(out / "images_annotated" / name) as picture:
            assert picture.size == size, name
            assert picture.mode == "RGB"


def test_kitti_labels_parse_back_to_the_detections(mixed_run):
    _, sizes, out, _ = mixed_run
    grouped = detections_by_image(out)
    assert sum(len(v) for v in grouped.values()) > 10
    for name in sizes:
        parsed = parse_kitti_file(out / "labels" / (Path(name).stem + ".txt"))
        entries = grouped.get(name, [])
        assert len(parsed) == len(entries)
        for (cls, box, score), entry in zip(parsed, entries, strict=True):
            x, y, w, h = entry["bbox"]
            assert cls == str(entry["category_id"])
            np.testing.assert_allclose(box, [x, y, x + w, y + h], atol=0.005 + 1e-9)
            assert np.float32(score) == np.float32(entry["score"])
            assert entry["score"] >= 0.3
            assert 0 <= x and x + w <= sizes[name][0] + 1e-3 and y + h <= sizes[name][1] + 1e-3


def test_best_box_is_drawn_where_it_was_detected(mixed_run):
    _, sizes, out, root = mixed_run
    for name in ("gray.png", "rgba.png"):  # lossless outputs: exact colours
        best = max(detections_by_image(out)[name], key=lambda e: e["score"])
        x, y, w, h = best["bbox"]
        drawn = np.asarray(Image.open(out / "images_annotated" / name))
        original = np.asarray(Image.open(root / "images" / name).convert("RGB"))
        mid_y = int(y + h / 2)
        left = [int(round(x)) + d for d in (-1, 0, 1) if 0 <= int(round(x)) + d < drawn.shape[1]]
        assert any(tuple(drawn[mid_y, col]) == class_colour(best["category_id"]) for col in left), name
        assert (drawn != original).any(axis=-1).sum() > 2 * h  # at least the two vertical edges changed


def as_detections(per_image: list[list[dict]]):
    """COCO results entries (bbox x, y, w, h), one list per image, as one Detections batch."""
    from effdet_rt.detections import Detections

    k = max(len(entries) for entries in per_image)
    boxes, scores, classes = np.zeros((len(per_image), k, 4)), np.zeros((len(per_image), k)), np.zeros((len(per_image), k), int)
    for i, entries in enumerate(per_image):
        for j, e in enumerate(sorted(entries, key=lambda e: -e["score"])):
            x, y, w, h = e["bbox"]
            boxes[i, j], scores[i, j], classes[i, j] = (x, y, x + w, y + h), e["score"], e["category_id"]
    return Detections(boxes, scores, classes, np.array([len(e) for e in per_image]))


def test_batch_1_and_batch_4_give_the_same_detections(bccd_root, tmp_path, tiny_checkpoint):
    images = tmp_path / "five"
    images.mkdir()
    # square crops: under a 4:3 image the padding gives many anchors identical features and exactly tied scores,
    # which a batch of 4 (other TensorFlow conv kernels) may break in another order (AVX2 did, on 4 of 493 boxes)
    for path in bccd_images(bccd_root, 5):
        Image.open(path).crop((0, 0, 480, 480)).save(images / f"{path.stem}.png")
    results = {}
    for batch in ("1", "4"):
        out = tmp_path / f"out{batch}"
        assert run(["infer", "-m", str(tiny_checkpoint), "-k", KEY, "-i", str(images), "-o", str(out),
                    "--batch-size", batch, "--min-score", "0.1"]) == 0
        results[batch] = detections_by_image(out)
    assert sorted(results["1"]) == sorted(results["4"]) == sorted(p.name for p in images.iterdir())
    one, four = (as_detections([results[b][name] for name in sorted(results[b])]) for b in ("1", "4"))
    assert one.num_detections.tolist() == four.num_detections.tolist() == [100] * 5
    # near-tied scores at the 100-box cut may swap
    report = match_detections(*comparable(one, four, 100))
    assert report.reference > 400 and report.matched == report.reference == report.candidate


def test_annotation_file_gives_coco_image_ids(bccd_root, tmp_path, tiny_checkpoint):
    from effdet_rt.data.voc import voc_to_coco

    images = tmp_path / "two"
    images.mkdir()
    coco = voc_to_coco(bccd_root, "all")
    for image in coco["images"][:2]:
        shutil.copy(bccd_root / "JPEGImages" / image["file_name"], images / image["file_name"])
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    assert run(["infer", "-m", str(tiny_checkpoint), "-k", KEY, "-i", str(images), "-o", str(out),
                "-a", str(tmp_path / "gt.json"), "--min-score", "0.5"]) == 0
    assert set(detections_by_image(out)) == {coco["images"][0]["id"], coco["images"][1]["id"]}


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_bad_image_folder_is_one_error_line(tmp_path, capsys, case, tiny_checkpoint):
    folder = tmp_path / "images"
    if case == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    elif case == "file":
        folder.write_text("x")
    code = run(["infer", "-m", str(tiny_checkpoint), "-k", KEY, "-i", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and str(folder) in err[0]
    assert not (tmp_path / "out").exists()


def test_wrong_key_is_one_error_line(bccd_root, tmp_path, capsys, tiny_checkpoint):
    images = tmp_path / "one"
    images.mkdir()
    shutil.copy(bccd_images(bccd_root, 1)[0], images)
    code = run(["infer", "-m", str(tiny_checkpoint), "-k", "wrong", "-i", str(images), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "wrong encryption key" in err[0]
    assert not (tmp_path / "o").exists()


def test_inference_alias_and_missing_model(tmp_path, capsys):
    code = run(["inference", "-i", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: no model: pass -m/--model (a .edrt, .onnx, .plan or OpenVINO .xml file) or set "
                                 "inference.checkpoint"]


def test_spec_inference_fields_are_the_defaults(bccd_root, tmp_path, tiny_checkpoint):
    import yaml

    images = tmp_path / "imgs"
    images.mkdir()
    for path in bccd_images(bccd_root, 2):
        shutil.copy(path, images / path.name)
    (tmp_path / "labels.yaml").write_text("1: Platelets\n2: RBC\n3: WBC\n")
    spec = {"encryption_key": KEY, "inference": {
        "checkpoint": str(tiny_checkpoint), "image_dir": str(images), "output_dir": str(tmp_path / "out"),
        "dump_label": True, "min_score_thresh": 0.9, "label_map": str(tmp_path / "labels.yaml"), "batch_size": 2}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert run(["inference", "-e", str(tmp_path / "spec.yaml")]) == 0
    grouped = detections_by_image(tmp_path / "out")
    assert sorted(grouped) == sorted(p.name for p in images.iterdir())
    assert min(e["score"] for entries in grouped.values() for e in entries) >= 0.9
    parsed = parse_kitti_file(tmp_path / "out" / "labels" / (Path(sorted(grouped)[0]).stem + ".txt"))
    assert {name for name, _, _ in parsed} <= {"Platelets", "RBC", "WBC"} and parsed


def test_image_missing_from_annotation_file_is_an_error_before_anything_runs(bccd_root, tmp_path, capsys, tiny_checkpoint):
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(bccd_images(bccd_root, 1)[0], images / "stranger.jpg")
    (tmp_path / "gt.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "other.jpg", "width": 640,
                                                              "height": 480}], "annotations": [],
                                                  "categories": [{"id": 1, "name": "RBC"}]}))
    code = run(["infer", "-m", str(tiny_checkpoint), "-k", KEY, "-i", str(images), "-o", str(tmp_path / "out"),
                "-a", str(tmp_path / "gt.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "stranger.jpg" in err[0] and "gt.json" in err[0]
    assert not (tmp_path / "out").exists()
