"""Classification end to end on real hymenoptera images (ants vs bees) with a tiny EfficientNet-B0 input:
overfitting 8 images, resume equals a straight run, ONNX vs TensorFlow probabilities, INT8 vs FP32, the CLI."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effdet_rt.cli.main import run
from tests.support.data import steps_run_eagerly

HYMENOPTERA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
KEY = "classification-test-key"
OVERFIT_EPOCHS = 14

pytestmark = pytest.mark.slow


def copy_images(target: Path, per_class: int, offset: int = 0) -> Path:
    for name in ("ants", "bees"):
        (target / name).mkdir(parents=True)
        for source in sorted((HYMENOPTERA / "train" / name).glob("*.jpg"))[offset:offset + per_class]:
            shutil.copy(source, target / name / source.name)
    return target


@pytest.fixture(scope="module")
def eight(tmp_path_factory) -> Path:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"real data not found at {HYMENOPTERA}")
    return copy_images(tmp_path_factory.mktemp("eight") / "train", 4)


@pytest.fixture(scope="module")
def overfit(eight, tmp_path_factory):
    """8 images, no augmentation, trained until it knows them; validation = the same 8 (inference mode)."""
    root = tmp_path_factory.mktemp("overfit")
    spec = root / "spec.yaml"
    spec.write_text(f"""results_dir: {root / 'results'}
key: {KEY}
data:
  train_dataset_path: {eight}
  val_dataset_path: {eight}
augment:
  enable_random_crop: false
  enable_center_crop: false
  enable_color_augmentation: false
  disable_horizontal_flip: true
  mixup_alpha: 0
model:
  input_image_size: 3,64,64
train:
  batch_size_per_gpu: 8
  num_epochs: {OVERFIT_EPOCHS}
  checkpoint_interval: 7
  n_workers: 2
  label_smoothing: 0
  optim_config: {{optimizer: adam}}
  lr_config: {{scheduler: cosine, learning_rate: 0.003, soft_start: 0}}
  bn_config: {{momentum: 0.5}}
evaluate:
  dataset_path: {eight}
  top_k: 1
  n_workers: 2
