"""The ONNX Runtime backend: runs exported models (`--nms onnx` or raw heads with host NMS) on any CPU."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.engines.runtime.base import RunnerEngine
from effdet_rt.engines.runtime.runner import Runner
from effdet_rt.errors import ModelFileError
from effdet_rt.onnx.graph import read_metadata
from effdet_rt.onnx.names import OUTPUT_NAMES, RAW_OUTPUTS
from effdet_rt.onnx.tasks import task_of_metadata
from effdet_rt.utils.cpu import usable_cpus


def read_onnx(path: Path):
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / ValueError / OSError for foreign bytes
        raise ModelFileError(f"{path}: not an ONNX model ({exc.__class__.__name__}); pass a file written by `effdet-rt export`") from exc
    read_metadata(proto, str(path))  # a damaged metadata entry is named with the file here, before any use of it
    return proto


def read_detector_onnx(path: Path):
    """Load an ONNX file that must be an effdet-rt detector ONNX Runtime can run (the engine and `build` both ask)."""
    proto = read_onnx(path)
    outputs = tuple(o.name for o in proto.graph.output)
    if any(node.op_type == "EfficientNMS_TRT" for node in proto.graph.node):
        raise ModelFileError(
            f"{path}: this model uses TensorRT's EfficientNMS_TRT plugin, which ONNX Runtime cannot run; export with "
            "--nms onnx (or --nms none) for ONNX Runtime, or build a TensorRT engine from it (--backend tensorrt)"
        )
    if outputs not in (OUTPUT_NAMES, RAW_OUTPUTS):
        raise ModelFileError(
            f"{path}: outputs {list(outputs)} are not an effdet-rt detector's; expected {list(OUTPUT_NAMES)} "
            f"or {list(RAW_OUTPUTS)} (export with `effdet-rt export`)"
        )
    return proto


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cpus()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


# A dynamic-batch model runs a big batch as several smaller session runs. On a CPU a big batch buys no parallelism
# ONNX Runtime does not already get inside each convolution, and once its activations fall out of cache each image
# costs more. The budget is in activation bytes rather than images because INT8 activations are 4x smaller, so
# INT8 fits more images per run than FP32 at the same size; one budget suits FP32 and INT8 at 256 and 512 alike:
# about 2 MiB of input-sized activations per run (images x pixels x bytes; measurements in docs/int8-cpu.md).
MICRO_BATCH_ACTIVATION_BYTES = 2 * 512 * 512 * 4


def cpu_micro_batch(input_size: tuple[int, int], precision: str) -> int:
    activation_bytes = 1 if precision == "int8" else 4
    return max(1, MICRO_BATCH_ACTIVATION_BYTES // (input_size[0] * input_size[1] * activation_bytes))


class OnnxRuntimeRunner(Runner):
    """Any effdet-rt ONNX model, whatever its task, on the CPU; a dynamic-batch model runs big
    batches in micro-batches (see cpu_micro_batch)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, proto: Any = None, threads: int | None = None, micro_batch: int | None = None,
                 graph_level: Any = None):
        """``graph_level``: an ort.GraphOptimizationLevel other than every optimisation (what engines run)."""
        import onnxruntime as ort

        self.path = Path(path)
        proto = proto if proto is not None else read_onnx(self.path)
        self.metadata = read_metadata(proto)
        inputs = proto.graph.input
        if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
            raise ModelFileError(f"{self.path}: expected one NHWC image input named 'images'")
        dims = inputs[0].type.tensor_type.shape.dim
        self.input_name = inputs[0].name
        self.input_size = (int(dims[1].dim_value), int(dims[2].dim_value))
        self.static_batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") else None
        self.output_names = tuple(o.name for o in proto.graph.output)
        self.precision = self.metadata.get("precision", "fp32")
        self.micro_batch = max(1, micro_batch or cpu_micro_batch(self.input_size, self.precision))
        options = session_options(threads)
        if graph_level is not None:
            options.graph_optimization_level = graph_level
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load this model ({exc})") from exc

    def run_exact(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.static_batch or len(batch) <= self.micro_batch:
            return self._session_run(batch)
        step = self.micro_batch
        parts = [self._session_run(batch[i:i + step]) for i in range(0, len(batch), step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _session_run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: batch}), strict=True))


def open_runner(path: str | Path) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path)


class OnnxRuntimeEngine(RunnerEngine):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, micro_batch: int | None = None):
        path = Path(path)
        super().__init__(OnnxRuntimeRunner(path, read_detector_onnx(path), threads, micro_batch))
        self.micro_batch = self.runner.micro_batch

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "micro_batch": None if self.static_batch else self.micro_batch}


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(path)


def describe(path: str | Path) -> dict[str, Any]:
    """Inputs, outputs, opset, task and effdet-rt metadata of any ONNX model."""

    proto = read_onnx(Path(path))

    def tensors(values, io: str) -> list[dict[str, Any]]:
        out = []
        for value in values:
            t = value.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            import onnx

            out.append({"io": io, "name": value.name, "shape": shape,
                        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    meta = read_metadata(proto)
    return {
        "file": str(path),
        "format": "onnx",
        "task": task_of_metadata(meta, str(path)).name,
        "opset": [f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import],
        "precision": meta.get("precision", "fp32"),
        "tensors": tensors(proto.graph.input, "input") + tensors(proto.graph.output, "output"),
        "nodes": len(proto.graph.node),
        "ops": dict(Counter(node.op_type for node in proto.graph.node).most_common()),
        "metadata": meta,
    }
