"""TensorRT engine build: version dispatch, profiles, timing cache, calibration, errors (fake tensorrt module)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from effdet_rt.calib import tensorrt as trt_calibrator
from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
from effdet_rt.errors import ModelFileError, SpecError, UserError
from tests.support.fake_tensorrt import fake_tensorrt, tiny_onnx

GIB = 1 << 30


@pytest.fixture()
def use_trt(monkeypatch):
    def install(version, **kwargs):
        trt = fake_tensorrt(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return install


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    class FakeUploader:
        def __call__(self, batch):
            return 4096

    monkeypatch.setattr(trt_calibrator, "DeviceUploader", FakeUploader)


@pytest.fixture()
def model(tmp_path):
    return tiny_onnx(tmp_path / "model.onnx")


def build(onnx_path, engine, **overrides):
    args = dict(precision="fp32", workspace_gb=2, min_batch=1, opt_batch=4, max_batch=8, timing_cache=None,
                calibration=None, calib_cache=None, log=lambda m: None)
    args.update(overrides)
    return build_tensorrt_engine(onnx_path, engine, **args)


def test_trt10_fp16_sets_flag_profile_workspace_and_writes_plan(use_trt, model, tmp_path):
    trt = use_trt("10.3.0")
    messages = []
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    out = build(model, tmp_path / "m.plan", precision="fp16", timing_cache=str(cache), log=messages.append)
    assert out.read_bytes() == b"PLAN"
    names = [c[0] for c in trt.calls]
    assert names.index("init_plugins") < names.index("parse")
    assert ("create_network", 0) in trt.calls
    assert ("pool", "WORKSPACE", 2 * GIB) in trt.calls
    assert ("profile", ("images", (1, 64, 64, 3), (4, 64, 64, 3), (8, 64, 64, 3))) in trt.calls
    assert [c for c in trt.calls if c[0] == "flag"] == [("flag", "FP16")]
    assert ("timing_cache_in", b"old") in trt.calls
    assert cache.read_bytes() == b"old+"
    assert messages[0].startswith("TensorRT 10.3.0: builder flags")
    info = json.loads((tmp_path / "m.plan.json").read_text())
    assert info["precision"] == "fp16" and info["profile"]["max"] == [8, 64, 64, 3]


def test_trt8_uses_explicit_batch_flag(use_trt, model, tmp_path):
    trt = use_trt("8.6.1")
    build(model, tmp_path / "m.plan")
    assert ("create_network", 1) in trt.calls


def test_trt11_fp16_builds_from_converted_onnx_without_flags(use_trt, model, tmp_path):
    trt = use_trt("11.1.0")
    messages = []
    build(model, tmp_path / "m.plan", precision="fp16", log=messages.append)
    parsed = [c[1] for c in trt.calls if c[0] == "parse"]
    assert len(parsed) == 1 and parsed[0].endswith("model_fp16.onnx")
    assert not [c for c in trt.calls if c[0] == "flag"]
    assert "strongly typed" in messages[0]


def test_trt11_int8_needs_qdq_model(use_trt, model, tmp_path):
    use_trt("11.0.0")
    with pytest.raises(ModelFileError, match="INT8 on TensorRT 11 needs a Q/DQ ONNX"):
        build(model, tmp_path / "m.plan", precision="int8", calibration=[np.zeros((1, 64, 64, 3))])
    assert not (tmp_path / "m.plan").exists()


def test_trt11_int8_from_qdq_model(use_trt, tmp_path):
    trt = use_trt("11.0.0")
    qdq = tiny_onnx(tmp_path / "qdq.onnx", qdq=True)
    build(qdq, tmp_path / "m.plan", precision="int8")
    assert [c[1] for c in trt.calls if c[0] == "parse"] == [qdq]
    assert not [c for c in trt.calls if c[0] in ("flag", "calib_batch")]


def test_trt10_int8_calibrates_then_reuses_cache(use_trt, model, tmp_path):
    trt = use_trt("10.0.1")
    cache = tmp_path / "calib.cache"
    batches = [np.full((2, 64, 64, 3), i, np.float32) for i in range(3)]
    build(model, tmp_path / "a.plan", precision="int8", calibration=iter(batches), calib_cache=str(cache))
    assert [c for c in trt.calls if c[0] == "calib_batch"] == [("calib_batch", 2)] * 3
    assert ("calibration_profile", ("images", (2, 64, 64, 3), (2, 64, 64, 3), (2, 64, 64, 3))) in trt.calls
    assert [c[1] for c in trt.calls if c[0] == "flag"] == ["INT8", "FP16"]
    assert cache.read_bytes() == b"CACHE"

    def must_not_read():
        raise AssertionError("batches read although a cache exists")
        yield

    trt = use_trt("10.0.1")
    build(model, tmp_path / "b.plan", precision="int8", calibration=must_not_read(), calib_cache=str(cache))
    assert ("calib_cache_read", b"CACHE") in trt.calls
    assert not [c for c in trt.calls if c[0] == "calib_batch"]


def test_calib_only_writes_cache_not_engine(use_trt, model, tmp_path):
    use_trt("10.0.1")
    cache = tmp_path / "calib.cache"
    out = build(model, tmp_path / "m.plan", precision="int8", calib_only=True, calib_cache=str(cache),
                calibration=[np.zeros((1, 64, 64, 3), np.float32)])
    assert out == cache and cache.read_bytes() == b"CACHE"
    assert not (tmp_path / "m.plan").exists()


def test_int8_without_data_or_cache_is_an_error(use_trt, model, tmp_path):
    use_trt("10.0.1")
    with pytest.raises(UserError, match="calibration.tfrecords"):
        build(model, tmp_path / "m.plan", precision="int8", calib_cache=str(tmp_path / "none.cache"))


def test_static_batch_model(use_trt, model, tmp_path):
    trt = use_trt("10.0.1", input_shape=(1, 64, 64, 3))
    build(model, tmp_path / "m.plan", min_batch=1, opt_batch=1, max_batch=1)
    assert not [c for c in trt.calls if c[0] == "profile"]
    use_trt("10.0.1", input_shape=(1, 64, 64, 3))
    with pytest.raises(SpecError, match="static batch of 1 but build asks min=1, opt=1, max=4"):
        build(model, tmp_path / "m.plan", min_batch=1, opt_batch=1, max_batch=4)


def test_parser_error_names_node(use_trt, model, tmp_path):
    use_trt("10.0.1", parse_ok=False)
    with pytest.raises(ModelFileError, match=r"node '/head/Foo_3' \(Foo\): Unsupported operator Foo"):
        build(model, tmp_path / "m.plan")


def test_nms_op_needs_trt_86(use_trt, tmp_path):
    nms = tiny_onnx(tmp_path / "nms.onnx", nms=True)
    use_trt("8.5.3")
    with pytest.raises(ModelFileError, match="NonMaxSuppression needs TensorRT >= 8.6"):
        build(nms, tmp_path / "m.plan")
    use_trt("10.0.1")
    assert build(nms, tmp_path / "m.plan").read_bytes() == b"PLAN"


def test_topk_above_tensorrt_limit_is_a_clear_error(use_trt, tmp_path):
    import onnx

    from effdet_rt.engines.build.tensorrt import largest_topk

    wide = tiny_onnx(tmp_path / "topk5000.onnx", topk=5000)
    assert largest_topk(onnx.load(wide)) == 5000
    use_trt("10.0.1")
    with pytest.raises(ModelFileError, match="keeps 5000 elements, TensorRT 10.0.1 keeps at most 3840.*--nms efficient"):
        build(wide, tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()
    fits = tiny_onnx(tmp_path / "topk1000.onnx", topk=1000)
    assert build(fits, tmp_path / "m.plan").read_bytes() == b"PLAN"
    use_trt("8.6.1")
    with pytest.raises(ModelFileError, match="keeps 2000 elements, TensorRT 8.6.1 keeps at most 1024"):
        build(tiny_onnx(tmp_path / "topk2000.onnx", topk=2000), tmp_path / "m8.plan")


def test_missing_onnx_is_an_error_before_tensorrt(tmp_path):
    with pytest.raises(ModelFileError, match="missing.onnx: ONNX model not found"):
        build(tmp_path / "missing.onnx", tmp_path / "m.plan")


def test_missing_tensorrt_says_how_to_install(monkeypatch, model, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UserError, match="pypi.nvidia.com"):
        build(model, tmp_path / "m.plan")


def test_bad_batch_order_is_a_spec_error(use_trt, model, tmp_path):
    use_trt("10.0.1")
    with pytest.raises(SpecError, match="min=4, opt=2, max=8"):
        build(model, tmp_path / "m.plan", min_batch=4, opt_batch=2, max_batch=8)