""")
    assert run(["classification", "train", "-e", str(spec)]) == 0
    return spec, root / "results"


def epoch_lines(results: Path) -> list[dict]:
    lines = [json.loads(line) for line in (results / "status.json").read_text().splitlines()]
    return [line for line in lines if line["message"].startswith("epoch ")]


def test_overfitting_eight_images_reaches_full_accuracy(overfit):
    _, results = overfit
    assert json.loads((results / "classmap.json").read_text()) == {"ants": 0, "bees": 1}
    assert sorted(p.name for p in results.glob("*.edrt")) == ["efficientnet-b0_007.edrt", "efficientnet-b0_014.edrt"]
    epochs = epoch_lines(results)
    assert [e["epoch"] for e in epochs] == list(range(1, OVERFIT_EPOCHS + 1))
    first, last = epochs[0]["kpi"], epochs[-1]["kpi"]
    assert set(first) == {"loss", "data_loss", "accuracy", "val_loss", "val_accuracy"}
    assert last["data_loss"] < 0.05 * first["data_loss"]  # the loss falls
    assert epochs[2]["kpi"]["data_loss"] < first["data_loss"]  # already after a few steps
    assert last["accuracy"] == 1.0 and last["val_accuracy"] == 1.0  # train batches and inference mode
    assert any((results / "tensorboard").glob("events.out.tfevents.*"))
    with Image.open(results / "training_curves.png") as curves:
        assert curves.size == (1100, 450)
    curves = json.loads((results / "training_curves.json").read_text())
    assert curves["epochs"] == list(range(1, OVERFIT_EPOCHS + 1))
    for name in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert curves[name] == [e["kpi"][name] for e in epochs], name


def test_evaluate_the_checkpoint_on_its_training_images(overfit, capsys):
    spec, results = overfit
    out = results / "eval"
    assert run(["classification", "evaluate", "-e", str(spec), "-m", str(results / "efficientnet-b0_014.edrt"),
                "-r", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "top-1 accuracy: 1.0000" in printed
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["num_images"] == 8 and metrics["top_1_accuracy"] == 1.0
    assert metrics["confusion_matrix"] == [[4, 0], [0, 4]]
    assert metrics["per_class"]["ants"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 4}
    with Image.open(out / "confusion_matrix.png") as png:
        assert png.size == (900, 400)
    drawn = json.loads((out / "confusion_matrix.json").read_text())
    assert drawn == {"classes": ["ants", "bees"], "counts": metrics["confusion_matrix"],
                     "normalised": [[1.0, 0.0], [0.0, 1.0]]}
    scores = json.loads((out / "class_scores.json").read_text())
    assert scores["classes"] == ["ants", "bees"]
    assert scores["f1"] == [metrics["per_class"][c]["f1"] for c in ("ants", "bees")] == [1.0, 1.0]
    with Image.open(out / "class_scores.png") as png:
        assert png.size == (600, 500)


def test_resume_equals_a_straight_run(eight, tmp_path):
    """Every augmentation on (random crop, colour, flip, mixup) and a dropout head: seeded by epoch and sample."""
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.classification.spec import load_classification_spec
    from effdet_rt.classification.train import train_classifier

    spec = load_classification_spec(None, [
        f"data.train_dataset_path={eight}", "model.input_image_size=3,32,32", "model.dropout=0.3",
        "train.batch_size_per_gpu=4", "train.num_epochs=2", "train.n_workers=2", f"key={KEY}",
        "train.optim_config.nesterov=true", "train.lr_config.learning_rate=0.01", "augment.mixup_alpha=0.4",
    ])
    quiet = lambda _m: None  # noqa: E731
    with steps_run_eagerly():  # four steps a run: tracing them would cost more (the overfit run traces the step)
        straight = train_classifier(spec, tmp_path / "straight", log=quiet)
        first = train_classifier(spec, tmp_path / "resumed", log=quiet, max_seconds=0)
        resumed = train_classifier(spec, tmp_path / "resumed", log=quiet)
    assert (straight.name, first.name, resumed.name) == ("efficientnet-b0_002.edrt", "efficientnet-b0_001.edrt",
                                                         "efficientnet-b0_002.edrt")
    a, b = load_checkpoint(straight, KEY), load_checkpoint(resumed, KEY)
    assert a.metadata["step"] == b.metadata["step"] == 4
    history_a, history_b = a.metadata["history"], b.metadata["history"]
    assert history_a["epochs"] == history_b["epochs"] == [1, 2] and sorted(history_a) == sorted(history_b)
    for name in ("loss", "data_loss", "accuracy"):
        assert history_a[name] == pytest.approx(history_b[name], rel=1e-5), name
    assert int(a.weights["head_dropout/calls"]) == 4  # the dropout mask counter is checkpointed too
    assert sorted(a.weights) == sorted(b.weights)
    for name in a.weights:
        np.testing.assert_allclose(a.weights[name], b.weights[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in a.groups["optimizer"]:
        np.testing.assert_allclose(a.groups["optimizer"][name], b.groups["optimizer"][name], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def exported(overfit, tmp_path_factory):
    spec, results = overfit
    out = tmp_path_factory.mktemp("export")
    onnx_path = out / "classifier.onnx"
    assert run(["classification", "export", "-e", str(spec), "-m", str(results / "efficientnet-b0_014.edrt"),
                "-o", str(onnx_path), "--verify"]) == 0
    return spec, results, out, onnx_path


def val_probabilities(model: Path, key: str | None = None):
    from effdet_rt.classification.dataset import scan_class_folders
    from effdet_rt.classification.engines import load_classifier
    from effdet_rt.classification.evaluate import predict_files

    classifier = load_classifier(model, key)
    val = scan_class_folders(HYMENOPTERA / "val", "val")
    predictions = predict_files(classifier, val.paths, 32, 2)
    assert not predictions.skipped and len(predictions.paths) == 153
    return predictions


def test_onnx_probabilities_equal_tensorflow(exported, capsys):
    _, results, _, onnx_path = exported
    reference = val_probabilities(results / "efficientnet-b0_014.edrt", KEY).probabilities
    candidate = val_probabilities(onnx_path).probabilities
    assert reference.shape == candidate.shape == (153, 2)
    assert 0.01 < float(reference[:, 0].std())  # not a saturated constant answer
    np.testing.assert_allclose(candidate, reference, atol=1e-4, rtol=0)


CALIB = ["--calib-images", str(HYMENOPTERA / "train"), "--calib-batch-size", "8", "--calib-batches", "4"]


@pytest.fixture(scope="module")
def engines(exported) -> dict[str, Path]:
    """The FP32 engine and every CPU INT8 engine of a classifier export (ONNX Runtime's two INT8 profiles; OpenVINO
    builds detectors only), built once through the CLI."""
    _, _, out, onnx_path = exported
    builds = {"fp32": (out / "fp32.onnx", ["--backend", "onnxruntime"]),
              "onnxruntime int8": (out / "int8.onnx", ["--backend", "onnxruntime", "--precision", "int8", *CALIB]),
              "onnxruntime int8 (tensorrt Q/DQ)": (out / "int8_qdq.onnx", [
                  "--backend", "onnxruntime", "--precision", "int8", "--int8-profile", "tensorrt", *CALIB])}
    for name, (path, args) in builds.items():
        assert run(["build", "-m", str(onnx_path), "-o", str(path), *args]) == 0, name
    return {name: path for name, (path, _) in builds.items()}


def test_int8_agrees_with_fp32_and_engines_run_inference(exported, engines, tmp_path, capsys):
    spec, _, out, onnx_path = exported
    fp32, int8 = engines["fp32"], engines["onnxruntime int8"]
    capsys.readouterr()
    reference = val_probabilities(fp32).probabilities.argmax(1)
    quantized = val_probabilities(int8)
    assert 0 < reference.sum() < len(reference)  # FP32 predicts both classes, so agreement means something
    agreement = float(np.mean(quantized.probabilities.argmax(1) == reference))
    assert agreement >= 0.95, agreement

    assert run(["engine-info", str(int8), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "classification" and info["precision"] == "int8"
    assert [t["name"] for t in info["tensors"]] == ["images", "probabilities"]

    results = tmp_path / "inference"
    assert run(["classification", "inference", "-e", str(spec), "-m", str(int8), "-i", str(HYMENOPTERA / "val"),
                "-r", str(results)]) == 0
    rows = list(csv.reader((results / "result.csv").open()))
    assert len(rows) == 153 and all(len(r) == 3 for r in rows)
    classes = {"ants": 0, "bees": 1}
    by_path = dict(zip(map(str, quantized.paths), quantized.probabilities, strict=True))
    for path, name, confidence in rows:
        probabilities = by_path[path]
        assert classes[name] == int(probabilities.argmax())
        assert float(confidence) == pytest.approx(float(probabilities.max()), abs=1e-6)
    single = next(iter(HYMENOPTERA.glob("val/bees/*.jpg")))
    assert run(["classification", "inference", "-e", str(spec), "-m", str(int8), "-i", str(single),
                "-r", str(tmp_path / "one")]) == 0
    assert len((tmp_path / "one" / "result.csv").read_text().splitlines()) == 1

    assert run(["deepstream-config", "-m", str(onnx_path), "-o", str(tmp_path / "ds")]) == 0
    config = (tmp_path / "ds" / "config_infer_secondary_classifier.txt").read_text()
    assert "network-type=1" in config and "output-blob-names=probabilities" in config and "infer-dims=3;64;64" in config
    assert (tmp_path / "ds" / "labels.txt").read_text() == "ants;bees\n"
    plan = tmp_path / "classifier.plan"  # a plan names its ONNX in plan.json; the config follows that model's task
    plan.write_bytes(b"not parsed here")
    (tmp_path / "classifier.plan.json").write_text(json.dumps(
        {"precision": "int8", "onnx": str(onnx_path), "profile": {"min": [1, 64, 64, 3], "opt": [1, 64, 64, 3],
                                                                  "max": [4, 64, 64, 3]}}))
    assert run(["deepstream-config", "-m", str(plan), "-o", str(tmp_path / "ds_plan")]) == 0
    config = (tmp_path / "ds_plan" / "config_infer_secondary_classifier.txt").read_text()
    assert f"model-engine-file={plan.resolve()}" in config and "batch-size=4" in config and "network-mode=1" in config


def test_pretrained_weights_load_by_name_and_a_new_head_is_made(overfit, eight, tmp_path):
    """Three classes from a two-class checkpoint: every backbone weight is taken over, the Dense head is new."""
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.classification.spec import load_classification_spec
    from effdet_rt.classification.train import train_classifier

    _, results = overfit
    three = tmp_path / "three"
    shutil.copytree(eight, three)
    shutil.copytree(eight / "ants", three / "wasps")
    pretrained = results / "efficientnet-b0_014.edrt"
    spec = load_classification_spec(None, [
        f"data.train_dataset_path={three}", "model.input_image_size=3,64,64", "train.batch_size_per_gpu=12",
        "train.num_epochs=1", "train.n_workers=2", f"key={KEY}", f"train.pretrained_model_path={pretrained}",
        "train.optim_config.optimizer=adam", "train.lr_config.learning_rate=1e-7",
    ])
    messages: list[str] = []
    with steps_run_eagerly():  # one step
        last = train_classifier(spec, tmp_path / "results", log=messages.append)
    assert any("loaded pretrained weights" in m and "skipped 2" in m for m in messages), messages
    before, after = load_checkpoint(pretrained, KEY).weights, load_checkpoint(last, KEY).weights
    assert after["logits/kernel"].shape == (320, 3)
    for name in ("stem_conv/kernel", "stage7_block0_project_conv/kernel"):
        np.testing.assert_allclose(after[name], before[name], atol=1e-5, err_msg=name)


# INT8 vs ground truth: top-1 of every CPU INT8 engine on the 153 hymenoptera val photos (labels from their folders),
# at most INT8_TOP1_POINTS points below the FP32 engine's (the measured gaps are in
# benchmarks/results/int8_ground_truth.md). One photo is 0.65 points; 5 points is 7-8 photos turning wrong, the same room the >= 95 % agreement with FP32 above leaves on any CPU (AVX2 and AMX kernels
# round INT8 differently).
INT8_TOP1_POINTS = 5.0


def test_every_int8_engine_keeps_top1_on_the_val_photos(engines, capsys):
    from effdet_rt.classification.dataset import scan_class_folders

    val = scan_class_folders(HYMENOPTERA / "val", "val")
    truth = dict(zip(map(str, val.paths), val.labels, strict=True))

    def top1(path: Path) -> float:
        predictions = val_probabilities(path)
        labels = np.array([truth[str(p)] for p in predictions.paths])
        return 100.0 * float(np.mean(predictions.probabilities.argmax(1) == labels))

    scores = {name: top1(path) for name, path in engines.items()}
    with capsys.disabled():
        print("top-1 on hymenoptera val:", {k: round(v, 2) for k, v in scores.items()})
    fp32 = scores.pop("fp32")
    assert fp32 > 50.0  # better than chance on photos it never saw, so a drop has something to drop from
    assert len(scores) >= 2
    for name, score in scores.items():
        assert fp32 - score <= INT8_TOP1_POINTS, (name, score, fp32)
