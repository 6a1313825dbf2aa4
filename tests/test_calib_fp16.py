"""FP16 ONNX conversion for TensorRT 11: FP32 I/O kept, FP16 weights, results close to FP32 in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from effdet_rt.errors import ModelFileError
from effdet_rt.onnx.fp16 import convert_to_fp16, has_qdq_nodes, load_onnx
from tests.support.fake_tensorrt import tiny_onnx


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def test_fp16_copy_keeps_fp32_io_and_matches(tmp_path):
    src = tiny_onnx(tmp_path / "fp32.onnx")
    dst = convert_to_fp16(src, tmp_path / "fp16.onnx")
    model = onnx.load(str(dst))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {i.name: i.data_type for i in model.graph.initializer} == {"w": TensorProto.FLOAT16,
                                                                      "b": TensorProto.FLOAT16}
    images = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    full, half = _run(src, images), _run(dst, images)
    assert half.dtype == np.float32 and half.shape == (2, 2, 8, 8)
    np.testing.assert_allclose(half, full, atol=2e-3)
    assert np.abs(half - full).max() > 0  # it really ran in FP16


def test_qdq_detection_and_refusal(tmp_path):
    qdq = tiny_onnx(tmp_path / "qdq.onnx", qdq=True)
    assert has_qdq_nodes(load_onnx(qdq)) and not has_qdq_nodes(load_onnx(tiny_onnx(tmp_path / "f.onnx")))
    with pytest.raises(ModelFileError, match="INT8 Q/DQ model"):
        convert_to_fp16(qdq, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="bad.onnx: not a readable ONNX model"):
        load_onnx(bad)
