"""LiteRT (.tflite) classifiers: `effdet-rt classification export` to FP32, FP16 and full-integer INT8 files, which
`classification evaluate|inference` and `engine-info` take; the label map packed into the file (TensorFlow Lite
metadata + labels.txt) read back by our engine; the uint8 input taking raw pixels; bad input as one error line.

One random-weight EfficientNet-Lite0 (2 classes, 48x48, its Dense head scaled up so the answers vary) is saved as a
checkpoint and exported once per module by the command lines docs/litert.md shows, run here as typed. The
ImageNet Lite0's INT8 top-1 on the hymenoptera photos is measured by benchmarks/litert_classifier.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from effdet_rt.cli.main import run
from tests.support.cli import one_error_line
from tests.support.doc_commands import documented_commands

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'effdet-rt[litert]')")

SIZE = 48
CLASSES = ["ants", "bees"]
PER_CLASS = 40  # the documented INT8 command calibrates on its default 10 batches of 8
HEAD_GAIN = 5000.0  # a fresh network's pooled features barely differ between images: amplified, the answers do
KEY = "k"
PAGE = "docs/litert.md"


def doc_commands() -> list:
    return [c for c in documented_commands() if c.page == PAGE and c.argv[0] in ("classification", "engine-info")]


def save_classifier(folder: Path, photos: Path, size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    """A random-weight Lite0 whose head is scaled up and centred on the photos (its bias splits them about half
    and half between the classes), so the two classes are both answered."""
    import tf_keras as keras

    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.classification.images import ImageFormat
    from effdet_rt.classification.model import build_classifier
    from effdet_rt.classification.spec import classification_spec_to_yaml, load_classification_spec

    spec = load_classification_spec(None, ["model.arch=efficientnet-lite0", f"model.input_image_size=3,{size[0]},{size[1]}"])
    keras.utils.set_random_seed(7)
    model = build_classifier(spec, len(CLASSES))
    (dense,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * HEAD_GAIN, bias])
    logits = model(eval_images(photos, size), training=False).numpy()
    split = float(np.median(logits[:, 0] - logits[:, 1]))
    dense.set_weights([kernel * HEAD_GAIN, bias - np.array([split / 2, -split / 2], np.float32)])
    metadata = {"task": "classification", "model_name": spec.model.arch, "classes": CLASSES,
                "image_format": ImageFormat.from_spec(spec).as_metadata()}
    return save_checkpoint(folder / "model.edrt", model_weights(model), key=KEY,
                           spec_yaml=classification_spec_to_yaml(spec), metadata=metadata)


def write_images(folder: Path, rng: np.random.Generator) -> Path:
    for index, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(PER_CLASS):  # not square, so eval_image's resize and centre crop both work
            pixels = rng.integers(0, 256, (60, 76, 3), dtype=np.uint8) // (index + 1)
            Image.fromarray(pixels).save(folder / name / f"{name}_{i}.png")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> SimpleNamespace:
    """The folder the documented commands run in, after running them: model.edrt, cls.yaml, train_images/,
    photos/ and the .tflite files they wrote."""
    root = tmp_path_factory.mktemp("litert_classifier")
    write_images(root / "train_images", np.random.default_rng(3))
    photos = write_images(root / "photos", np.random.default_rng(4))
    save_classifier(root, photos)
    (root / "cls.yaml").write_text(f"results_dir: results\nkey: {KEY}\nmodel:\n  arch: efficientnet-lite0\n"
                                   f"  input_image_size: 3,{SIZE},{SIZE}\nevaluate:\n  dataset_path: photos\n"
                                   "  top_k: 1\n  batch_size: 16\n  n_workers: 1\n")
    here = Path.cwd()
    os.chdir(root)
    outputs = {}
    try:
        for command in doc_commands():
            outputs[command.text] = command_output(command)
    finally:
        os.chdir(here)
    return SimpleNamespace(root=root, photos=photos, outputs=outputs)


def command_output(command) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(list(command.argv))
    assert code == 0, (command.text, out.getvalue())
    return out.getvalue()


def test_the_documented_commands_ran(workspace):
    texts = list(workspace.outputs)
    for name in ("cls.tflite", "cls_fp16.tflite", "cls_int8.tflite"):
        assert any(f"export.output_path={name}" in text for text in texts) and (workspace.root / name).is_file()
    assert any("--precision int8 --calib-images" in text for text in texts)
    assert any(text.startswith("effdet-rt classification evaluate") for text in texts)
    assert any(text.startswith("effdet-rt classification inference") for text in texts)



def test_evaluate_and_inference_give_the_int8_files_answers(workspace, photos):
    from effdet_rt.classification.engines import load_classifier

    predicted = load_classifier(workspace.root / "cls_int8.tflite").predict(photos).argmax(1)
    truth = np.repeat([0, 1], PER_CLASS)  # photos/ants/*, then photos/bees/*
    evaluated = json.loads((workspace.root / "results" / "evaluate" / "eval_results.json").read_text())
    assert (evaluated["backend"], evaluated["precision"], evaluated["num_images"]) == ("litert", "int8", 2 * PER_CLASS)
    assert evaluated["top_1_accuracy"] == pytest.approx(float(np.mean(predicted == truth)))
    assert evaluated["confusion_matrix"][0][0] + evaluated["confusion_matrix"][1][0] == int(np.sum(predicted == 0))
    rows = sorted(line.split(",")[:2] for line in
                  (workspace.root / "results" / "inference" / "result.csv").read_text().splitlines())
    assert [name for _, name in rows] == [CLASSES[i] for i in predicted]
    assert 0 < int(np.sum(predicted == 0)) < 2 * PER_CLASS


def eval_images(folder: Path, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    from effdet_rt.classification.dataset import image_files
    from effdet_rt.classification.images import ImageFormat, eval_image

    fmt = ImageFormat(size)
    return np.stack([eval_image(path, fmt) for path in image_files(folder)])


@pytest.fixture(scope="module")
def photos(workspace) -> np.ndarray:
    return eval_images(workspace.photos)


@pytest.fixture(scope="module")
def checkpoint(workspace):
    from effdet_rt.classification.engines import KerasClassifier

    return KerasClassifier(workspace.root / "model.edrt", KEY)


def softmax_input(path: Path, batch: np.ndarray) -> np.ndarray:
    """The logits of a .tflite: the SOFTMAX op's input, kept by preserve_all_tensors, one image at a time."""
    from effdet_rt.engines.build.litert import float_tensor
    from effdet_rt.engines.runtime.litert import LiteRTRunner

    runner = LiteRTRunner(path, preserve_all_tensors=True)
    (softmax,) = [op for op in runner.interp._get_ops_details() if op["op_name"] == "SOFTMAX"]
    logits = []
    for image in batch:
        runner.run(image[None])
        logits.append(float_tensor(runner.interp, int(softmax["inputs"][0])))
    return np.concatenate(logits)


