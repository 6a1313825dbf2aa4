"""Stand-ins for the `tensorrt` module that record what the builder asks of it (no GPU needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper


def tiny_onnx(path, batch="N", qdq=False, nms=False, size=8, topk=0) -> str:
    """images (batch, size, size, 3) -> NCHW -> Conv 3->2 -> Sigmoid -> scores; optional Q/DQ, NMS or TopK node."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 3, 3, 3], rng.normal(0, 0.05, 54).astype(np.float32))
    bias = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.1, -0.2])
    inits = [weight, bias]
    nodes = []
    source = "images"
    if qdq:
        inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [1.0]),
                  helper.make_tensor("z", TensorProto.UINT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        source = "dq"
    nodes += [helper.make_node("Transpose", [source], ["nchw"], perm=[0, 3, 1, 2]),
              helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
              helper.make_node("Sigmoid", ["conv"], ["scores"])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 2, size, size])]
    if nms:
        nodes.append(helper.make_node("NonMaxSuppression", ["boxes_in", "scores_in"], ["selected"]))
    if topk:
        inits.append(helper.make_tensor("k", TensorProto.INT64, [1], [topk]))
        nodes.append(helper.make_node("TopK", ["scores", "k"], ["top_values", "top_index"], axis=-1))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(
        "images", TensorProto.FLOAT, [batch, size, size, 3])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


class FakeError:
    def desc(self):
        return "Unsupported operator Foo"

    def node_name(self):
        return "/head/Foo_3"

    def node_operator(self):
        return "Foo"


def fake_tensorrt(version: str, input_shape=(-1, 64, 64, 3), parse_ok=True):
    calls: list[tuple] = []
    major = int(version.split(".")[0])
    trt = SimpleNamespace(__version__=version, calls=calls)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    def init_plugins(logger, namespace):
        calls.append(("init_plugins",))
        return True

    class Profile:
        def __init__(self):
            self.shapes = None

        def set_shape(self, name, low, opt, high):
            self.shapes = (name, tuple(low), tuple(opt), tuple(high))

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def add_optimization_profile(self, profile):
            calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            calls.append(("timing_cache_in", bytes(data)))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        if major < 11:
            int8_calibrator = None

            def set_calibration_profile(self, profile):
                calls.append(("calibration_profile", profile.shapes))

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return SimpleNamespace(name="images", shape=input_shape)

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, index):
            return FakeError()

    class Builder:
        def __init__(self, logger):
            calls.append(("builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:  # what TensorRT does with a calibrator: cache first, else batches
                cache = calibrator.read_calibration_cache()
                if cache is None:
                    while calibrator.get_batch(["images"]) is not None:
                        calls.append(("calib_batch", calibrator.get_batch_size()))
                    calibrator.write_calibration_cache(b"CACHE")
                else:
                    calls.append(("calib_cache_read", cache))
            return b"PLAN"

    trt.Logger = Logger
    trt.init_libnvinfer_plugins = init_plugins
    trt.Builder = Builder
    trt.OnnxParser = Parser
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    if major < 10:
        trt.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
    if major < 11:
        trt.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8")

        class IInt8EntropyCalibrator2:
            def __init__(self):
                calls.append(("calibrator_base_init",))

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    else:
        trt.BuilderFlag = SimpleNamespace()  # TensorRT 11 has no precision flags
    return trt
