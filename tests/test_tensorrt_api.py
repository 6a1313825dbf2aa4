"""The TensorRT API effdet-rt and its fake TensorRT use is TensorRT's real one.

Names are checked against TensorRT 10's published Python API (the tensorrt-stubs type stubs, kept as data in
tests/support/tensorrt10_api.json) and against the removals NVIDIA lists for TensorRT 11 (tests/support/tensorrt_api.py
names the sources): every ``trt.X.Y`` our package writes, every builder flag a precision plan sets, every member of
every fake TensorRT class (our code runs against the fake in the tests, so what it calls on TensorRT objects is a
member of a fake class), and the methods our calibrator and output allocator override. Then the runtime's
output-allocator path (outputs whose shape is known only after the run) runs on the fake TensorRT.
"""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from effdet_rt.errors import UserError
from tests.support.fake_tensorrt import fake_cudart, fake_tensorrt, install_fake_cuda, tiny_onnx
from tests.support.tensorrt_api import REMOVED_IN_11, tensorrt10_api

PACKAGE = Path(__file__).resolve().parents[1] / "effdet_rt"
FAKE_BOOKKEEPING = {"calls", "calibration_batches", "executed"}  # what the fake records for the tests, not API
# the fake's classes -> the TensorRT classes they stand for
FAKE_CLASSES = {"Builder": "Builder", "Config": "IBuilderConfig", "Network": "INetworkDefinition",
                "Profile": "IOptimizationProfile", "Cache": "ITimingCache", "Parser": "OnnxParser",
                "FakeError": "ParserError", "Logger": "Logger", "Runtime": "Runtime", "Engine": "ICudaEngine",
                "Context": "IExecutionContext", "IOutputAllocator": "IOutputAllocator",
                "IInt8EntropyCalibrator2": "IInt8EntropyCalibrator2"}
# the fake's own plumbing and state, no TensorRT members (everything else a fake object has must be one)
FAKE_HELPERS = {"Logger": {"level"}, "Profile": {"shapes"}, "Cache": {"data"},
                "Config": {"profiles", "flags", "calibration_shapes"}, "Network": {"onnx"}, "Parser": {"network"},
                "Engine": {"header", "batch_name", "tensors", "output_dims", "session"},
                "Context": {"engine", "input_name", "input_shape", "addresses", "allocators", "write_output"}}


def trt_chains(tree: ast.AST) -> set[str]:
    """``X`` and ``X.Y`` of every ``trt.X.Y...`` / ``tensorrt.X.Y...`` attribute chain in ``tree``."""
    found = set()
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            if node.attr == "trt" and parts:  # self.trt.X
                break
            parts.append(node.attr)
            node = node.value
        rooted = isinstance(node, ast.Attribute) or isinstance(node, ast.Name) and node.id in ("trt", "tensorrt")
        if rooted and parts:
            found.add(".".join(reversed(parts[-2:])))
    return found


def package_trt_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for chain in trt_chains(ast.parse(path.read_text())):
            names.setdefault(chain, set()).add(str(path.relative_to(PACKAGE)))
    return names


def exists_in_tensorrt10(chain: str) -> bool:
    module, classes = tensorrt10_api()
    head, _, member = chain.partition(".")
    if head not in module:
        return False
    return not member or member in classes.get(head, ()) or member in classes.get("ILogger", ()) and head == "Logger"


