"""LiteRT (.tflite): the export from a checkpoint with TFLite_Detection_PostProcess inside (or raw heads), run by
ai-edge-litert; detections equal the checkpoint's and host NMS's, a full-integer INT8 file keeps no float weights,
and bad input is one error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from effdet_rt.cli.main import run
from effdet_rt.export.verify import match_detections
from tests.support.cli import one_error_line
from tests.support.infer import KEY, bccd_images, write_val_set

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'effdet-rt[litert]')")

EXPORT = ["--min-score", "0.05", "--max-detections", "50"]
BCCD_NAMES = ["RBC", "WBC", "Platelets"]  # label_map.yaml order: category ids 1, 2, 3


def test_postprocess_decoding_is_our_box_coding():
    """TFLite_Detection_PostProcess decodes y = ty / y_scale * ha + ya, h = exp(th / h_scale) * ha (scales 1) from
    centre-size anchors: with the normalised anchors the exporter gives it, that is decode_boxes / input size."""
    from effdet_rt.engines.build.litert import normalised_center_anchors, postprocess_implements
    from effdet_rt.model.anchors import AnchorConfig, generate_anchors
    from effdet_rt.model.boxes import decode_boxes
    from effdet_rt.model.postprocess import NmsConfig

    size = (128, 96)
    anchors = generate_anchors(size, AnchorConfig(3, 7, 3, ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)), 4.0))
    codes = np.random.default_rng(0).normal(0, 0.5, (len(anchors), 4))
    centre = normalised_center_anchors(anchors, size).astype(np.float64)
    yc, xc = codes[:, 0] * centre[:, 2] + centre[:, 0], codes[:, 1] * centre[:, 3] + centre[:, 1]
    h, w = np.exp(codes[:, 2]) * centre[:, 2], np.exp(codes[:, 3]) * centre[:, 3]
    tflite = np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], 1) * [128, 96, 128, 96]
    np.testing.assert_allclose(tflite, decode_boxes(codes, anchors), rtol=1e-5, atol=1e-3)
    text = postprocess_implements(3, NmsConfig(score_threshold=0.05, iou_threshold=0.5, max_detections=50))
    assert text.startswith('name: "TFLite_Detection_PostProcess" ')
    for attr in ('key: "num_classes" value { i: 3 }', 'key: "max_detections" value { i: 50 }',
                 'key: "use_regular_nms" value { b: true }', 'key: "nms_iou_threshold" value { f: 0.5 }',
                 'key: "h_scale" value { f: 1.0 }'):
        assert attr in text


def test_the_table_row_opens_tflite_files():
    from effdet_rt.backends import backend_for_file, exporting_backend
    from effdet_rt.engines.registry import backend_status

    row = backend_for_file("model.TFLITE")
    assert row.name == "litert" and exporting_backend("x.tflite") is row and exporting_backend("x.onnx") is None
    assert backend_status(row) == (True, "ai-edge-litert is installed")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint as FP32 .tflite, NMS inside (with a label map) and raw heads (without), each exported
    through the CLI with --verify."""
    folder = tmp_path_factory.mktemp("litert")
    paths = {"nms": folder / "tiny.tflite", "raw": folder / "tiny_raw.tflite"}
    label_map = folder / "label_map.yaml"
    label_map.write_text("".join(f"{i}: {name}\n" for i, name in enumerate(BCCD_NAMES, start=1)))
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(paths["nms"]), *EXPORT, "--verify",
                f"inference.label_map={label_map}"]) == 0
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(paths["raw"]), *EXPORT, "--nms", "none",
                "--verify"]) == 0
    return paths


@pytest.fixture(scope="module")
def crops(bccd_root):
    from effdet_rt.data.preprocess import read_image

    return [read_image(p)[:, :480] for p in bccd_images(bccd_root, 6)]


