"""OpenVINO backend: FP32 IR equals ONNX Runtime FP32 on BCCD, INT8 and FP16 stay close to it, metadata survives in
rt_info, and bad input (no OpenVINO, a TensorRT-only ONNX, a bad precision, a damaged IR pair) is one error line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from effdet_rt.cli.main import run
from effdet_rt.detections import Detections
from effdet_rt.export.verify import match_detections
from tests.support.infer import bccd_images, write_val_set

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'effdet-rt[openvino]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calib_tfrecord(tmp_path_factory, bccd_root):
    record, _json, _coco = write_val_set(tmp_path_factory.mktemp("ov_calib"), bccd_root, 8)
    return record


@pytest.fixture(scope="module")
def builds(tiny_onnx_nms, calib_tfrecord, tmp_path_factory):
    """fp32 / fp16 / int8 IR of the tiny model, each built through the CLI."""
    folder = tmp_path_factory.mktemp("ov_builds")
    paths = {}
    for precision in ("fp32", "fp16", "int8"):
        paths[precision] = folder / f"tiny_{precision}.xml"
        calib = ["--calib-tfrecords", str(calib_tfrecord), "--calib-batches", "2", "--calib-batch-size", "4"]
        code = run(["build", "-m", str(tiny_onnx_nms), "-o", str(paths[precision]), "--backend", "openvino",
                    "--precision", precision, *(calib if precision == "int8" else [])])
        assert code == 0, precision
    return paths


@pytest.fixture(scope="module")
def crops(bccd_root):
    # square crops, as in test_export: the zero padding under a 4:3 image gives anchors identical features, hence
    # exactly tied scores, which two runtimes' TopK may break differently
    from effdet_rt.data.preprocess import read_image

    return [read_image(p)[:, :480] for p in bccd_images(bccd_root, 6)]


@pytest.fixture(scope="module")
def reference(tiny_onnx_nms, crops):
    from effdet_rt.engines import load

    return load(tiny_onnx_nms).infer(crops)


def test_fp32_ir_equals_onnxruntime_fp32_on_bccd(builds, reference, crops):
    from effdet_rt.engines import load

    engine = load(builds["fp32"])
    assert engine.backend == "openvino" and engine.precision == "fp32" and engine.input_size == (128, 128)
    assert engine.describe()["compute_precision"] == "f32"  # not OpenVINO's bf16 default on BF16 CPUs
    ours = engine.infer(crops)
    assert reference.num_detections.tolist() == ours.num_detections.tolist() == [100] * 6
    # the tiny random network fills the 100-box cap, whose last scores are near-ties that float rounding orders
    # (test_export holds ONNX Runtime to TensorFlow at the same 2e-4)
    report = match_detections(reference, ours, iou_threshold=0.99, score_tolerance=2e-4)
    assert report.reference == 600 and report.rate >= 0.99
    assert ours.boxes[..., 2].max() > 128  # boxes in original-image pixels (480-wide crops)
    # batch 1 and batch 6 give the same boxes: the dynamic batch dimension is kept in the IR
    single = engine.infer(crops[:1])
    first = Detections(ours.boxes[:1], ours.scores[:1], ours.classes[:1], ours.num_detections[:1])
    assert match_detections(first, single, iou_threshold=0.999, score_tolerance=1e-5).rate == 1.0


def test_metadata_survives_into_rt_info(builds, tiny_onnx_nms):
    from effdet_rt.engines.runtime.openvino_common import file_digest, read_rt_metadata
    from effdet_rt.onnx.graph import read_metadata

    source = read_metadata(onnx.load(str(tiny_onnx_nms)))
    for precision, path in builds.items():
        meta = read_rt_metadata(ov.Core().read_model(str(path)))
        assert {k: meta[k] for k in source if k != "precision"} == {k: v for k, v in source.items() if k != "precision"}
        assert meta["precision"] == precision and meta["num_classes"] == 3 and meta["input_size"] == [128, 128]
        assert meta["bin_sha256"] == file_digest(path.with_suffix(".bin"))
    assert read_rt_metadata(ov.Core().read_model(str(builds["int8"])))["calibration_batches"] == 2
    # FP16 weights: the .bin is about half the FP32 one
    ratio = builds["fp16"].with_suffix(".bin").stat().st_size / builds["fp32"].with_suffix(".bin").stat().st_size
    assert 0.45 < ratio < 0.55


def fake_quantized_inputs(path: Path) -> tuple[int, int, set[str]]:
    """(convolutions, convolutions whose activation input comes through FakeQuantize, op types after the heads that
    take a FakeQuantize input) of an IR."""
    model = ov.Core().read_model(str(path))
    convs = quantized = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            convs += 1
            source = op.input_value(0).get_node()
            quantized += source.get_type_name() == "FakeQuantize"
    from effdet_rt.engines.build.openvino import postprocess_op_names

    after_heads = set(postprocess_op_names(model))
    fed_by_fq = {op.get_type_name() for op in model.get_ordered_ops() if op.get_friendly_name() in after_heads
                 and any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs())}
    return convs, quantized, fed_by_fq


def test_int8_ir_quantizes_the_network_not_nms_and_matches_fp32(builds, reference, crops):
    from effdet_rt.engines import load

    convs, quantized, fed_by_fq = fake_quantized_inputs(builds["int8"])
    assert convs > 200 and quantized >= 0.9 * convs - 1  # every conv but the float input normalisation ...
    assert fed_by_fq == set()  # ... and nothing of decoding / top-k / NMS
    import logging  # NNCF's line-per-ignored-node INFO log is kept out of the build's output
    assert logging.getLogger("nncf").getEffectiveLevel() == logging.WARNING
    int8 = load(builds["int8"])
    assert int8.precision == "int8"
    detections = int8.infer(crops)
    report = match_detections(reference, detections, iou_threshold=0.5, score_tolerance=None)
    print(f"OpenVINO INT8 vs ONNX Runtime FP32 detections matched (same class, IoU >= 0.5): {report.rate:.1%}")
    assert report.reference == 600 and report.rate >= 0.6  # 68% here: a random tiny net; the trained D0: 92%
    fp16 = load(builds["fp16"]).infer(crops)
    report16 = match_detections(reference, fp16, iou_threshold=0.5, score_tolerance=None)
    print(f"OpenVINO FP16 vs ONNX Runtime FP32 detections matched (same class, IoU >= 0.5): {report16.rate:.1%}")
    # FP16 weights; arithmetic in f16, bf16 or f32 as the CPU has it: 82% with bf16, 90% with f32 on this tiny random net
    assert report16.rate >= 0.75


def test_infer_and_engine_info_take_the_ir(builds, bccd_root, tmp_path, capsys):
    import json
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for path in bccd_images(bccd_root, 2):
        shutil.copy(path, images / path.name)
    assert run(["infer", "-m", str(builds["fp32"]), "-i", str(images), "-o", str(tmp_path / "out"), "--min-score", "0.3"]) == 0
    assert len(json.loads((tmp_path / "out" / "detections.json").read_text())) > 0
    capsys.readouterr()
    assert run(["engine-info", str(builds["int8"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["precision"] == "int8" and info["compute_precision"] == "f32"
    assert [t["name"] for t in info["tensors"]] == ["images", "num_detections", "detection_boxes", "detection_scores",
                                                    "detection_classes"]


def test_auto_backend_on_a_cpu():
    from effdet_rt.engines.build.request import choose_cpu_backend

    lines: list[str] = []
    ok = {"openvino": (True, "OpenVINO 2026.4.1"), "onnxruntime": (True, "ONNX Runtime is installed")}
    missing = {"openvino": (False, "not installed"), "onnxruntime": (True, "ONNX Runtime is installed")}
    assert choose_cpu_backend(Path("m.xml"), ok, "no GPU", lines.append) == "openvino"
    assert choose_cpu_backend(Path("m.onnx"), ok, "no GPU", lines.append) == "onnxruntime"
    assert choose_cpu_backend(Path("m.engine"), missing, "no GPU", lines.append) == "onnxruntime"
    assert choose_cpu_backend(Path("m.xml"), missing, "no GPU", lines.append) == "openvino"
    assert all(line.startswith("backend: ") and "\n" not in line for line in lines)
    assert "fastest installed CPU runtime" in lines[0] and "OpenVINO not used: not installed" in lines[2]


def test_compute_precision_follows_the_build_and_the_cpu():
    from effdet_rt.engines.runtime.openvino import compute_precision

    class FakeCore:
        def __init__(self, capabilities):
            self.capabilities = capabilities

        def get_property(self, device, name):
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return self.capabilities

    bf16_cpu, fp16_cpu, plain = FakeCore(["BF16", "FP32", "INT8"]), FakeCore(["FP16", "BF16", "FP32"]), FakeCore(["FP32"])
    for core in (bf16_cpu, fp16_cpu, plain):  # FP32 and INT8 never take OpenVINO's bf16 default
        assert compute_precision(ov, core, "fp32") == ov.Type.f32 and compute_precision(ov, core, "int8") == ov.Type.f32
    assert compute_precision(ov, fp16_cpu, "fp16") == ov.Type.f16
    assert compute_precision(ov, bf16_cpu, "fp16") == ov.Type.bf16
    assert compute_precision(ov, plain, "fp16") == ov.Type.f32
    assert compute_precision(ov, bf16_cpu, "bf16") == compute_precision(ov, fp16_cpu, "bf16") == ov.Type.bf16
    from effdet_rt.errors import UserError

    with pytest.raises(UserError, match="no bfloat16 arithmetic"):  # never a bf16 engine quietly computing in f32
        compute_precision(ov, plain, "bf16")


CPU_HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_bf16_engine_where_the_cpu_has_it_else_one_error(tiny_onnx_nms, reference, crops, builds, tmp_path, capsys):
    """--precision bf16: FP32 weights computed in bf16 on CPUs with bfloat16 arithmetic (AVX512_BF16, AMX), close to
    FP32; on other CPUs the build is refused with one line and writes nothing (each machine checks its own case)."""
    from effdet_rt.engines import load

    out = tmp_path / "tiny_bf16.xml"
    code = run(["build", "-m", str(tiny_onnx_nms), "-o", str(out), "--backend", "openvino", "--precision", "bf16"])
    if not CPU_HAS_BF16:
        assert code == 2 and "no bfloat16 arithmetic" in one_error_line(capsys) and left_in(tmp_path) == []
        return
    assert code == 0
    engine = load(out)
    assert engine.precision == "bf16" and engine.describe()["compute_precision"] == "bf16"
    assert out.with_suffix(".bin").stat().st_size == builds["fp32"].with_suffix(".bin").stat().st_size  # f32 weights
    report = match_detections(reference, engine.infer(crops), iou_threshold=0.5, score_tolerance=None)
    print(f"OpenVINO BF16 vs ONNX Runtime FP32 detections matched (same class, IoU >= 0.5): {report.rate:.1%}")
    assert report.reference == 600 and report.rate >= 0.75  # as FP16's bf16 arithmetic on this tiny random net


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_build_without_openvino_is_one_error(tiny_onnx_nms, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    out = tmp_path / "m.xml"
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(out), "--backend", "openvino"]) == 2
    err = one_error_line(capsys)
    assert "OpenVINO is not installed" in err and "pip install 'effdet-rt[openvino]'" in err
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "m.onnx"), "--backend", "auto"]) == 0
    assert left_in(tmp_path) == ["m.onnx"]  # auto fell back to ONNX Runtime; no IR half-written


def test_build_bad_inputs(tiny_onnx_nms, tmp_path, capsys):
    import onnx.helper as h

    nodes = [h.make_node("EfficientNMS_TRT", ["images"], ["num_detections"], domain="trt.plugins")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 8, 8, 3])],
                         [h.make_tensor_value_info("num_detections", onnx.TensorProto.INT32, [1, 1])])
    onnx.save(h.make_model(graph), str(tmp_path / "efficient.onnx"))
    out = tmp_path / "out" / "m.xml"
    assert run(["build", "-m", str(tmp_path / "efficient.onnx"), "-o", str(out), "--backend", "openvino"]) == 2
    err = one_error_line(capsys)
    assert "efficient.onnx" in err and "EfficientNMS_TRT" in err and "--nms onnx" in err
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(out), "--backend", "openvino", "--precision", "int4"]) == 2
    assert "build.data_type = 'int4' is not allowed" in one_error_line(capsys)
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(out), "--backend", "openvino", "--precision", "int8"]) == 2
    assert "--calib-tfrecords" in one_error_line(capsys)
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "m.onnx"), "--backend", "openvino"]) == 2
    assert "name the output *.xml" in one_error_line(capsys)
    assert not out.parent.exists() or left_in(out.parent) == []


def test_failed_write_leaves_nothing(tiny_onnx_nms, tmp_path, monkeypatch):
    import effdet_rt.engines.build.openvino as build

    def broken_digest(path):
        raise OSError("disk full")

    monkeypatch.setattr(build, "file_digest", broken_digest)
    with pytest.raises(OSError):
        build.build_openvino_engine(tiny_onnx_nms, tmp_path / "m.xml", precision="fp32", log=lambda _: None)
    assert left_in(tmp_path) == []


def test_damaged_ir_pair_is_one_error(builds, tmp_path, capsys):
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(images / "a.png")

    def pair(name: str, xml: Path, weights: Path | None) -> Path:
        shutil.copy(xml, tmp_path / f"{name}.xml")
        if weights is not None:
            shutil.copy(weights, tmp_path / f"{name}.bin")
        return tmp_path / f"{name}.xml"

    fp32, fp16 = builds["fp32"], builds["fp16"]
    cases = {
        "missing.bin: missing": pair("missing", fp32, None),
        "swapped.xml (+ swapped.bin): not a readable OpenVINO IR pair": pair("swapped", fp32, fp16.with_suffix(".bin")),
        "truncated.xml (+ truncated.bin): not a readable": pair("truncated", fp32, fp32.with_suffix(".bin")),
        "flipped.bin: does not belong to flipped.xml": pair("flipped", fp32, fp32.with_suffix(".bin")),
        "garbage.xml (+ garbage.bin): not a readable OpenVINO IR pair": pair("garbage", fp32, fp32.with_suffix(".bin")),
    }
    data = (tmp_path / "truncated.bin").read_bytes()
    (tmp_path / "truncated.bin").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # same size, one weight byte changed: OpenVINO reads it, the digest does not match
    (tmp_path / "flipped.bin").write_bytes(bytes(flipped))
    (tmp_path / "garbage.xml").write_text("<net><layers>")
    for expected, xml in cases.items():
        out = tmp_path / f"out_{xml.stem}"
        assert run(["infer", "-m", str(xml), "-i", str(images), "-o", str(out)]) == 2, xml
        err = one_error_line(capsys)
        assert expected in err and "effdet-rt build --backend openvino" in err, err
        assert not out.exists()


def test_qdq_onnx_is_int8_as_it_is(tiny_onnx_nms, calib_tfrecord, reference, crops, tmp_path, capsys):
    """A Q/DQ ONNX (here our `tensorrt` profile; a `train.qat` export is the same) keeps its own scales."""
    from effdet_rt.engines import load

    qdq = tmp_path / "qdq.onnx"
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(qdq), "--backend", "onnxruntime", "--precision", "int8",
                "--int8-profile", "tensorrt", "--calib-tfrecords", str(calib_tfrecord), "--calib-batches", "2",
                "--calib-batch-size", "4"]) == 0
    assert run(["build", "-m", str(qdq), "-o", str(tmp_path / "q.xml"), "--backend", "openvino"]) == 2
    assert "holds QuantizeLinear/DequantizeLinear nodes" in one_error_line(capsys)
    assert run(["build", "-m", str(qdq), "-o", str(tmp_path / "q.xml"), "--backend", "openvino", "--precision", "int8"]) == 0
    assert "calibration skipped" in capsys.readouterr().out
    engine = load(tmp_path / "q.xml")
    assert engine.precision == "int8" and engine.metadata["int8_source"] == "qdq in the input model"
    convs, quantized, _ = fake_quantized_inputs(tmp_path / "q.xml")
    assert quantized == convs - 1  # every conv but the input normalisation, as the Q/DQ model has it
    report = match_detections(reference, engine.infer(crops), iou_threshold=0.5, score_tolerance=None)
    assert report.rate >= 0.6
