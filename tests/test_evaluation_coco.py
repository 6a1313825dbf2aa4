"""COCO metrics against values worked out by hand, and against pycocotools called directly."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from effdet_rt.cli.main import run
from effdet_rt.detections import Detections
from effdet_rt.errors import DataError
from effdet_rt.evaluation.coco import (
    METRIC_KEYS,
    detections_to_coco_results,
    evaluate_coco,
    run_coco_evaluation,
    write_class_ap_chart,
    write_pr_curve,
)

# 2 images, 1 class, 3 ground-truth boxes of 100x100 (area 10000: "large").
GROUND_TRUTH = {
    "images": [{"id": 1, "width": 400, "height": 400, "file_name": "a.jpg"},
               {"id": 2, "width": 400, "height": 400, "file_name": "b.jpg"}],
    "categories": [{"id": 1, "name": "cell"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 200, 100, 100], "area": 10000, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
    ],
}
# A box [x, y, 100, h] over a 100x100 ground truth at (x, y) has IoU h/100: 1.0, 0.62 and 0.82 here.
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [200, 200, 100, 62], "score": 0.8},
    {"image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 82], "score": 0.7},
]
# By hand, 101 recall points r = 0.00 .. 1.00:
# IoU thr 0.50-0.60 (3): all three match                  -> precision 1 everywhere             AP_t = 1
# IoU thr 0.65-0.80 (4): TP, FP, TP: recall 1/3, 1/3, 2/3; -> 1 for r <= .33 (34 points),
#                        interpolated precision 1, 2/3, 2/3   2/3 for .34 <= r <= .66 (33)    AP_t = 56/101
# IoU thr 0.85-0.95 (3): only the exact box matches       -> 1 for r <= .33 (34)              AP_t = 34/101
HAND_AP = (3 * 1 + 4 * 56 / 101 + 3 * 34 / 101) / 10  # = 629/1010
HAND_AR_MAX1 = (7 * 2 / 3 + 3 * 1 / 3) / 10  # one detection per image: the 0.62 box is dropped
HAND_AR_MAX10 = (3 * 1 + 4 * 2 / 3 + 3 * 1 / 3) / 10


@pytest.fixture()
def files(tmp_path):
    gt = tmp_path / "annotations.json"
    dets = tmp_path / "dets.json"
    gt.write_text(json.dumps(GROUND_TRUTH))
    dets.write_text(json.dumps(DETECTIONS))
    return gt, dets


def _pycocotools_stats(gt_path, dets_path) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(dets_path)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_hand_computed_values(files):
    gt, dets = files
    metrics = evaluate_coco(gt, dets)
    assert list(metrics) == list(METRIC_KEYS)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP75"] == pytest.approx(56 / 101, abs=1e-12)
    assert metrics["AP"] == pytest.approx(629 / 1010, abs=1e-12)
    assert metrics["AP"] == pytest.approx(HAND_AP, abs=1e-12)
    assert metrics["ARmax1"] == pytest.approx(HAND_AR_MAX1, abs=1e-12)
    assert metrics["ARmax10"] == pytest.approx(HAND_AR_MAX10, abs=1e-12)
    assert metrics["ARmax100"] == pytest.approx(HAND_AR_MAX10, abs=1e-12)
    assert metrics["APs"] == -1.0 and metrics["APm"] == -1.0  # no small or medium ground truth
    # area=large ignores unmatched detections smaller than 96x96 (the 0.62 and 0.82 boxes when they miss):
    # 0.65-0.80 -> TP, TP: 1 for r <= .66 (67 points); 0.85-0.95 -> 34 points
    assert metrics["APl"] == pytest.approx((3 + 4 * 67 / 101 + 3 * 34 / 101) / 10, abs=1e-12)


def test_equals_pycocotools_called_directly(files):
    gt, dets = files
    metrics = evaluate_coco(gt, dets)
    assert [metrics[key] for key in METRIC_KEYS] == pytest.approx(_pycocotools_stats(gt, dets).tolist(), abs=1e-12)


def test_dict_and_list_inputs_and_per_class(files):
    metrics = evaluate_coco(GROUND_TRUTH, DETECTIONS, label_map={1: "cell"})
    assert metrics["AP/cell"] == pytest.approx(629 / 1010, abs=1e-12)
    assert DETECTIONS[1]["bbox"] == [200, 200, 100, 62]  # inputs are not modified


def test_image_ids_restrict_the_evaluation():
    metrics = evaluate_coco(GROUND_TRUTH, DETECTIONS, image_ids=[2])
    # one box, IoU 0.82: matched at 7 of the 10 thresholds (0.50 .. 0.80)
    assert metrics["AP"] == pytest.approx(0.7, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)


def test_max_detections_other_than_100_still_reports_every_number():
    metrics = evaluate_coco(GROUND_TRUTH, DETECTIONS, max_detections=20)
    assert metrics["AP"] == pytest.approx(629 / 1010, abs=1e-12)
    assert metrics["ARmax100"] == pytest.approx(HAND_AR_MAX10, abs=1e-12)


def test_empty_results_are_all_zero():
    metrics = evaluate_coco(GROUND_TRUTH, [], label_map={1: "cell"})
    assert metrics == {**dict.fromkeys(METRIC_KEYS, 0.0), "AP/cell": 0.0}


def test_detections_to_coco_results_converts_corners_to_width_height():
    detections = Detections(
        boxes=np.array([[[0, 0, 100, 100], [200, 200, 300, 262], [9, 9, 9, 9]],
                        [[0, 0, 100, 82], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
        scores=np.array([[0.9, 0.8, 0.1], [0.7, 0, 0]], np.float32),
        classes=np.array([[1, 1, 1], [1, 0, 0]]),
        num_detections=np.array([2, 1]),
    )
    results = detections_to_coco_results(detections, [np.int64(1), 2])
    assert [r["bbox"] for r in results] == [d["bbox"] for d in DETECTIONS]
    assert [r["image_id"] for r in results] == [1, 1, 2] and type(results[0]["image_id"]) is int
    assert [r["category_id"] for r in results] == [1, 1, 1]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.8, 0.7], abs=1e-7)
    assert evaluate_coco(GROUND_TRUTH, results)["AP"] == pytest.approx(629 / 1010, abs=1e-12)


def test_pr_curve_png_and_its_data_match_the_hand_worked_metrics(tmp_path):
    evaluation = run_coco_evaluation(GROUND_TRUTH, DETECTIONS, per_class=True)
    path = write_pr_curve(evaluation, tmp_path / "pr.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (900, 650)
        colours = {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)[::7]}
    assert len(colours) > 50  # anti-aliased lines, text and grid: not a blank canvas
    data = json.loads((tmp_path / "pr.json").read_text())
    assert data["recall"] == pytest.approx(np.linspace(0, 1, 101).tolist())
    cell = data["classes"]["cell"]
    # every match holds at IoU 0.50: precision 1 at every recall point, AP50 1; AP is the hand-worked 629/1010
    assert cell["precision"] == [1.0] * 101 and cell["AP50"] == 1.0 and cell["category_id"] == 1
    assert cell["AP"] == pytest.approx(629 / 1010, abs=1e-12) == evaluation.metrics["AP/cell"]
    # at IoU 0.75: 1 up to recall 1/3 (34 points), 2/3 up to 2/3 (33 points), then nothing
    assert data["means"]["IoU 0.75"] == pytest.approx([1.0] * 34 + [2 / 3] * 33 + [0.0] * 34)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pr.json", "pr.png"]


def test_class_ap_chart_data_equals_the_per_class_metrics(tmp_path):
    two_classes = {**GROUND_TRUTH, "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "platelet"}],
                   "annotations": [*GROUND_TRUTH["annotations"], {"id": 4, "image_id": 2, "category_id": 2,
                                   "bbox": [200, 200, 50, 50], "area": 2500, "iscrowd": 0}]}
    evaluation = run_coco_evaluation(two_classes, DETECTIONS, per_class=True)
    path = write_class_ap_chart(evaluation, tmp_path / "ap.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 500)
    data = json.loads((tmp_path / "ap.json").read_text())
    assert data["classes"] == ["cell", "platelet"]
    assert data["AP"] == [evaluation.metrics["AP/cell"], evaluation.metrics["AP/platelet"]] == pytest.approx(
        [629 / 1010, 0.0])
    # COCO's AP50 is the mean of the classes' AP50
    assert data["AP50"] == [1.0, 0.0] and sum(data["AP50"]) / 2 == pytest.approx(evaluation.metrics["AP50"])


@pytest.mark.parametrize(
    ("gt_text", "dets_text", "message"),
    [
        ("{not json", json.dumps(DETECTIONS), "annotations.json: not valid JSON"),
        (json.dumps({"images": []}), json.dumps(DETECTIONS), "annotations.json: missing the 'annotations' list"),
        (json.dumps(GROUND_TRUTH), "[1, 2", "dets.json: not valid JSON"),
        (json.dumps(GROUND_TRUTH), json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]),
         "dets.json: result 0: missing 'score'"),
        (json.dumps(GROUND_TRUTH), json.dumps([{**DETECTIONS[0], "bbox": [50, 50, 10, -3]}]),
         "dets.json: result 0: bbox [50, 50, 10, -3] has a negative height"),
        (json.dumps(GROUND_TRUTH), json.dumps([DETECTIONS[0], {**DETECTIONS[1], "image_id": 7}]),
         "dets.json: result 1: image_id 7 is not an image"),
        (json.dumps(GROUND_TRUTH), json.dumps([{**DETECTIONS[0], "category_id": 3}]),
         r"dets.json: result 0: category_id 3 is not a category"),
    ],
)
def test_malformed_input_is_one_error_line(tmp_path, capsys, gt_text, dets_text, message):
    (tmp_path / "annotations.json").write_text(gt_text)
    (tmp_path / "dets.json").write_text(dets_text)
    out = tmp_path / "out"
    code = run(["evaluate-detections", "--detections", str(tmp_path / "dets.json"), "-a", str(tmp_path / "annotations.json"),
                "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not out.exists()


def test_library_raises_data_error_for_negative_width():
    with pytest.raises(DataError, match="negative width"):
        evaluate_coco(GROUND_TRUTH, [{**DETECTIONS[0], "bbox": [10, 10, -1, 5]}])


def test_cli_prints_the_table_and_writes_outputs(files, tmp_path, capsys):
    gt, dets = files
    labels = tmp_path / "labels.yaml"
    labels.write_text("1: RBC\n")
    out = tmp_path / "out"
    code = run(["evaluate-detections", "--detections", str(dets), "-a", str(gt), "-o", str(out), "--label-map", str(labels)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "AP50" in stdout and "1.0000" in stdout and f"{629 / 1010:.4f}" in stdout and "AP/RBC" in stdout
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["AP"] == pytest.approx(629 / 1010, abs=1e-12) and saved["AP/RBC"] == saved["AP"]
    assert sorted(p.name for p in out.iterdir()) == ["ap_per_class.json", "ap_per_class.png", "eval_results.json",
                                                     "pr_curve.json", "pr_curve.png", "status.json"]
    assert json.loads((out / "pr_curve.json").read_text())["classes"]["RBC"]["AP"] == saved["AP/RBC"]
    status = json.loads((out / "status.json").read_text().splitlines()[-1])
    assert status["status"] == "SUCCESS" and status["kpi"]["AP50"] == 1.0


def test_cli_without_a_model_says_what_to_pass(capsys):
    assert run(["evaluate", "-a", "x.json"]) == 2
    err = capsys.readouterr().err
    assert "error: evaluate needs -m/--model" in err and "effdet-rt evaluate-detections" in err


def test_ground_truth_needs_less_than_conversion_but_is_checked_by_the_same_rules():
    from effdet_rt.data.coco import parse_coco

    minimal = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1}],
               "annotations": [{k: a[k] for k in ("image_id", "category_id", "bbox")} for a in GROUND_TRUTH["annotations"]]}
    assert evaluate_coco(minimal, DETECTIONS)["AP"] == pytest.approx(629 / 1010, abs=1e-12)  # area, ids, names filled in
    with pytest.raises(DataError, match=r"categories\[0\] needs 'id' and 'name'"):
        parse_coco(minimal, "minimal.json")  # conversion writes the names into label_map.yaml
    with pytest.raises(DataError, match=r"images\[0\] is missing the 'file_name' key"):
        parse_coco({**minimal, "categories": GROUND_TRUTH["categories"]}, "minimal.json")  # and reads the files
    stray = {**GROUND_TRUTH, "annotations": [{**GROUND_TRUTH["annotations"][0], "image_id": 9}]}
    message = "annotation 1 names image_id 9, which is not in 'images'"
    for check in (lambda: evaluate_coco(stray, DETECTIONS), lambda: parse_coco(stray, "ground truth")):
        with pytest.raises(DataError, match=f"ground truth: {message}"):
            check()