@pytest.mark.slow
def test_fp32_detections_equal_the_checkpoint_and_host_nms(exports, crops, tiny_checkpoint):
    from effdet_rt.engines.runtime.base import load
    from effdet_rt.engines.runtime.checkpoint import KerasEngine
    from effdet_rt.engines.runtime.checkpoint import load_engine as load_checkpoint
    from effdet_rt.model.postprocess import NmsConfig

    checkpoint = load_checkpoint(tiny_checkpoint, key=KEY)
    reference = KerasEngine(checkpoint.model, checkpoint.setup, NmsConfig(0.05, 0.5, 50))
    expected = reference.infer(crops)
    nms, raw = load(exports["nms"]), load(exports["raw"])
    assert (nms.backend, nms.mode, nms.static_batch, raw.mode, raw.static_batch) == ("litert", "nms", 1, "raw", None)
    for engine in (nms, raw):
        got = engine.infer(crops)
        report = match_detections(expected, got, iou_threshold=0.99, score_tolerance=1e-4)
        assert report.reference > 20 and report.rate >= 0.99, (engine.mode, report)


@pytest.mark.slow
def test_raw_heads_take_any_batch_through_input_resize(exports):
    from effdet_rt.engines.runtime.litert import LiteRTRunner

    runner = LiteRTRunner(exports["raw"])
    batch = np.random.default_rng(1).uniform(0, 255, (3, 128, 128, 3)).astype(np.float32)
    together = runner.run(batch)
    alone = [runner.run(image[None]) for image in batch]
    assert together["class_logits"].shape == (3, 3069, 3) and together["box_codes"].shape == (3, 3069, 4)
    for name in ("class_logits", "box_codes"):
        np.testing.assert_allclose(together[name], np.concatenate([a[name] for a in alone]), atol=1e-5)


