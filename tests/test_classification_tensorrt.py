"""TensorRT classifier plans with the fake TensorRT and CUDA runtime (tests/support/fake_tensorrt.py; no GPU here):
`effdet-rt build --backend tensorrt` from a classifier ONNX (flags, profile, INT8 calibration on --calib-images,
TensorRT 11's FP16 / Q/DQ paths, the classifier metadata in <plan>.json), `TensorRTClassifier` returning what the
engine computed, `classification evaluate|inference` and `deepstream-config` on the plan, and the errors.

One random-weight EfficientNet-B0 (2 classes, 32x32, its Dense head scaled up so the answers vary) is built and
exported once for the module; nothing is trained."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from PIL import Image

from effdet_rt.cli.main import run
from tests.support.cli import one_error_line
from tests.support.fake_tensorrt import fake_cudart, fake_tensorrt, install_fake_cuda

SIZE = 32
CLASSES = ["ants", "bees"]
PER_CLASS = 5
HEAD_GAIN = 5000.0  # a fresh B0's pooled features barely differ between images: amplified, the answers do


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> SimpleNamespace:
    import tf_keras as keras

    from effdet_rt.classification.export import classifier_to_onnx
    from effdet_rt.classification.images import ImageFormat
    from effdet_rt.classification.model import build_classifier, with_softmax
    from effdet_rt.classification.spec import load_classification_spec
    from effdet_rt.export.exporter import write_onnx

    root = tmp_path_factory.mktemp("trt_classifier")
    spec = load_classification_spec(None, [f"model.input_image_size=3,{SIZE},{SIZE}"])
    keras.utils.set_random_seed(5)
    model = build_classifier(spec, len(CLASSES))
    rng = np.random.default_rng(5)
    (dense,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * HEAD_GAIN, bias])
    classifier = SimpleNamespace(model=with_softmax(model), fmt=ImageFormat.from_spec(spec), classes=CLASSES, spec=spec)
    onnx_path = write_onnx(classifier_to_onnx(classifier, None, 17), root / "classifier.onnx")
    images = root / "images"
    for index, name in enumerate(CLASSES):
        (images / name).mkdir(parents=True)
        for i in range(PER_CLASS):  # not square, so eval_image's resize and centre crop both work
            pixels = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) // (index + 1)
            Image.fromarray(pixels).save(images / name / f"{name}_{i}.png")
    spec_path = root / "spec.yaml"
    spec_path.write_text(f"results_dir: {root / 'results'}\nkey: k\ndata:\n  train_dataset_path: {images}\n"
                         f"model:\n  input_image_size: 3,{SIZE},{SIZE}\nevaluate:\n  dataset_path: {images}\n"
                         "  top_k: 1\n  batch_size: 3\n  n_workers: 1\n")
    return SimpleNamespace(onnx=Path(onnx_path), images=images, spec=spec_path, root=root)


@pytest.fixture()
def use_trt(monkeypatch):
    """The fake TensorRT with a fake CUDA runtime: plans it builds can be run."""

    def install(version: str = "10.3.0", devices: int = 1):
        cuda = install_fake_cuda(monkeypatch, fake_cudart(devices))
        trt = fake_tensorrt(version, input_shape=None, cuda=cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install


def build(exported, plan: Path, *args: str, model: Path | None = None) -> None:
    assert run(["build", "-m", str(model or exported.onnx), "-o", str(plan), "--backend", "tensorrt",
                *args]) == 0



def eval_images(exported) -> tuple[list[Path], np.ndarray]:
    from effdet_rt.classification.dataset import image_files
    from effdet_rt.classification.engines import classifier_metadata
    from effdet_rt.classification.images import ImageFormat, eval_image
    from effdet_rt.engines.runtime.onnxruntime import read_onnx

    fmt = ImageFormat.from_metadata(classifier_metadata(read_onnx(exported.onnx))["image_format"])
    paths = image_files(exported.images)
    return paths, np.stack([eval_image(p, fmt) for p in paths])


def test_fp16_build_sets_the_flag_and_profile_and_the_json_carries_the_classifier(use_trt, exported, tmp_path):
    from effdet_rt.onnx.graph import read_metadata

    trt = use_trt("10.3.0")
    plan = tmp_path / "classifier.plan"
    build(exported, plan, "--precision", "fp16", "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4")
    assert [c for c in trt.calls if c[0] == "flag"] == [("flag", "FP16")]
    assert [c for c in trt.calls if c[0] == "profile"] == [
        ("profile", ("images", (1, SIZE, SIZE, 3), (2, SIZE, SIZE, 3), (4, SIZE, SIZE, 3)))]
    assert [c[1] for c in trt.calls if c[0] == "parse"] == [str(exported.onnx)]
    info = json.loads((tmp_path / "classifier.plan.json").read_text())
    meta = read_metadata(onnx.load(str(exported.onnx)))
    assert info["precision"] == "fp16" and info["task"] == "classification" and info["tensorrt"] == "10.3.0"
    assert info["profile"] == {"min": [1, SIZE, SIZE, 3], "opt": [2, SIZE, SIZE, 3], "max": [4, SIZE, SIZE, 3],
                               "dynamic": True}
    assert info["metadata"] == {**meta, "precision": "fp16"}
    assert info["metadata"]["classes"] == CLASSES and info["metadata"]["image_format"] == {
        "input_size": [SIZE, SIZE], "channels": 3, "input_image_depth": 8, "resize_interpolation_method": "BILINEAR",
        "center_crop": True}


def test_int8_calibrates_on_the_calib_images_batches(use_trt, exported, tmp_path):
    from effdet_rt.classification.deploy import calibration_batches
    from effdet_rt.onnx.graph import read_metadata

    trt = use_trt("10.3.0")
    cache = tmp_path / "calib.cache"
    build(exported, tmp_path / "int8.plan", "--precision", "int8", "--calib-images", str(exported.images),
          "--calib-batch-size", "3", "--calib-batches", "2", "--calib-cache", str(cache), "--max-batch", "4")
    assert [c for c in trt.calls if c[0] == "calib_batch"] == [("calib_batch", 3)] * 2
    fixed = (3, SIZE, SIZE, 3)
    assert ("calibration_profile", ("images", fixed, fixed, fixed)) in trt.calls
    assert [c[1] for c in trt.calls if c[0] == "flag"] == ["INT8", "FP16"]
    assert cache.read_bytes() == b"CACHE"

    expected = list(calibration_batches(exported.images, read_metadata(onnx.load(str(exported.onnx))), 3, 2,
                                        log=lambda m: None))
    assert len(trt.calibration_batches) == 2  # what TensorRT read from the calibrator's device pointers
    for seen, batch in zip(trt.calibration_batches, expected, strict=True):
        assert seen.shape == (3, SIZE, SIZE, 3)
        np.testing.assert_array_equal(seen, batch)
    assert 0 < float(trt.calibration_batches[0].mean()) < 255  # real pixels, not zeros
    assert json.loads((tmp_path / "int8.plan.json").read_text())["metadata"]["precision"] == "int8"


def test_int8_without_images_or_cache_names_calib_images(use_trt, exported, tmp_path, capsys):
    use_trt("10.3.0")
    one_error_line(["build", "-m", str(exported.onnx), "-o", str(tmp_path / "x.plan"), "--backend", "tensorrt",
                    "--precision", "int8", "--calib-cache", str(tmp_path / "none.cache")], capsys,
                   "INT8 calibration needs data", "--calib-images DIR")
    assert not (tmp_path / "x.plan").exists()


def test_plan_probabilities_are_what_the_engine_computed_in_profile_sized_runs(use_trt, exported, tmp_path):
    from effdet_rt.classification.engines import OnnxClassifier, TensorRTClassifier, load_classifier

    trt = use_trt("10.3.0")
    source = tmp_path / "copy.onnx"
    shutil.copy(exported.onnx, source)
    plan = tmp_path / "classifier.plan"
    build(exported, plan, "--min-batch", "2", "--opt-batch", "2", "--max-batch", "4", model=source)
    source.unlink()  # the plan and its JSON are all the runtime needs
    _, images = eval_images(exported)
    images = images[:9]
    trt.calls.clear()
    classifier = load_classifier(plan)
    assert isinstance(classifier, TensorRTClassifier)
    assert (classifier.classes, classifier.max_batch, classifier.precision) == (CLASSES, 4, "fp32")
    assert classifier.describe() == "tensorrt fp32 (TensorRT 10.3.0)"
    probabilities = classifier.predict(images)
    assert [c[1] for c in trt.calls if c[0] == "execute"] == [4, 4, 2]  # the last image padded to the minimum batch
    computed = np.concatenate([run["probabilities"][:count] for run, count in zip(trt.executed, (4, 4, 1), strict=True)])
    np.testing.assert_array_equal(probabilities, computed)
    assert probabilities.shape == (9, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)
    assert float(probabilities[:, 0].std()) > 1e-2  # the images get different answers
    reference = OnnxClassifier(exported.onnx).predict(images)
    np.testing.assert_allclose(probabilities, reference, atol=1e-6, rtol=0)
    assert classifier.predict(images[:0]).shape == (0, 2)


def test_evaluate_and_inference_take_the_plan(use_trt, exported, tmp_path, capsys):
    from effdet_rt.classification.engines import OnnxClassifier
    from effdet_rt.classification.evaluate import predict_files

    use_trt("10.3.0")
    plan = tmp_path / "classifier.plan"
    build(exported, plan, "--precision", "fp16", "--max-batch", "4")
    paths, _ = eval_images(exported)
    expected = predict_files(OnnxClassifier(exported.onnx), paths, 3, 1)
    labels = np.array([CLASSES.index(p.parent.name) for p in expected.paths])
    predicted = expected.probabilities.argmax(1)

    results = tmp_path / "evaluate"
    assert run(["classification", "evaluate", "-e", str(exported.spec), "-m", str(plan), "-r", str(results)]) == 0
    metrics = json.loads((results / "eval_results.json").read_text())
    assert (metrics["backend"], metrics["precision"], metrics["model"]) == ("tensorrt", "fp16", str(plan))
    assert metrics["top_1_accuracy"] == pytest.approx(float(np.mean(predicted == labels)))
    confusion = np.zeros((2, 2), int)
    np.add.at(confusion, (labels, predicted), 1)
    assert metrics["confusion_matrix"] == confusion.tolist()

    out = tmp_path / "inference"
    assert run(["classification", "inference", "-e", str(exported.spec), "-m", str(plan), "-i", str(exported.images),
                "-r", str(out)]) == 0
    rows = list(csv.reader((out / "result.csv").open()))
    assert [r[0] for r in rows] == [str(p) for p in expected.paths]
    for (_, name, confidence), row in zip(rows, expected.probabilities, strict=True):
        assert name == CLASSES[int(row.argmax())]
        assert float(confidence) == pytest.approx(float(row.max()), abs=1e-6)


def test_trt11_fp16_and_qdq_int8_plans(use_trt, exported, tmp_path, capsys):
    from effdet_rt.classification.engines import OnnxClassifier, load_classifier

    trt = use_trt("11.1.0")
    fp16 = tmp_path / "fp16.plan"
    build(exported, fp16, "--precision", "fp16", "--max-batch", "4")
    (parsed,) = [c[1] for c in trt.calls if c[0] == "parse"]
    assert parsed.endswith("model_fp16.onnx") and not [c for c in trt.calls if c[0] == "flag"]
    _, images = eval_images(exported)
    reference = OnnxClassifier(exported.onnx).predict(images)
    half = load_classifier(fp16).predict(images)  # the FP16 graph (FP32 input / output) the plan was parsed from
    assert half.dtype == np.float32 and 0 < np.abs(half - reference).max() < 1e-3

    one_error_line(["build", "-m", str(exported.onnx), "-o", str(tmp_path / "x.plan"), "--backend", "tensorrt",
                    "--precision", "int8", "--calib-images", str(exported.images)], capsys,
                   "INT8 on TensorRT 11 needs a Q/DQ ONNX", "--int8-profile tensorrt --calib-images DIR")
    qdq = tmp_path / "qdq.onnx"
    assert run(["build", "-m", str(exported.onnx), "-o", str(qdq), "--backend", "onnxruntime", "--precision", "int8",
                "--int8-profile", "tensorrt", "--calib-images", str(exported.images), "--calib-batch-size", "5",
                "--calib-batches", "2"]) == 0
    trt.calls.clear()
    int8 = tmp_path / "int8.plan"
    build(exported, int8, "--precision", "int8", "--max-batch", "4", model=qdq)
    assert [c[1] for c in trt.calls if c[0] == "parse"] == [str(qdq)]
    assert not [c for c in trt.calls if c[0] in ("flag", "calib_batch")]
    info = json.loads((tmp_path / "int8.plan.json").read_text())
    assert info["metadata"]["classes"] == CLASSES and info["metadata"]["int8_profile"] == "tensorrt"
    quantized = load_classifier(int8)
    assert quantized.precision == "int8"
    np.testing.assert_allclose(quantized.predict(images), OnnxClassifier(qdq).predict(images), atol=1e-6, rtol=0)


def test_deepstream_config_reads_the_plan_json_without_the_onnx(use_trt, exported, tmp_path):
    use_trt("10.3.0")
    source = tmp_path / "copy.onnx"
    shutil.copy(exported.onnx, source)
    plan = tmp_path / "classifier.plan"
    build(exported, plan, "--precision", "fp16", "--max-batch", "4", model=source)
    source.unlink()
    assert run(["deepstream-config", "-m", str(plan), "-o", str(tmp_path / "ds")]) == 0
    config = (tmp_path / "ds" / "config_infer_secondary_classifier.txt").read_text()
    assert f"model-engine-file={plan.resolve()}" in config and "batch-size=4" in config and "network-mode=2" in config
    assert (tmp_path / "ds" / "labels.txt").read_text() == "ants;bees\n"


def test_bad_plans_and_missing_tensorrt_are_one_error_line(use_trt, exported, tmp_path, capsys, monkeypatch):
    from effdet_rt.engines.runtime.base import load
    from effdet_rt.errors import ModelFileError

    use_trt("10.3.0")
    plan = tmp_path / "classifier.plan"
    build(exported, plan, "--max-batch", "2")
    evaluate = ["classification", "evaluate", "-e", str(exported.spec), "-m", str(plan), "-r", str(tmp_path / "r")]
    with pytest.raises(ModelFileError, match="a classifier's plan: run it with `effdet-rt classification"):
        load(plan)  # the detector's engine on a classifier plan

    use_trt("10.4.0")  # plans are tied to the TensorRT version that built them
    one_error_line(evaluate, capsys, "cannot load this plan", "rebuild it")
    use_trt("10.3.0", devices=0)
    one_error_line(evaluate, capsys, "cannot run a TensorRT plan here", "no CUDA GPU is visible")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    one_error_line(evaluate, capsys, "cannot run a TensorRT plan here: TensorRT is not installed", "pypi.nvidia.com")
    use_trt("10.3.0")
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    one_error_line(evaluate, capsys, "cuda-python is not installed")

    detector = tmp_path / "detector.plan"
    detector.write_bytes(b"PLAN")
    (tmp_path / "detector.plan.json").write_text(json.dumps({"precision": "fp32", "onnx": "/gone/model.onnx"}))
    one_error_line([*evaluate[:4], "-m", str(detector), *evaluate[6:]], capsys, "not a classifier plan",
                   "detector.plan.json")
    one_error_line([*evaluate[:4], "-m", str(tmp_path / "missing.plan"), *evaluate[6:]], capsys,
                   "model file not found")
    assert not (tmp_path / "r" / "eval_results.json").exists()
