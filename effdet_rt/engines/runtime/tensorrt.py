"""TensorRT backend: run serialized plans (.plan/.engine) through the Engine interface.

Building plans lives in effdet_rt.engines.build.tensorrt, above this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.engines.runtime.base import Engine, RunnerEngine, detections_from_outputs  # noqa: F401 - re-exported
from effdet_rt.engines.runtime.runner import Runner
from effdet_rt.engines.runtime.trt_profile import batch_chunks
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.gpu.trt_common import (
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
from effdet_rt.onnx.names import OUTPUT_NAMES
from effdet_rt.onnx.tasks import ModelTask, default_model_task, task_of_metadata

__all__ = ["PlanRunner", "PlanSession", "TensorRTEngine", "describe", "engine_info_path", "load_engine", "open_runner",
           "plan_metadata", "tensorrt_status"]


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


def read_engine_info(engine_path: str | Path) -> dict[str, Any]:
    path = engine_info_path(engine_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def plan_metadata(engine_path: str | Path) -> dict[str, Any]:
    """The effdet_rt metadata of the ONNX a plan was built from ({} for a detector's plan built without it).

    `effdet-rt build` copies it into the JSON beside the plan, so the plan runs without its ONNX; for a plan built
    before that copy existed, the metadata of the ONNX the JSON names is read instead."""
    info = read_engine_info(engine_path)
    if isinstance(info.get("metadata"), dict):
        return info["metadata"]
    source = info.get("onnx")
    if source and Path(source).is_file():
        from effdet_rt.engines.runtime.onnxruntime import read_onnx
        from effdet_rt.onnx.graph import read_metadata

        return read_metadata(read_onnx(Path(source)))
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


def describe(path: str | Path) -> dict[str, Any]:
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
        **task_entry(task_of_metadata(plan_metadata(path), str(path))),
    }


def task_entry(task: ModelTask) -> dict[str, str]:
    """engine-info names the task of every plan but the default task's (a detector's, as it always has)."""
    return {} if task is default_model_task() else {"task": task.name}


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


class PlanSession:
    """A plan with one input, ready to run: execution context, pinned host and device buffers for the profile's
    largest batch, a CUDA stream. Every task's plans run through it (PlanRunner), so the buffer and execution code
    exists once."""

    def __init__(self, path: str | Path):
        self.path = _require(Path(path))
        usable, why = tensorrt_status()
        if not usable:  # one clear message instead of a CUDA error from deep inside deserialisation
            raise UserError(f"{self.path}: cannot run a TensorRT plan here: {why}")
        self.trt = trt = import_tensorrt()
        self._runtime, self.engine = deserialize(trt, self.path)
        self.context = self.engine.create_execution_context()
        tensors = io_tensors(trt, self.engine)
        inputs = [t for t in tensors if t.is_input]
        self.outputs = [t for t in tensors if not t.is_input]
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one image input, found {len(inputs)}")
        self.input = inputs[0]
        low, _opt, high = input_profile(self.engine, self.input)
        self.min_batch, self.max_batch = low[0], high[0]
        self.input_shape = high  # (max batch, H, W, C)
        self.info = read_engine_info(self.path)
        self._cudart = import_cudart()
        self._stream = check(self._cudart.cudaStreamCreate())
        self._allocate(high)

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(self.input.name, shape):
            raise RuntimeError(f"{self.path}: TensorRT refused input shape {list(shape)} for '{self.input.name}' "
                               f"(profile batch {self.min_batch}..{self.max_batch})")

    def _allocate(self, max_input: tuple[int, ...]) -> None:
        self._host_in = PinnedArray(max_input, self.input.dtype)
        self._device_in = DeviceBuffer(self._host_in.array.nbytes)
        self._set_input_shape(max_input)
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

    def run(self, batch: np.ndarray) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Run ``batch`` in the runs the profile allows; yields (images in the run, every output of the run).

        Outputs keep the run's batch padding (a run below the profile's minimum batch is padded with zeros)."""
        batch = np.asarray(batch, self.input.dtype)
        for start, stop, padded in batch_chunks(len(batch), self.min_batch, self.max_batch):
            yield stop - start, self._run_chunk(batch[start:stop], padded)

    def _run_chunk(self, images: np.ndarray, padded: int) -> dict[str, np.ndarray]:
        count = len(images)
        host = self._host_in.array[:padded]
        host[:count] = images
        host[count:] = 0
        self._set_input_shape(host.shape)
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
            if spec.name not in outputs:  # data-dependent shape: known once the run has finished
                array = np.empty(self._allocator.shapes[spec.name], spec.dtype)
                copy_to_host(array, self._allocator.buffers[spec.name].ptr, self._stream)
                outputs[spec.name] = array
        check(self._cudart.cudaStreamSynchronize(self._stream))
        # the pinned buffers are reused by the next run
        return {name: np.array(value) for name, value in outputs.items()}


class PlanRunner(Runner):
    """A plan's runner: the profile's batch limits are kept by PlanSession, which splits and pads on its own."""

    backend = "tensorrt"

    def __init__(self, path: str | Path):
        self.plan = PlanSession(path)
        self.path, self.trt = self.plan.path, self.plan.trt
        self.metadata = plan_metadata(self.path)
        self.input_size = tuple(self.plan.input_shape[1:3])
        self.output_names = tuple(self.plan.output_names)
        self.precision = self.plan.info.get("precision", self.metadata.get("precision", "unknown"))

    def run_exact(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        parts = [{name: value[:count] for name, value in outputs.items()} for count, outputs in self.plan.run(batch)]
        if not parts:
            return {name: np.zeros((0,), np.float32) for name in self.output_names}
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def open_runner(path: str | Path) -> PlanRunner:
    return PlanRunner(path)


class TensorRTEngine(RunnerEngine):
    backend = "tensorrt"

    def __init__(self, path: str | Path):
        runner = PlanRunner(path)
        missing = sorted(set(OUTPUT_NAMES) - set(runner.output_names))
        if missing:
            task = task_of_metadata(runner.metadata, str(runner.path))
            hint = (f"it is a {task.noun}'s plan: run it with `{task.command} evaluate|inference`"
                    if task is not default_model_task() else "export with --nms efficient or --nms onnx")
            raise ModelFileError(f"{runner.path}: expected outputs {', '.join(OUTPUT_NAMES)} "
                                 f"(missing: {', '.join(missing)}); {hint}")
        super().__init__(runner)
        self.plan, self.trt = runner.plan, runner.trt
        self.min_batch, self.max_batch_size = self.plan.min_batch, self.plan.max_batch

    def describe(self) -> dict[str, Any]:
        info = Engine.describe(self)
        info.update({"file": str(self.path), "tensorrt": str(self.trt.__version__),
                     "batch": [self.min_batch, self.max_batch_size]})
        return info


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> Engine:
    return TensorRTEngine(path)