@pytest.mark.slow
def test_the_file_stands_alone_and_engine_info_reads_it(exports, capsys):
    from effdet_rt.engines.runtime.litert import read_metadata

    meta = read_metadata(exports["nms"])
    assert meta["nms"] == "tflite" and meta["num_classes"] == 3 and meta["max_detections"] == 50
    assert meta["anchors"]["num_scales"] == 3 and meta["source_checkpoint"] == "tiny.edrt"
    assert run(["engine-info", str(exports["nms"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ops"]["TFLite_Detection_PostProcess"] == 1 and info["precision"] == "fp32"
    # the subgraph's outputs in the op's order, as MediaPipe's ObjectDetector reads them
    outputs = [t["name"] for t in info["tensors"] if t["io"] == "output"]
    assert outputs == ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]
    assert [t["shape"] for t in info["tensors"] if t["io"] == "input"] == [[1, 128, 128, 3]]


def read_table(buf: bytes, pos: int):
    import flatbuffers

    return flatbuffers.table.Table(bytearray(buf), pos)


def field(tab, slot: int, kind: str):
    """One field of a flatbuffer table, read generically (no generated schema code): 'str', 'table', 'tables'
    (a vector of tables), 'uints', 'byte', 'int'."""
    import flatbuffers
    from flatbuffers import number_types as n

    offset = tab.Offset(4 + 2 * slot)
    if not offset:
        return 0 if kind in ("byte", "int") else None  # a scalar equal to its default is not stored
    at = offset + tab.Pos
    if kind == "str":
        return tab.String(at).decode()
    if kind == "table":
        return flatbuffers.table.Table(tab.Bytes, tab.Indirect(at))
    if kind == "byte":
        return tab.Get(n.Int8Flags, at)
    if kind == "int":
        return tab.Get(n.Int32Flags, at)
    start, length = tab.Vector(offset), tab.VectorLen(offset)
    if kind == "uints":
        return [tab.Get(n.Uint32Flags, start + 4 * i) for i in range(length)]
    return [flatbuffers.table.Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(length)]


def described_outputs(path: Path) -> tuple[str, list[dict]]:
    """(min parser version, [{name, content kind, box index/type/coordinates, value range, files}]) of the
    TensorFlow Lite model metadata (TFLITE_METADATA, schema metadata_schema.fbs) in a .tflite."""
    import flatbuffers

    from effdet_rt.engines.runtime.litert import read_flatbuffer

    model = read_flatbuffer(path)
    (entry,) = [e for e in model.metadata if e.name == b"TFLITE_METADATA"]
    data = bytes(model.buffers[entry.buffer].data)
    assert data[4:8] == b"M001"
    root = read_table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))
    (subgraph,) = field(root, 3, "tables")
    (image,) = field(subgraph, 2, "tables")
    image_content = field(image, 3, "table")
    assert field(image, 0, "str") == "image" and field(image_content, 0, "byte") == 2  # ImageProperties
    outputs = []
    for tensor in field(subgraph, 3, "tables"):
        content = field(tensor, 3, "table")
        row = {"name": field(tensor, 0, "str"), "kind": field(content, 0, "byte") if content else None,
               "files": [(field(f, 0, "str"), field(f, 2, "byte")) for f in field(tensor, 6, "tables") or []]}
        if content and field(content, 2, "table"):
            value_range = field(content, 2, "table")
            row["range"] = (field(value_range, 0, "int"), field(value_range, 1, "int"))
        if row["kind"] == 3:  # BoundingBoxProperties
            box = field(content, 1, "table")
            row["box"] = (field(box, 0, "uints"), field(box, 1, "byte"), field(box, 2, "byte"))
        outputs.append(row)
    return field(root, 7, "str"), outputs


@pytest.mark.slow
def test_the_label_map_and_the_object_detector_metadata_are_inside(exports):
    """The packed labels.txt (the spec's label map, in class order) and the TensorFlow Lite model metadata MediaPipe's
    ObjectDetector reads: location (boxes y1, x1, y2, x2 as left, top, right, bottom = 1, 0, 3, 2; BOUNDARIES,
    RATIO), category (its values labelled by labels.txt: TENSOR_VALUE_LABELS), score, number of detections."""
    from effdet_rt.engines.runtime.litert import LiteRTRunner, read_metadata

    with zipfile.ZipFile(exports["nms"]) as archive:
        assert archive.namelist() == ["labels.txt"] and archive.read("labels.txt") == b"RBC\nWBC\nPlatelets\n"
    with zipfile.ZipFile(exports["raw"]) as archive:  # no label map in the spec: the ids, as `infer` shows them
        assert archive.read("labels.txt") == b"1\n2\n3\n"
    meta = read_metadata(exports["nms"])
    assert "classes" not in meta and meta["labels_file"] == "labels.txt"  # one copy: the packed file
    assert LiteRTRunner(exports["nms"]).metadata["classes"] == BCCD_NAMES
    version, outputs = described_outputs(exports["nms"])
    assert version == "1.0.0"
    assert outputs == [
        {"name": "location", "kind": 3, "range": (2, 2), "box": ([1, 0, 3, 2], 1, 0), "files": []},
        {"name": "category", "kind": 1, "range": (2, 2), "files": [("labels.txt", 3)]},
        {"name": "score", "kind": 1, "range": (2, 2), "files": []},
        {"name": "number of detections", "kind": None, "files": []},
    ]
    _, raw = described_outputs(exports["raw"])
    runner = LiteRTRunner(exports["raw"])
    by_index = {index: name for name, index in runner.outputs.items()}
    subgraph_order = [by_index[int(d["index"])] for d in runner.interp.get_output_details()]
    assert [row["name"] for row in raw] == subgraph_order == ["box_codes", "class_logits"]
    assert raw[1]["files"] == [("labels.txt", 2)]  # TENSOR_AXIS_LABELS: the last axis


@pytest.mark.slow
def test_infer_names_the_classes_from_the_file(exports, bccd_root, tmp_path):
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for path in bccd_images(bccd_root, 2):
        shutil.copy(path, images)
    out = tmp_path / "out"
    assert run(["infer", "-m", str(exports["nms"]), "-i", str(images), "-o", str(out), "--dump-label",
                "inference.min_score_thresh=0.05"]) == 0
    names = {line.split(" ")[0] for label in (out / "labels").glob("*.txt") for line in label.read_text().splitlines()}
    assert names and names <= set(BCCD_NAMES), names


MEDIAPIPE_PROGRAM = """
import json, sys, numpy as np
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision
options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=sys.argv[1]), score_threshold=0.0)
detector = vision.ObjectDetector.create_from_options(options)
found = []
for image in np.load(sys.argv[2]):
    result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    found.append([[[[c.category_name, c.score] for c in d.categories], d.bounding_box.origin_x, d.bounding_box.origin_y,
                   d.bounding_box.width, d.bounding_box.height] for d in result.detections])
print(json.dumps(found))
"""


def mediapipe_path() -> str | None:
    """Where `import mediapipe` works: this interpreter's path, or EFFDET_MEDIAPIPE_TOOLS (a folder MediaPipe was
    installed into with pip --target, as benchmarks/litert_classifier.py does); None when neither has it."""
    folder = os.environ.get("EFFDET_MEDIAPIPE_TOOLS", "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH", "")) if p)}
    probe = subprocess.run([sys.executable, "-c", "import mediapipe.tasks.python.vision"], env=env,
                           capture_output=True)
    return env["PYTHONPATH"] if probe.returncode == 0 else None


