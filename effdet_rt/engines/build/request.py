"""Choose the backend and build an engine from the spec's build section: the library side of `effdet-rt build`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effdet_rt.calib.batches import FIELD, calibration_batches
from effdet_rt.data.tfrecord import resolve_tfrecords
from effdet_rt.engines.build.onnxruntime import build_onnxruntime_engine
from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
from effdet_rt.engines.runtime.onnxruntime import read_onnx
from effdet_rt.engines.runtime.openvino_common import openvino_status
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.gpu.trt_common import tensorrt_status


def choose_backend(requested: str, log: Callable[[str], None], output: Path | None = None) -> str:
    if requested != "auto":
        return requested
    usable, why = tensorrt_status()
    if usable:
        log(f"backend: tensorrt ({why})")
        return "tensorrt"
    return choose_cpu_backend(output, openvino_status(), f"TensorRT not used: {why}", log)


def choose_cpu_backend(output: Path | None, openvino: tuple[bool, str], no_gpu: str, log: Callable[[str], None]) -> str:
    """OpenVINO when it is installed (the faster CPU runtime for our exported graph, see benchmarks/engine_latency.py),
    else ONNX Runtime; an output named *.onnx or *.xml asks for one of them by its file type."""
    openvino_usable, openvino_why = openvino
    suffix = output.suffix.lower() if output else ""
    if suffix == ".onnx":
        hint = "; OpenVINO, the faster CPU runtime, would build an .xml" if openvino_usable else ""
        log(f"backend: onnxruntime (the output is an .onnx file; {no_gpu}{hint})")
        return "onnxruntime"
    if suffix == ".xml" and not openvino_usable:
        log(f"backend: openvino (the output is an .xml file; {no_gpu})")
        return "openvino"  # the build then says how to install it
    if openvino_usable:
        log(f"backend: openvino ({openvino_why}: the fastest installed CPU runtime for this graph, "
            f"see benchmarks/engine_latency.py; {no_gpu})")
        return "openvino"
    log(f"backend: onnxruntime ({no_gpu}; OpenVINO not used: {openvino_why})")
    return "onnxruntime"


def calibration_source(calibration: Any, input_size: tuple[int, int], log: Callable[[str], None]):
    """A callable giving fresh calibration batches (build.calibration), or None when no TFRecords were named."""
    if not calibration.tfrecords:
        return None

    resolve_tfrecords(calibration.tfrecords, FIELD)  # a glob that matches nothing fails before any work

    def batches():
        return calibration_batches(calibration.tfrecords, input_size, calibration.batch_size, calibration.batches, log=log)

    return batches


def onnx_input_size(path: Path) -> tuple[int, int]:
    dims = read_onnx(path).graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelFileError(f"{path}: expected an NHWC image input")
    return int(dims[1].dim_value), int(dims[2].dim_value)


def build_engine(model: str | Path, build: Any, *, calib_only: bool = False, calibration: Any = None,
                 log: Callable[[str], None] = print) -> Path:
    """Build ``model`` (an exported ONNX) into ``build.engine_file`` as the spec's build section says.

    ``calib_only`` (TensorRT <= 10) writes only the calibration cache. ``calibration`` (a callable giving fresh
    batches) replaces build.calibration's TFRecords, for models that calibrate on other data (a classifier)."""
    model = Path(model)
    if not model.is_file():
        raise ModelFileError(f"{model}: model file not found; pass the ONNX file written by `effdet-rt export`")
    if not build.engine_file:
        raise UserError("no output file: pass -o engine.plan|engine.onnx (or set build.engine_file)")
    output = Path(build.engine_file)
    backend = choose_backend(build.backend, log, output)
    input_size = onnx_input_size(model)
    calibration = calibration or calibration_source(build.calibration, input_size, log)
    if backend == "openvino":
        from effdet_rt.engines.build.openvino import build_openvino_engine

        return build_openvino_engine(model, output, precision=build.data_type, calibration=calibration, log=log)
    if backend == "onnxruntime":

        return build_onnxruntime_engine(model, output, precision=build.data_type,
                                        calibration=calibration, int8_profile=build.int8_profile, log=log)

    if output.suffix.lower() not in (".plan", ".engine"):
        raise UserError(f"{output}: a TensorRT engine is a .plan or .engine file; rename the output")
    return build_tensorrt_engine(
        model, output, precision=build.data_type, workspace_gb=build.workspace_gb,
        min_batch=build.min_batch_size, opt_batch=build.opt_batch_size, max_batch=build.max_batch_size,
        timing_cache=build.timing_cache or None, calibration=calibration() if calibration else None,
        calib_cache=build.calibration.cache_file or None, calib_only=calib_only, log=log,
    )