def test_every_trt_name_the_package_writes_is_in_tensorrt10():
    names = package_trt_names()
    assert {"Builder", "OnnxParser", "Runtime", "IOutputAllocator", "IInt8EntropyCalibrator2", "TensorIOMode.INPUT",
            "Logger.WARNING", "MemoryPoolType.WORKSPACE", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"} <= set(names)
    missing = {chain: sorted(files) for chain, files in names.items() if not exists_in_tensorrt10(chain)}
    assert missing == {}


def all_precision_plans():
    from effdet_rt.engines.build.tensorrt import PRECISIONS, precision_plan

    for major, precision, *switches in itertools.product((8, 10, 11), PRECISIONS, *[(False, True)] * 5):
        qdq, fp16_model, calib_only, has_cache, has_batches = switches
        try:
            yield major, precision_plan(major, precision, qdq=qdq, is_fp16_model=fp16_model, calib_only=calib_only,
                                        has_cache=has_cache, has_batches=has_batches)
        except UserError:
            continue


def test_builder_flags_exist_in_tensorrt10_and_none_is_set_on_tensorrt11():
    _, classes = tensorrt10_api()
    flags = {(major, flag) for major, plan in all_precision_plans() for flag in plan.flags}
    assert {flag for _, flag in flags} == {"FP16", "INT8"}
    assert all(flag in classes["BuilderFlag"] for _, flag in flags)
    assert not any(major >= 11 for major, _ in flags)  # TensorRT 11 removed them (REMOVED_IN_11)
    assert {f"BuilderFlag.{flag}" for _, flag in flags} <= REMOVED_IN_11
    assert not any(plan.calibrate for major, plan in all_precision_plans() if major >= 11)


def fake_objects(version: str) -> tuple[object, dict[str, object]]:
    """The fake module and one object (or class) of each fake TensorRT class, made as our code makes them."""
    import tempfile

    cuda = fake_cudart()
    trt = fake_tensorrt(version, input_shape=None, cuda=cuda)
    objects: dict[str, object] = {"Logger": trt.Logger(trt.Logger.WARNING), "Runtime": trt.Runtime(None)}
    builder = objects["Builder"] = trt.Builder(None)
    network = objects["Network"] = builder.create_network(0)
    config = objects["Config"] = builder.create_builder_config()
    profile = objects["Profile"] = builder.create_optimization_profile()
    objects["Cache"] = config.create_timing_cache(b"")
    with tempfile.TemporaryDirectory() as tmp:
        parser = objects["Parser"] = trt.OnnxParser(network, None)
        parser.parse_from_file(tiny_onnx(Path(tmp) / "tiny.onnx", batch="N"))
    objects["FakeError"] = parser.get_error(0)
    profile.set_shape("images", (1, 8, 8, 3), (1, 8, 8, 3), (2, 8, 8, 3))
    config.add_optimization_profile(profile)
    engine = objects["Engine"] = objects["Runtime"].deserialize_cuda_engine(builder.build_serialized_network(network, config))
    objects["Context"] = engine.create_execution_context()
    objects["IOutputAllocator"] = trt.IOutputAllocator()
    if hasattr(trt, "IInt8EntropyCalibrator2"):
        objects["IInt8EntropyCalibrator2"] = trt.IInt8EntropyCalibrator2
    return trt, objects


def public_members(obj: object) -> set[str]:
    cls = obj if isinstance(obj, type) else type(obj)
    names = {n for klass in cls.__mro__ if klass is not object for n in vars(klass) if not n.startswith("_")}
    instance = set(vars(obj)) if not isinstance(obj, type) else set()
    return names | {n for n in instance if not n.startswith("_")}


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_every_member_of_the_fake_tensorrt_is_in_tensorrt10(version):
    module, classes = tensorrt10_api()
    trt, objects = fake_objects(version)
    assert set(objects) == set(FAKE_CLASSES) - ({"IInt8EntropyCalibrator2"} if version.startswith("11") else set())
    wrong = []
    for fake, obj in objects.items():
        real = FAKE_CLASSES[fake]
        members = public_members(obj) - FAKE_HELPERS.get(fake, set())
        wrong += [f"{fake} ({real}).{m}" for m in sorted(members) if m not in classes[real]]
    for name in sorted(set(vars(trt)) - FAKE_BOOKKEEPING):
        value = getattr(trt, name)
        if name != "__version__" and name not in module:
            wrong.append(f"trt.{name}")
        elif name in classes and not isinstance(value, type):  # an enum stand-in: its members
            wrong += [f"trt.{name}.{m}" for m in vars(value) if m not in classes[name]]
    assert wrong == []


def fake_names(trt, objects) -> set[str]:
    names = set()
    for fake, obj in objects.items():
        names |= {f"{FAKE_CLASSES[fake]}.{m}" for m in public_members(obj) - FAKE_HELPERS.get(fake, set())}
    for name in set(vars(trt)) - FAKE_BOOKKEEPING:
        names.add(name)
        value = getattr(trt, name)
        if not callable(value) and hasattr(value, "__dict__"):
            names |= {f"{name}.{m}" for m in vars(value)}
    return names


def test_the_tensorrt11_fake_has_nothing_tensorrt11_removed_and_the_10_fake_only_what_our_10_path_uses():
    eleven = fake_names(*fake_objects("11.0.0"))
    ten = fake_names(*fake_objects("10.3.0"))
    assert eleven & REMOVED_IN_11 == set()
    assert ten & REMOVED_IN_11 == {"BuilderFlag.FP16", "BuilderFlag.INT8", "IBuilderConfig.int8_calibrator",
                                   "IBuilderConfig.set_calibration_profile"}
    assert "IInt8EntropyCalibrator2" in ten and "IInt8EntropyCalibrator2" not in eleven


def test_our_calibrator_and_output_allocator_override_tensorrt_methods():
    from effdet_rt.calib.tensorrt import entropy_calibrator_class
    from effdet_rt.engines.runtime.tensorrt import output_allocator_class

    _, classes = tensorrt10_api()
    for ours, real in ((entropy_calibrator_class(object), "IInt8EntropyCalibrator2"),
                       (output_allocator_class(object), "IOutputAllocator")):
        overridden = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))}
        assert overridden and overridden <= classes[real], (real, overridden - classes[real])
    assert {"reallocate_output", "reallocate_output_async", "notify_shape"} <= set(vars(output_allocator_class(object)))