@pytest.mark.slow
def test_mediapipe_object_detector_reads_the_file_and_finds_our_detections(exports, crops, tmp_path):
    """MediaPipe's ObjectDetector, knowing nothing of effdet-rt, opens the file (label map and normalisation from its
    metadata) and finds what our engine finds on BCCD crops at the model size (no resizing on either side): the same
    (class name, score) pairs, and the same boxes where they lie inside the image. (MediaPipe merges detections of
    one box into one with several categories, and clips a box leaving the image its own way.)"""
    from PIL import Image

    from effdet_rt.engines.runtime.base import load

    path = mediapipe_path()
    if path is None:
        pytest.skip("mediapipe is not importable (pip install mediapipe, or set EFFDET_MEDIAPIPE_TOOLS to a folder "
                    "holding it)")
    size = (128, 128)
    images = np.stack([np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR)) for crop in crops])
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([sys.executable, "-c", MEDIAPIPE_PROGRAM, str(exports["nms"]), str(tmp_path / "images.npy")],
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    ours = load(exports["nms"]).infer(list(images))
    inside = 0
    for i, theirs in enumerate(found):
        count = int(ours.num_detections[i])
        boxes, scores = ours.boxes[i][:count], ours.scores[i][:count]
        names = [BCCD_NAMES[int(c) - 1] for c in ours.classes[i][:count]]
        pairs = sorted((name, score) for categories, *_ in theirs for name, score in categories)
        assert [name for name, _ in pairs] == sorted(names), i  # the classes, named from the packed labels.txt
        np.testing.assert_allclose([score for _, score in pairs], [s for _, s in sorted(zip(names, scores, strict=True))],
                                   atol=1e-5)
        for categories, x, y, w, h in theirs:
            name, score = categories[0]
            (j,) = [j for j in range(count) if names[j] == name and abs(scores[j] - score) < 1e-6]
            x1, y1, x2, y2 = boxes[j]
            if x1 > 0 and y1 > 0 and x2 < size[1] and y2 < size[0]:
                assert np.abs(np.subtract([x, y, w, h], [x1, y1, x2 - x1, y2 - y1])).max() <= 1.0, (boxes[j], x, y, w, h)
                inside += 1
    assert inside > 20


@pytest.fixture(scope="module")
def calib_tfrecord(tmp_path_factory, bccd_root):
    record, _json, _coco = write_val_set(tmp_path_factory.mktemp("litert_calib"), bccd_root, 8)
    return record


@pytest.mark.slow
def test_int8_is_full_integer_with_an_integer_input(tiny_checkpoint, calib_tfrecord, tmp_path, crops):
    """Every weight int8 (the only float constant left is the anchor table TFLite_Detection_PostProcess reads in
    float by design), a uint8 input with the file's own scale, and detections close to FP32's."""
    from effdet_rt.engines.build.litert import float_weight_tensors
    from effdet_rt.engines.runtime.base import load

    out = tmp_path / "tiny_int8.tflite"
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(out), *EXPORT, "--precision", "int8",
                "--io-type", "uint8", "--calib-tfrecords", str(calib_tfrecord), "--calib-batches", "2",
                "--calib-batch-size", "4"]) == 0
    assert len(float_weight_tensors(out.read_bytes())) == 1  # the (A, 4) anchor table
    engine = load(out)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # the graph as written (XNNPACK's DELEGATE nodes replace ops once tensors are allocated)
    interp = Interpreter(model_path=str(out), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    float_ops = sorted({op["op_name"] for op in interp._get_ops_details()
                        if any(np.dtype(tensors[int(t)]["dtype"]) == np.float32 for t in op["outputs"])})
    # float only where the post-processing op reads its inputs and writes its outputs (boxes, scores: float by design)
    assert float_ops == ["DEQUANTIZE", "TFLite_Detection_PostProcess"]
    assert engine.runner.metadata["precision"] == "int8" and engine.runner.metadata["io_type"] == "uint8"
    detail = engine.runner.input
    assert np.dtype(detail["dtype"]) == np.uint8 and engine.precision == "int8"
    assert detail["quantization"] == (1.0, 0)  # the pixels themselves, not the calibration images' range
    assert engine.infer(crops).num_detections.sum() > 0


@pytest.mark.slow
def test_fp16_halves_the_weights_and_keeps_the_detections(tiny_model, tiny_checkpoint, tmp_path, crops):
    from effdet_rt.engines.build.litert import float_weight_tensors
    from effdet_rt.engines.runtime.base import load
    from effdet_rt.engines.runtime.checkpoint import load_engine as load_checkpoint

    out = tmp_path / "tiny_fp16.tflite"
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(out), *EXPORT, "--precision", "fp16"]) == 0
    fp32_bytes = 4 * tiny_model.count_params()
    assert 0.45 < out.stat().st_size / fp32_bytes < 0.55
    assert len(float_weight_tensors(out.read_bytes())) > 100  # float16 weights (dequantized to float32 when run)
    # the tiny model's scores are near-ties (0.12 +- 3e-4) that fp16 rounding reorders, so its heads are compared:
    # the scores and box codes that feed the written file's post-processing, against TensorFlow's
    from effdet_rt.engines.build.litert import written_heads
    from effdet_rt.export.heads import raw_heads_model

    batch = np.random.default_rng(2).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    scores, codes = written_heads(out, batch)
    setup = load_checkpoint(tiny_checkpoint, key=KEY).setup
    logits, tf_codes = (t.numpy() for t in raw_heads_model(tiny_model, setup.num_levels, setup.num_classes)(batch))
    score_diff = np.abs(scores - 1 / (1 + np.exp(-logits))).max()
    code_diff = np.abs(codes - tf_codes).max() / np.abs(tf_codes).max()
    # the tiny model's box head is scaled down 2000x (tests/support/infer.py), so its codes are ~1e-4 and float16
    # weights move them by a few per cent of that; scores move by ~1e-4
    assert 0 < score_diff < 2e-3 and 0 < code_diff < 0.1, (score_diff, code_diff)
    assert load(out).infer(crops).num_detections.min() == 50


