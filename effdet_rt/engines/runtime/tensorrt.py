"""TensorRT backend: run serialized plans (.plan/.engine) through the Engine interface.

Building plans lives in effdet_rt.engines.build.tensorrt, above this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.detections import Detections, category_ids
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.engines.runtime.trt_common import (
    DeviceBuffer,
    PinnedArray,
    check,
    copy_to_device,
    copy_to_host,
    import_cudart,
    import_tensorrt,
    load_plugins,
    make_logger,
    tensorrt_status,
)
from effdet_rt.engines.runtime.trt_profile import batch_chunks
from effdet_rt.errors import ModelFileError
from effdet_rt.onnx.names import (
    DETECTION_BOXES,
    DETECTION_CLASSES,
    DETECTION_SCORES,
    NUM_DETECTIONS,
    OUTPUT_NAMES,
)

__all__ = ["TensorRTEngine", "describe_plan", "engine_info_path", "load_engine", "tensorrt_status"]


def engine_info_path(engine_path: str | Path) -> Path:
    """The JSON written beside an engine with what the plan itself does not record (precision, ONNX source)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype


def detections_from_outputs(outputs: dict[str, np.ndarray], count: int) -> Detections:
    """The first ``count`` images of raw NMS outputs -> Detections (0-based class indices -> category ids).

    Slots past each image's num_detections are zeroed so nothing invalid leaks out.
    """
    boxes = np.asarray(outputs[DETECTION_BOXES], np.float32)[:count].copy()
    scores = np.asarray(outputs[DETECTION_SCORES], np.float32)[:count].copy()
    classes = category_ids(np.asarray(outputs[DETECTION_CLASSES])[:count].astype(np.int32))
    slots = scores.shape[1]
    num = np.clip(np.asarray(outputs[NUM_DETECTIONS]).reshape(-1)[:count].astype(np.int32), 0, slots)
    valid = np.arange(slots)[None, :] < num[:, None]
    boxes[~valid] = 0.0
    scores[~valid] = 0.0
    classes[~valid] = 0
    return Detections(boxes, scores, classes, num)


def read_engine_info(engine_path: str | Path) -> dict[str, Any]:
    path = engine_info_path(engine_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def deserialize(trt: Any, path: Path) -> Any:
    logger = make_logger(trt)
    load_plugins(trt, logger)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ModelFileError(
            f"{path}: TensorRT {trt.__version__} cannot load this plan (built by another TensorRT version or "
            "for another GPU, or not a plan); rebuild it with `effdet-rt build` on this machine"
        )
    return runtime, engine


def io_tensors(trt: Any, engine: Any) -> list[TensorSpec]:
    specs = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        specs.append(TensorSpec(
            name=name,
            is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
            dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
        ))
    return specs


def input_profile(engine: Any, spec: TensorSpec) -> tuple[tuple[int, ...], ...]:
    if spec.shape[0] > 0:
        return (spec.shape,) * 3
    return tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(spec.name, 0))


