"""Stand-ins for the `tensorrt` module that record what the builder asks of it (no GPU needed), and for
cuda-python's runtime module (host memory posing as device memory).

Given a fake CUDA runtime (``fake_tensorrt(..., cuda=fake_cudart())``) the fake also runs what it builds, as
TensorRT's runtime API does it: the "plan" holds the parsed ONNX, the TensorRT version and the optimisation profile;
``Runtime.deserialize_cuda_engine`` refuses plans of another version; the execution context checks input shapes
against the profile, reads the input from the device address it was given and writes every output to its address (or,
for an output given an IOutputAllocator, to the memory the allocator returns, then tells it the shape),
computing them with ONNX Runtime on the ONNX the plan was built from (no FP16 / INT8 arithmetic: an INT8
TensorRT <= 10 plan computes the FP32 ONNX; TensorRT 11 plans compute the FP16 or Q/DQ ONNX they were parsed from).
The calibrator's device batches are read back as TensorRT reads them (``trt.calibration_batches``).
"""

from __future__ import annotations

import ctypes
import json
import sys
from types import ModuleType, SimpleNamespace

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


def tiny_detector_onnx(path, size=8) -> str:
    """images (N, size, size, 3) -> the four NMS outputs with two slots per image, computed from the mean colour:
    detection_boxes (N, 2, 4), detection_scores (N, 2), detection_classes and num_detections (scores > 0.5)."""
    rng = np.random.default_rng(1)
    inits = [helper.make_tensor("ws", TensorProto.FLOAT, [3, 2], rng.normal(0, 0.02, 6).astype(np.float32)),
             helper.make_tensor("wb", TensorProto.FLOAT, [3, 8], rng.uniform(0, 0.5, 24).astype(np.float32)),
             helper.make_tensor("box_shape", TensorProto.INT64, [3], [-1, 2, 4]),
             helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor("slot_axis", TensorProto.INT64, [1], [1])]
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["mean", "ws"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["detection_scores"]),
             helper.make_node("MatMul", ["mean", "wb"], ["flat_boxes"]),
             helper.make_node("Reshape", ["flat_boxes", "box_shape"], ["detection_boxes"]),
             helper.make_node("Greater", ["detection_scores", "half"], ["kept"]),
             helper.make_node("Cast", ["kept"], ["detection_classes"], to=TensorProto.INT32),
             helper.make_node("ReduceSum", ["detection_classes", "slot_axis"], ["num_detections"], keepdims=1)]
    outputs = [helper.make_tensor_value_info("num_detections", TensorProto.INT32, ["N", 1]),
               helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["N", 2, 4]),
               helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["N", 2]),
               helper.make_tensor_value_info("detection_classes", TensorProto.INT32, ["N", 2])]
    graph = helper.make_graph(nodes, "tiny_detector", [helper.make_tensor_value_info(
        "images", TensorProto.FLOAT, ["N", size, size, 3])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


class FakeError:
    def desc(self):
        return "Unsupported operator Foo"

    def node_name(self):
        return "/head/Foo_3"

    def node_operator(self):
        return "Foo"


CUDA_SUCCESS, CUDA_ERROR_MEMORY_ALLOCATION, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NO_DEVICE = 0, 2, 1, 100
ERROR_NAMES = {CUDA_ERROR_MEMORY_ALLOCATION: "cudaErrorMemoryAllocation", CUDA_ERROR_INVALID_VALUE: "cudaErrorInvalidValue",
               CUDA_ERROR_NO_DEVICE: "cudaErrorNoDevice"}
HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2


class FakeCudart(ModuleType):
    """cuda-python's ``cuda.bindings.runtime`` calls that effdet-rt makes: each returns ``(error, *values)``.

    Device and pinned host allocations are ctypes buffers; a copy checks that the device side of it lies inside one
    live device allocation (a bad pointer or an overrun is cudaErrorInvalidValue, as CUDA reports it)."""

    def __init__(self, devices: int = 1):
        super().__init__("cuda.bindings.runtime")
        self.devices = devices
        self.device: dict[int, ctypes.Array] = {}
        self.host: dict[int, ctypes.Array] = {}
        self.cudaError_t = SimpleNamespace(cudaSuccess=CUDA_SUCCESS)
        self.cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=HOST_TO_DEVICE,
                                              cudaMemcpyDeviceToHost=DEVICE_TO_HOST)
        self.streams = 0

    def cudaGetDeviceCount(self):
        return (CUDA_SUCCESS, self.devices) if self.devices else (CUDA_ERROR_NO_DEVICE, 0)

    def cudaGetErrorName(self, err):
        return CUDA_SUCCESS, ERROR_NAMES.get(err, f"cudaError{err}").encode()

    def _allocate(self, table, nbytes):
        if not self.devices or nbytes < 1:
            return CUDA_ERROR_MEMORY_ALLOCATION, 0
        buffer = ctypes.create_string_buffer(int(nbytes))
        table[ctypes.addressof(buffer)] = buffer
        return CUDA_SUCCESS, ctypes.addressof(buffer)

    def cudaMalloc(self, nbytes):
        return self._allocate(self.device, nbytes)

    def cudaMallocHost(self, nbytes):
        return self._allocate(self.host, nbytes)

    def cudaFree(self, ptr):
        return (CUDA_SUCCESS,) if self.device.pop(int(ptr), None) is not None else (CUDA_ERROR_INVALID_VALUE,)

    def cudaFreeHost(self, ptr):
        return (CUDA_SUCCESS,) if self.host.pop(int(ptr), None) is not None else (CUDA_ERROR_INVALID_VALUE,)

    def on_device(self, ptr: int, nbytes: int) -> bool:
        return any(start <= ptr and ptr + nbytes <= start + len(buffer) for start, buffer in self.device.items())

    def cudaMemcpy(self, dst, src, nbytes, kind):
        device = int(dst) if kind == HOST_TO_DEVICE else int(src)
        if kind not in (HOST_TO_DEVICE, DEVICE_TO_HOST) or not self.on_device(device, int(nbytes)):
            return (CUDA_ERROR_INVALID_VALUE,)
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return (CUDA_SUCCESS,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        return self.cudaMemcpy(dst, src, nbytes, kind)  # the fake runs every stream at once

    def cudaStreamCreate(self):
        self.streams += 1
        return CUDA_SUCCESS, 7000 + self.streams

    def cudaStreamSynchronize(self, stream):
        return (CUDA_SUCCESS,)

    def read(self, ptr: int, shape, dtype) -> np.ndarray:
        """A copy of device memory at ``ptr`` as an array (what a kernel would read)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if not self.on_device(int(ptr), nbytes):
            raise AssertionError(f"read of {nbytes} bytes at {ptr:#x}: not inside a device allocation")
        return np.frombuffer(ctypes.string_at(int(ptr), nbytes), dtype).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if not self.on_device(int(ptr), array.nbytes):
            raise AssertionError(f"write of {array.nbytes} bytes at {ptr:#x}: not inside a device allocation")
        ctypes.memmove(int(ptr), array.ctypes.data, array.nbytes)


def fake_cudart(devices: int = 1) -> FakeCudart:
    return FakeCudart(devices)


def install_fake_cuda(monkeypatch, cudart: FakeCudart) -> FakeCudart:
    """Make ``from cuda.bindings import runtime`` (cuda-python >= 12.6) give ``cudart``."""
    package, bindings = ModuleType("cuda"), ModuleType("cuda.bindings")
    package.bindings, bindings.runtime = bindings, cudart
    for name, module in (("cuda", package), ("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, module)
    return cudart


PLAN_MAGIC = b"FAKEPLAN\n"
ONNX_TO_NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.INT32: np.int32,
                 TensorProto.INT64: np.int64, TensorProto.BOOL: np.bool_}


def onnx_dims(value) -> list[int | str]:
    """A graph input's / output's dims: numbers, or the dim_param name (dynamic)."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def fake_tensorrt(version: str, input_shape=(-1, 64, 64, 3), parse_ok=True, cuda: FakeCudart | None = None):
    """``input_shape`` None: the network's input is the parsed ONNX's (as TensorRT's parser makes it), a dynamic dim
    -1; else every network has that input shape. With ``cuda`` the built plan can be deserialised and run."""
    calls: list[tuple] = []
    major = int(version.split(".")[0])
    trt = SimpleNamespace(__version__=version, calls=calls, calibration_batches=[], executed=[])

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
        def __init__(self):
            self.profiles = []
            self.flags = []
            self.calibration_shapes = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def add_optimization_profile(self, profile):
            calls.append(("profile", profile.shapes))
            self.profiles.append(profile.shapes)

        def create_timing_cache(self, data):
            calls.append(("timing_cache_in", bytes(data)))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))

        def set_flag(self, flag):
            calls.append(("flag", flag))
            self.flags.append(flag)

        if major < 11:
            int8_calibrator = None

            def set_calibration_profile(self, profile):
                calls.append(("calibration_profile", profile.shapes))
                self.calibration_shapes = profile.shapes

    class Network:
        def __init__(self):
            self.onnx = None  # the parsed model's bytes

        @property
        def num_inputs(self):
            if input_shape is not None or self.onnx is None:
                return 1
            return len(onnx.load_from_string(self.onnx).graph.input)

        def get_input(self, index):
            if input_shape is not None:
                return SimpleNamespace(name="images", shape=input_shape)
            value = onnx.load_from_string(self.onnx).graph.input[index]
            return SimpleNamespace(name=value.name, shape=tuple(d if isinstance(d, int) else -1
                                                                for d in onnx_dims(value)))

    class Parser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            calls.append(("parse", path))
            if parse_ok:
                with open(path, "rb") as f:
                    self.network.onnx = f.read()
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
            image = network.get_input(0)
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:  # what TensorRT does with a calibrator: cache first, else batches
                cache = calibrator.read_calibration_cache()
                if cache is None:
                    while (pointers := calibrator.get_batch([image.name])) is not None:
                        size = calibrator.get_batch_size()
                        calls.append(("calib_batch", size))
                        if cuda is not None:  # TensorRT reads batch size x the input's volume from the pointer
                            shape = (size, *image.shape[1:])
                            if config.calibration_shapes is not None:
                                assert config.calibration_shapes[1] == shape, (config.calibration_shapes, shape)
                            trt.calibration_batches.append(cuda.read(pointers[0], shape, np.float32))
                    calibrator.write_calibration_cache(b"CACHE")
                else:
                    calls.append(("calib_cache_read", cache))
            if cuda is None:
                return b"PLAN"
            profile = config.profiles[0][1:] if config.profiles else None
            header = {"tensorrt": version, "input": image.name, "shape": list(image.shape),
                      "profile": [list(s) for s in profile] if profile else None, "flags": config.flags}
            return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network.onnx

    add_fake_runtime(trt, cuda)
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