def test_fp32_logits_and_probabilities_equal_tensorflow(workspace, photos, checkpoint):
    from effdet_rt.engines.runtime.litert import LiteRTRunner

    expected = checkpoint.logits_model(photos, training=False).numpy()
    got = softmax_input(workspace.root / "cls.tflite", photos)
    worst = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert worst < 1e-5, worst
    probabilities = LiteRTRunner(workspace.root / "cls.tflite").run(photos)["probabilities"]
    assert np.abs(probabilities - checkpoint.predict(photos)).max() < 1e-5
    assert len(set(expected.argmax(1))) == 2  # both classes answered: the comparisons below mean something


def test_int8_is_full_integer_and_keeps_the_answers(workspace, photos, checkpoint):
    from effdet_rt.classification.engines import load_classifier
    from effdet_rt.engines.build.litert import float_weight_tensors

    path = workspace.root / "cls_int8.tflite"
    assert float_weight_tensors(path.read_bytes()) == []
    runner = load_classifier(path).runner
    ops = {op["op_name"] for op in runner.interp._get_ops_details()}
    tensors = {d["index"]: d for d in runner.interp.get_tensor_details()}
    softmax = next(op for op in runner.interp._get_ops_details() if op["op_name"] == "SOFTMAX")
    assert np.dtype(tensors[int(softmax["outputs"][0])]["dtype"]) == np.int8 and "QUANTIZE" in ops
    assert runner.metadata["precision"] == "int8" and runner.precision == "int8"
    fp32 = checkpoint.predict(photos).argmax(1)
    int8 = runner.run(photos)["probabilities"].argmax(1)
    assert (fp32 == int8).mean() >= 0.9, (fp32 == int8).mean()