def _require(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: engine file not found; build one with `effdet-rt build`")
    return path


def describe_plan(path: str | Path) -> dict[str, Any]:
    """Bindings, shapes, dtypes, profile, precision and TensorRT version of a plan file."""
    path = _require(Path(path))
    trt = import_tensorrt()
    _runtime, engine = deserialize(trt, path)
    tensors = io_tensors(trt, engine)
    info = read_engine_info(path)
    profiles = {t.name: dict(zip(("min", "opt", "max"), map(list, input_profile(engine, t)), strict=True))
                for t in tensors if t.is_input}
    return {
        "file": str(path),
        "tensorrt": str(trt.__version__),
        "built_with": info.get("tensorrt", "unknown"),
        "precision": info.get("precision", "unknown (no .json beside the plan)"),
        "tensors": [{"name": t.name, "io": "input" if t.is_input else "output", "shape": list(t.shape),
                     "dtype": t.dtype.name} for t in tensors],
        "profile": profiles,
    }


def output_allocator_class(base: type) -> type:
    """An IOutputAllocator for outputs whose shape depends on the data (NonMaxSuppression exports)."""

    class GrowingOutputAllocator(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.buffers: dict[str, DeviceBuffer] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            buffer = self.buffers.get(tensor_name)
            if buffer is None or buffer.nbytes < size:
                buffer = DeviceBuffer(size)
                self.buffers[tensor_name] = buffer
            return buffer.ptr

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):  # noqa: ANN001
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return GrowingOutputAllocator


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, path: str | Path):
        self.path = _require(Path(path))
        self.trt = trt = import_tensorrt()
        self._runtime, self.engine = deserialize(trt, self.path)
        self.context = self.engine.create_execution_context()
        tensors = io_tensors(trt, self.engine)
        inputs = [t for t in tensors if t.is_input]
        self.outputs = [t for t in tensors if not t.is_input]
        missing = sorted(set(OUTPUT_NAMES) - {t.name for t in self.outputs})
        if len(inputs) != 1 or missing:
            raise ModelFileError(
                f"{self.path}: expected one image input and outputs {', '.join(OUTPUT_NAMES)} "
                f"(missing: {', '.join(missing) or 'none'}); export with --nms efficient or --nms onnx"
            )
        self.input = inputs[0]
        low, _opt, high = input_profile(self.engine, self.input)
        self.min_batch, self.max_batch_size = low[0], high[0]
        self.input_size = (high[1], high[2])
        self.precision = read_engine_info(self.path).get("precision", "unknown")
        self._cudart = import_cudart()
        self._stream = check(self._cudart.cudaStreamCreate())
        self._allocate(high)

    def _allocate(self, max_input: tuple[int, ...]) -> None:
        self._host_in = PinnedArray(max_input, np.float32)
        self._device_in = DeviceBuffer(self._host_in.array.nbytes)
        self.context.set_input_shape(self.input.name, max_input)
        self._host_out: dict[str, PinnedArray] = {}
        self._device_out: dict[str, DeviceBuffer] = {}
        self._allocator = None
        for spec in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                if self._allocator is None:
                    self._allocator = output_allocator_class(self.trt.IOutputAllocator)()
                self.context.set_output_allocator(spec.name, self._allocator)
                continue
            self._host_out[spec.name] = PinnedArray((int(np.prod(shape)),), spec.dtype)
            self._device_out[spec.name] = DeviceBuffer(self._host_out[spec.name].array.nbytes)
            self.context.set_tensor_address(spec.name, self._device_out[spec.name].ptr)
        self.context.set_tensor_address(self.input.name, self._device_in.ptr)

    def run(self, batch: np.ndarray) -> Detections:
        batch = np.asarray(batch, np.float32)
        parts = [self._run_chunk(batch[start:stop], padded)
                 for start, stop, padded in batch_chunks(len(batch), self.min_batch, self.max_batch_size)]
        return Detections.concat(parts)

    def _run_chunk(self, images: np.ndarray, padded: int) -> Detections:
        count = len(images)
        host = self._host_in.array[:padded]
        host[:count] = images
        host[count:] = 0.0
        self.context.set_input_shape(self.input.name, host.shape)
        copy_to_device(self._device_in.ptr, host, self._stream)
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"{self.path}: TensorRT execution failed (see the messages above)")
        outputs = {}
        for spec in self.outputs:
            if spec.name in self._host_out:
                shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
                view = self._host_out[spec.name].array[: int(np.prod(shape))].reshape(shape)
                copy_to_host(view, self._device_out[spec.name].ptr, self._stream)
                outputs[spec.name] = view
        check(self._cudart.cudaStreamSynchronize(self._stream))
        for spec in self.outputs:
            if spec.name not in outputs and spec.name in OUTPUT_NAMES:
                shape = self._allocator.shapes[spec.name]
                array = np.empty(shape, spec.dtype)
                copy_to_host(array, self._allocator.buffers[spec.name].ptr, self._stream)
                outputs[spec.name] = array
        check(self._cudart.cudaStreamSynchronize(self._stream))
        return detections_from_outputs(outputs, count)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"file": str(self.path), "tensorrt": str(self.trt.__version__),
                     "batch": [self.min_batch, self.max_batch_size]})
        return info


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> Engine:
    return TensorRTEngine(path)