def add_fake_runtime(trt, cuda: FakeCudart | None) -> None:
    """TensorRT's runtime API over the fake plans (see the module docstring)."""
    calls = trt.calls
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT32="INT32", INT64="INT64", BOOL="BOOL")
    numpy_of = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
    trt.nptype = lambda dtype: numpy_of[dtype]
    type_of = {np.dtype(v): k for k, v in numpy_of.items()}

    class IOutputAllocator:  # the application overrides reallocate_output(_async) and notify_shape
        def __init__(self):
            pass

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return 0

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            pass

    class Engine:
        def __init__(self, header, model_bytes):
            import onnxruntime as ort

            model = onnx.load_from_string(model_bytes)
            self.header = header
            self.batch_name = onnx_dims(model.graph.input[0])[0]
            self.tensors = {header["input"]: ("INPUT", tuple(header["shape"]), "FLOAT")}
            for value in model.graph.output:
                dims = tuple(d if isinstance(d, int) else -1 for d in onnx_dims(value))
                self.tensors[value.name] = ("OUTPUT", dims,
                                            type_of[np.dtype(ONNX_TO_NUMPY[value.type.tensor_type.elem_type])])
            self.output_dims = {value.name: onnx_dims(value) for value in model.graph.output}
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

        @property
        def num_io_tensors(self):
            return len(self.tensors)

        def get_tensor_name(self, index):
            return list(self.tensors)[index]

        def get_tensor_mode(self, name):
            return self.tensors[name][0]

        def get_tensor_shape(self, name):
            return self.tensors[name][1]

        def get_tensor_dtype(self, name):
            return self.tensors[name][2]

        def get_tensor_profile_shape(self, name, index):
            if name != self.header["input"] or self.header["profile"] is None or index != 0:
                raise RuntimeError(f"no profile {index} for {name}")
            return [tuple(s) for s in self.header["profile"]]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.input_name = engine.header["input"]
            self.input_shape = tuple(engine.header["shape"])
            self.addresses: dict[str, int] = {}
            self.allocators: dict[str, object] = {}

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            declared = self.engine.tensors[self.input_name][1]
            profile = self.engine.header["profile"]
            low, high = (profile[0], profile[2]) if profile else (declared, declared)
            fits = name == self.input_name and len(shape) == len(declared) and all(
                lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True))
            if fits:
                self.input_shape = shape
            return fits

        def get_tensor_shape(self, name):
            if name == self.input_name:
                return self.input_shape
            dims = self.engine.output_dims[name]
            return tuple(d if isinstance(d, int) else self.input_shape[0] if d == self.engine.batch_name else -1
                         for d in dims)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)
            return True

        def set_output_allocator(self, name, allocator):
            if self.engine.tensors.get(name, ("INPUT",))[0] != "OUTPUT" or not isinstance(allocator, IOutputAllocator):
                return False
            self.allocators[name] = allocator
            return True

        def write_output(self, name, value, stream_handle):
            """Into the address set for ``name``, or (an output with an allocator, as TensorRT does for shapes known
            only after the run) into memory its allocator hands out for the size, then tell it the shape."""
            allocator = self.allocators.get(name)
            if allocator is None:
                cuda.write(self.addresses[name], value)
                return True
            calls.append(("reallocate_output", name, value.nbytes))
            ptr = allocator.reallocate_output_async(name, 0, value.nbytes, 256, stream_handle)
            if not ptr:
                return False
            cuda.write(int(ptr), value)
            allocator.notify_shape(name, tuple(value.shape))
            return True

        def execute_async_v3(self, stream_handle):
            images = cuda.read(self.addresses[self.input_name], self.input_shape, np.float32)
            names = [n for n in self.engine.tensors if n != self.input_name]
            outputs = self.engine.session.run(names, {self.input_name: images})
            calls.append(("execute", self.input_shape[0]))
            trt.executed.append(dict(zip(names, outputs, strict=True)))
            return all([self.write_output(name, value, stream_handle)
                        for name, value in zip(names, outputs, strict=True)])

    class Runtime:
        def __init__(self, logger):
            calls.append(("runtime",))

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if cuda is None or not data.startswith(PLAN_MAGIC):
                return None
            header_line, model_bytes = data[len(PLAN_MAGIC):].split(b"\n", 1)
            header = json.loads(header_line)
            if header["tensorrt"] != trt.__version__:  # plans are tied to the TensorRT version that built them
                return None
            return Engine(header, model_bytes)

    trt.IOutputAllocator = IOutputAllocator
    trt.Runtime = Runtime
