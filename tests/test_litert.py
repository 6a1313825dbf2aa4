"""LiteRT (.tflite): the export from a checkpoint with TFLite_Detection_PostProcess inside (or raw heads), run by
ai-edge-litert; detections equal the checkpoint's and host NMS's, a full-integer INT8 file keeps no float weights,
and bad input is one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from effdet_rt.cli.main import run
from effdet_rt.export.verify import match_detections
from tests.support.cli import one_error_line
from tests.support.infer import KEY, bccd_images, write_val_set

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'effdet-rt[litert]')")

EXPORT = ["--min-score", "0.05", "--max-detections", "50"]


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
    """The tiny checkpoint as FP32 .tflite, NMS inside and raw heads, each exported through the CLI with --verify."""
    folder = tmp_path_factory.mktemp("litert")
    paths = {"nms": folder / "tiny.tflite", "raw": folder / "tiny_raw.tflite"}
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(paths["nms"]), *EXPORT, "--verify"]) == 0
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