def data_dependent_onnx(path: Path, size: int = 8) -> str:
    """images (N, size, size, 3) -> mean (N,) and the indices of pixels above 128, NonZero's (4, count): a count
    known only once the model has run."""
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [128.0])
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Greater", ["images", "half"], ["bright"]),
             helper.make_node("NonZero", ["bright"], ["bright_pixels"])]
    graph = helper.make_graph(
        nodes, "data_dependent",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("bright_pixels", TensorProto.INT64, [4, "count"])], [half])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def test_outputs_of_data_dependent_shape_come_through_the_output_allocator(tmp_path, monkeypatch):
    import onnxruntime as ort

    from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
    from effdet_rt.engines.runtime.tensorrt import PlanSession

    cuda = install_fake_cuda(monkeypatch, fake_cudart())
    trt = fake_tensorrt("10.3.0", input_shape=None, cuda=cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_path = data_dependent_onnx(tmp_path / "nonzero.onnx")
    plan = build_tensorrt_engine(onnx_path, tmp_path / "nonzero.plan", precision="fp32", workspace_gb=1, min_batch=1,
                                 opt_batch=2, max_batch=3, timing_cache=None, calibration=None, calib_cache=None,
                                 log=lambda m: None)
    session = PlanSession(plan)
    assert session.context.allocators.keys() == {"bright_pixels"}  # the fixed-shape output keeps its own buffer
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 140, (5, 8, 8, 3)).astype(np.float32)
    batch[4] = 0.0  # an image with nothing bright adds no rows: each run's row count depends on its images
    runs = list(session.run(batch))
    assert [count for count, _ in runs] == [3, 2]
    reference = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    for (count, outputs), start in zip(runs, (0, 3), strict=True):
        mean, bright = reference.run(["mean", "bright_pixels"], {"images": batch[start:start + count]})
        np.testing.assert_array_equal(outputs["mean"], mean)
        np.testing.assert_array_equal(outputs["bright_pixels"], bright)
        assert bright.shape[1] > 0
    assert [c[1:] for c in trt.calls if c[0] == "reallocate_output"] == [
        ("bright_pixels", runs[0][1]["bright_pixels"].nbytes), ("bright_pixels", runs[1][1]["bright_pixels"].nbytes)]
