"""Model-based COCO evaluation: evaluate_engine and `effdet-rt evaluate -m` on a tiny BCCD val set."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.data.preprocess import read_image
from effdet_rt.detections import Detections
from effdet_rt.engines.runtime.base import Engine
from tests.support.infer import KEY, write_val_set


@pytest.fixture(scope="module")
def val_set(bccd_root, tmp_path_factory):
    return write_val_set(tmp_path_factory.mktemp("val"), bccd_root, 5)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    from effdet_rt.engines import load

    return load(tiny_checkpoint, key=KEY)


class GroundTruthEngine(Engine):
    """Answers each image, in order, with its ground-truth boxes (in model pixels): a perfect detector."""

    input_size = (128, 128)

    def __init__(self, coco: dict, scale: float):
        self.queue = [[a for a in coco["annotations"] if a["image_id"] == image["id"]] for image in coco["images"]]
        self.scale = scale

    def run(self, batch: np.ndarray) -> Detections:
        answers = [self.queue.pop(0) for _ in range(len(batch))]
        k = max(len(a) for a in answers)
        boxes, scores, classes = np.zeros((len(batch), k, 4)), np.zeros((len(batch), k)), np.zeros((len(batch), k))
        for i, anns in enumerate(answers):
            for j, ann in enumerate(anns):
                x, y, w, h = ann["bbox"]
                boxes[i, j] = np.array([x, y, x + w, y + h]) * self.scale
                scores[i, j], classes[i, j] = 0.9, ann["category_id"]
        return Detections(boxes, scores, classes, [len(a) for a in answers])


def test_perfect_detector_scores_ap_one(val_set):
    from effdet_rt.infer.evaluate import evaluate_engine

    records, gt_json, coco = val_set
    metrics = evaluate_engine(GroundTruthEngine(coco, 128 / 640), [str(records)], gt_json, num_samples=None,
                              batch_size=2, max_detections=100)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["ARmax100"] > 0.9


def test_num_samples_limits_the_images_evaluated(val_set):
    from effdet_rt.infer.evaluate import evaluate_engine

    records, gt_json, coco = val_set
    engine = GroundTruthEngine(coco, 128 / 640)
    metrics = evaluate_engine(engine, [str(records)], gt_json, num_samples=3, batch_size=2, max_detections=100)
    assert len(engine.queue) == 2  # 3 of 5 images were run
    assert metrics["AP50"] == pytest.approx(1.0)  # only the 3 evaluated images count


def test_evaluate_engine_equals_evaluate_coco_on_direct_detections(engine, val_set, bccd_root):
    from effdet_rt.evaluation.coco import detections_to_coco_results, evaluate_coco
    from effdet_rt.infer.evaluate import evaluate_engine

    records, gt_json, coco = val_set
    metrics = evaluate_engine(engine, [str(records)], gt_json, num_samples=4, batch_size=3, max_detections=100,
                              label_map={1: "Platelets", 2: "RBC", 3: "WBC"})
    images = coco["images"][:4]
    direct = engine.infer([read_image(bccd_root / "JPEGImages" / image["file_name"]) for image in images])
    want = evaluate_coco(gt_json, detections_to_coco_results(direct, [image["id"] for image in images]),
                         max_detections=100, label_map={1: "Platelets", 2: "RBC", 3: "WBC"},
                         image_ids=[image["id"] for image in images])
    assert set(metrics) == set(want) and "AP/RBC" in metrics
    for key, value in want.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    assert metrics["ARmax100"] > 0  # the random model does hit something, so the comparison is not 0 == 0


def write_eval_spec(folder, records, gt_json, **evaluate) -> str:
    import yaml

    from tests.support.infer import TINY_SPEC

    spec = {**TINY_SPEC, "dataset": {**TINY_SPEC["dataset"], "val_tfrecords": [str(records)],
                                     "val_json_file": str(gt_json)},
            "evaluate": {**TINY_SPEC["evaluate"], **evaluate}, "results_dir": str(folder / "results")}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_evaluate_command_with_model_matches_library(engine, val_set, tmp_path, capsys, tiny_checkpoint):
    import json

    from effdet_rt.cli.main import run
    from effdet_rt.infer.evaluate import evaluate_engine

    records, gt_json, _ = val_set
    spec = write_eval_spec(tmp_path, records, gt_json, num_samples=3, batch_size=2)
    assert run(["evaluate", "-e", spec, "-m", str(tiny_checkpoint), "-k", KEY]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "ARmax100" in out and "tiny.edrt" in out
    written = json.loads((tmp_path / "results" / "eval_results.json").read_text())
    want = evaluate_engine(engine, [str(records)], gt_json, num_samples=3, batch_size=1, max_detections=100)
    for key, value in want.items():
        assert written[key] == pytest.approx(value, abs=1e-6), key
    assert (tmp_path / "results" / "pr_curve.png").stat().st_size > 1000


def test_evaluate_command_model_errors(val_set, tmp_path, capsys, tiny_checkpoint):
    from effdet_rt.cli.main import run

    records, gt_json, _ = val_set
    spec = write_eval_spec(tmp_path, records, tmp_path / "nope.json")
    assert run(["evaluate", "-e", spec, "-m", str(tiny_checkpoint), "-k", KEY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json" in err[0] and err[0].startswith("error: ")
    spec = write_eval_spec(tmp_path, records, gt_json)
    assert run(["evaluate", "-e", spec, "-m", str(tiny_checkpoint), "-k", "bad key"]) == 2
    assert "wrong encryption key" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