def test_bad_input_is_one_error_line(tiny_checkpoint, tmp_path, capsys):
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)
    one_error_line(["engine-info", str(damaged)], capsys, str(damaged), "export it again")
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(b"not a model at all")
    one_error_line(["engine-info", str(foreign)], capsys, str(foreign), "not a TensorFlow Lite model")
    out = tmp_path / "int8.tflite"
    one_error_line(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(out), "--precision", "int8"],
                   capsys, "--precision int8", "--calib-tfrecords")
    one_error_line(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(out), "--io-type", "uint8"],
                   capsys, "--io-type uint8", "--precision int8")
    one_error_line(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(tmp_path / "m.onnx"),
                    "--precision", "int8"], capsys, "an ONNX export is FP32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.tflite", "foreign.tflite"]


def test_missing_runtime_is_one_error_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import effdet_rt.engines.runtime.litert as litert

    monkeypatch.setattr(litert, "litert_status", lambda: (False, "ai-edge-litert is not installed; "
                                                                  + litert.INSTALL_HINT))
    out = tmp_path / "m.tflite"
    one_error_line(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(out)], capsys, str(out),
                   "pip install 'effdet-rt[litert]'")
    assert not out.exists()
    (tmp_path / "x.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3")
    one_error_line(["engine-info", str(tmp_path / "x.tflite")], capsys, "pip install 'effdet-rt[litert]'")