def test_fp16_halves_the_file(workspace, photos, checkpoint):
    from effdet_rt.engines.build.litert import float_weight_tensors
    from effdet_rt.engines.runtime.litert import LiteRTRunner

    fp32, fp16 = (workspace.root / name for name in ("cls.tflite", "cls_fp16.tflite"))
    assert 0.45 < fp16.stat().st_size / fp32.stat().st_size < 0.55
    assert len(float_weight_tensors(fp16.read_bytes())) > 50
    got = LiteRTRunner(fp16).run(photos)["probabilities"]
    assert (got.argmax(1) == checkpoint.predict(photos).argmax(1)).mean() >= 0.95


def test_the_label_map_is_inside_and_the_engine_reads_it(workspace):
    import zipfile

    from effdet_rt.classification.engines import load_classifier
    from effdet_rt.engines.runtime.litert import read_metadata

    path = workspace.root / "cls_int8.tflite"
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["labels.txt"] and archive.read("labels.txt") == b"ants\nbees\n"
    meta = read_metadata(path)
    assert "classes" not in meta and meta["labels_file"] == "labels.txt"  # one copy: the packed file
    # the TensorFlow Lite model metadata MediaPipe reads (benchmarks/litert_classifier.py runs MediaPipe on it):
    # a ModelMetadata flatbuffer (identifier M001) naming the label file, in the model's metadata table
    from effdet_rt.engines.runtime.litert import read_flatbuffer

    model = read_flatbuffer(path)
    entries = {entry.name: entry.buffer for entry in model.metadata}  # the unpacked (object API) model
    described = bytes(model.buffers[entries[b"TFLITE_METADATA"]].data)
    assert described[4:8] == b"M001" and b"labels.txt" in described and b"1.0.0" in described
    assert load_classifier(path).classes == CLASSES
    lines = workspace.outputs["effdet-rt engine-info cls_int8.tflite"].splitlines()
    assert {"task: classification", "precision: int8", "io_type: float32",
            "output probabilities: shape [-1, 2] float32"} <= set(lines), lines


