"""TensorRT runtime pieces that need no GPU: profiles, batch splitting, output decoding, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from effdet_rt.engines.runtime import base
from effdet_rt.engines.runtime.tensorrt import detections_from_outputs, tensorrt_status
from effdet_rt.engines.runtime.trt_profile import batch_chunks, batch_profile
from effdet_rt.errors import ModelFileError


def test_dynamic_profile_shapes():
    p = batch_profile((-1, 512, 640, 3), 1, 4, 16)
    assert (p.min, p.opt, p.max, p.dynamic) == ((1, 512, 640, 3), (4, 512, 640, 3), (16, 512, 640, 3), True)


def test_profile_rejects_dynamic_image_size():
    with pytest.raises(ModelFileError, match=r"input 'images' has shape \[-1, -1, -1, 3\]"):
        batch_profile((-1, -1, -1, 3), 1, 1, 1)


def test_batch_chunks_split_and_pad():
    assert batch_chunks(10, 1, 4) == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert batch_chunks(5, 4, 4) == [(0, 4, 4), (4, 5, 4)]  # static batch 4: last run padded
    assert batch_chunks(0, 1, 8) == []


def test_detections_from_outputs_uses_only_valid_slots_and_shifts_classes():
    outputs = {
        "num_detections": np.array([[2], [0], [1]], np.int32),
        "detection_boxes": np.arange(3 * 3 * 4, dtype=np.float32).reshape(3, 3, 4),
        "detection_scores": np.array([[0.9, 0.5, 0.4], [0.8, 0.7, 0.6], [0.3, 0.2, 0.1]], np.float32),
        "detection_classes": np.array([[0, 2, 1], [1, 1, 1], [4, 0, 0]], np.int32),
    }
    det = detections_from_outputs(outputs, count=2)  # third image was batch padding
    assert det.num_detections.tolist() == [2, 0]
    assert det.classes.tolist() == [[1, 3, 0], [0, 0, 0]]
    np.testing.assert_allclose(det.scores, [[0.9, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert det.boxes[0, 1].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert not det.boxes[0, 2].any() and not det.boxes[1].any()


def test_status_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, text = tensorrt_status()
    assert ok is False and "pip install" in text and "pypi.nvidia.com" in text


def test_plan_suffixes_pick_tensorrt_and_missing_file_is_clear(tmp_path):
    from effdet_rt.backends import backend_for_file

    assert backend_for_file("m.plan").name == backend_for_file("m.ENGINE").name == "tensorrt"
    with pytest.raises(ModelFileError, match="model file not found"):
        base.load(tmp_path / "nope.plan")


def test_gpu_engine_runs(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT and an NVIDIA GPU are needed (benchmarks/gpu_acceptance.sh)")
    ok, text = tensorrt_status()
    if not ok:
        pytest.skip(text)
    from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
    from tests.support.fake_tensorrt import tiny_onnx

    onnx_path = tiny_onnx(tmp_path / "tiny.onnx", batch="N", size=16)
    plan = build_tensorrt_engine(onnx_path, tmp_path / "tiny.plan", precision="fp32", workspace_gb=1, min_batch=1,
                                 opt_batch=2, max_batch=4, timing_cache=None, calibration=None, calib_cache=None)
    assert plan.stat().st_size > 0 and trt.__version__


def test_detector_engine_runs_a_plan_through_the_shared_plan_session(tmp_path, monkeypatch):
    """The detector's TensorRTEngine on the fake TensorRT's runtime: the same PlanSession as the classifier's plans."""
    import onnxruntime as ort

    from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
    from effdet_rt.engines.runtime.tensorrt import TensorRTEngine
    from tests.support.fake_tensorrt import fake_cudart, fake_tensorrt, install_fake_cuda, tiny_detector_onnx

    cuda = install_fake_cuda(monkeypatch, fake_cudart())
    trt = fake_tensorrt("10.3.0", input_shape=None, cuda=cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_path = tiny_detector_onnx(tmp_path / "detector.onnx")
    plan = build_tensorrt_engine(onnx_path, tmp_path / "detector.plan", precision="fp32", workspace_gb=1, min_batch=2,
                                 opt_batch=2, max_batch=4, timing_cache=None, calibration=None, calib_cache=None,
                                 log=lambda m: None)
    engine = TensorRTEngine(plan)
    assert (engine.min_batch, engine.max_batch_size, engine.input_size) == (2, 4, (8, 8))
    batch = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)
    batch[0] = 0.0  # a mean of 0: both scores exactly 0.5, nothing kept
    det = engine.run(batch)
    assert [c[1] for c in trt.calls if c[0] == "execute"] == [4, 2]  # the fifth image padded to the minimum batch
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    expected = detections_from_outputs(dict(zip(names, session.run(names, {"images": batch}), strict=True)), 5)
    assert det.num_detections.tolist() == expected.num_detections.tolist()
    assert det.num_detections[0] == 0 and det.num_detections[1:].sum() > 0
    np.testing.assert_allclose(det.boxes, expected.boxes, atol=1e-6)
    np.testing.assert_allclose(det.scores, expected.scores, atol=1e-6)
    np.testing.assert_array_equal(det.classes, expected.classes)