def test_bad_input_is_one_error_line(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(workspace.root)
    export = ["classification", "export", "-e", "cls.yaml", "export.model_path=model.edrt"]
    out = tmp_path / "x.tflite"
    one_error_line([*export, f"export.output_path={out}", "--precision", "int8"], capsys,
                   "--precision int8 needs calibration images", "--calib-images DIR")
    one_error_line([*export, f"export.output_path={out}", "--io-type", "uint8"], capsys, "--io-type uint8",
                   "--precision int8")
    one_error_line([*export, f"export.output_path={out}", "--opset", "13"], capsys, "--opset", "drop them")
    one_error_line([*export, f"export.output_path={out}", "--precision", "int8", "--calib-images", "nowhere"],
                   capsys, "--calib-images nowhere", "not a folder")
    one_error_line([*export, f"export.output_path={tmp_path / 'x.onnx'}", "--precision", "int8"], capsys,
                   "export is not valid", "FP32 ONNX")
    one_error_line([*export, "-o", str(tmp_path / "x.onnx"), "--calib-images", "train_images"], capsys,
                   "an ONNX export is FP32", "--calib-images")
    assert list(tmp_path.iterdir()) == []
    damaged = tmp_path / "damaged.tflite"  # the label file's zip cut short: the class names are gone
    data = (workspace.root / "cls.tflite").read_bytes()
    damaged.write_bytes(data[:-30])
    one_error_line(["classification", "inference", "-e", "cls.yaml", "-m", str(damaged), "-i", "photos"], capsys,
                   str(damaged), "labels.txt", "export it again")


def test_a_uint8_input_takes_the_pixels_themselves(workspace, photos, tmp_path):
    """--io-type uint8: scale 1 and zero point 0, not the calibration range, so the integer input is the pixel
    (what MediaPipe hands a uint8 model and what integer-only accelerators take); answers as the float-input INT8."""
    from ai_edge_litert.interpreter import Interpreter

    from effdet_rt.classification.engines import load_classifier
    from effdet_rt.engines.runtime.litert import quantize

    out = tmp_path / "cls_uint8.tflite"
    assert run(["classification", "export", "-e", str(workspace.root / "cls.yaml"),
                f"export.model_path={workspace.root / 'model.edrt'}", "-o", str(out), "--precision", "int8",
                "--io-type", "uint8", "--calib-images", str(workspace.root / "train_images")]) == 0
    classifier = load_classifier(out)
    detail = classifier.runner.input
    assert np.dtype(detail["dtype"]) == np.uint8 and detail["quantization"] == (1.0, 0)
    assert np.array_equal(quantize(photos, detail), photos.astype(np.uint8))  # eval_image's pixels are whole
    raw = Interpreter(model_path=str(out))  # a caller that knows nothing of effdet-rt: the decoded bytes go in
    raw.resize_tensor_input(0, list(photos.shape))
    raw.allocate_tensors()
    raw.set_tensor(raw.get_input_details()[0]["index"], photos.astype(np.uint8))
    raw.invoke()
    got = raw.get_tensor(raw.get_output_details()[0]["index"])
    assert np.array_equal(got, classifier.predict(photos))
    float_input = load_classifier(workspace.root / "cls_int8.tflite").predict(photos)
    assert (got.argmax(1) == float_input.argmax(1)).mean() >= 0.9


def test_the_converter_takes_the_smallest_odd_size_the_spec_allows(workspace, tmp_path):
    """model.input_image_size allows any H, W >= 16: at 17x23 (odd sides: every stride-2 stage rounds up, the maps
    end at 1x1) the FP32 file equals TensorFlow and the full-integer INT8 file converts (docs/litert.md)."""
    from effdet_rt.classification.engines import KerasClassifier, load_classifier
    from effdet_rt.engines.build.litert import float_weight_tensors

    size = (17, 23)
    model = save_classifier(tmp_path, workspace.photos, size)
    export = ["classification", "export", "-e", str(workspace.root / "cls.yaml"), f"export.model_path={model}"]
    assert run([*export, "-o", str(tmp_path / "odd.tflite")]) == 0
    assert run([*export, "-o", str(tmp_path / "odd_int8.tflite"), "--precision", "int8", "--calib-images",
                str(workspace.root / "train_images"), "--calib-batches", "2"]) == 0
    photos = eval_images(workspace.photos, size)[:8]
    fp32 = load_classifier(tmp_path / "odd.tflite")
    assert fp32.runner.input_size == size
    np.testing.assert_allclose(fp32.predict(photos), KerasClassifier(model, KEY).predict(photos), atol=1e-5)
    assert float_weight_tensors((tmp_path / "odd_int8.tflite").read_bytes()) == []
    assert load_classifier(tmp_path / "odd_int8.tflite").predict(photos).shape == (8, 2)


def test_calibration_images_are_spread_over_the_class_folders():
    """A class-sorted folder (hymenoptera train: 124 ants, then 121 bees): the default 80 calibration images take
    both classes about evenly, not the first 80 ants; the others follow, to replace unreadable files."""
    from effdet_rt.classification.deploy import spread_evenly

    files = [Path(f"ants/{i:03d}.jpg") for i in range(124)] + [Path(f"bees/{i:03d}.jpg") for i in range(121)]
    spread = spread_evenly(files, 80)
    assert sorted(spread) == files and spread[0] == files[0]
    assert sum(p.parent.name == "bees" for p in spread[:80]) == 39  # every 3.0625th file: 41 ants, 39 bees
    assert spread_evenly(files[:50], 80) == files[:50]
