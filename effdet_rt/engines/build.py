"""Choose the backend and build an engine: the library side of `effdet-rt build`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.spec.overrides import first_given as _pick

BACKENDS = ("auto", "onnxruntime", "tensorrt", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildRequest:
    model: Path
    output: Path
    backend: str
    precision: str
    calib_tfrecords: tuple[str, ...]
    calib_batches: int
    calib_batch_size: int
    calib_cache: str | None
    calib_only: bool
    workspace_gb: float
    min_batch: int
    opt_batch: int
    max_batch: int
    timing_cache: str | None
    int8_profile: str = "onnxruntime"

    @classmethod
    def from_spec(cls, spec: Any, *, model: Path, output: Path | None, **given: Any) -> BuildRequest:
        b = spec.build
        c = b.calibration
        engine_file = output or (Path(b.engine_file) if b.engine_file else None)
        if engine_file is None:
            raise UserError("no output file: pass -o engine.plan|engine.onnx|engine.xml (or set build.engine_file)")
        request = cls(
            model=Path(model),
            output=Path(engine_file),
            backend=_pick(given.get("backend"), b.backend),
            precision=_pick(given.get("precision"), b.data_type),
            calib_tfrecords=tuple(given.get("calib_tfrecords") or c.tfrecords),
            calib_batches=int(_pick(given.get("calib_batches"), c.batches)),
            calib_batch_size=int(_pick(given.get("calib_batch_size"), c.batch_size)),
            calib_cache=_pick(given.get("calib_cache"), c.cache_file) or None,
            calib_only=bool(given.get("calib_only")),
            workspace_gb=float(_pick(given.get("workspace_gb"), b.workspace_gb)),
            min_batch=int(_pick(given.get("min_batch"), b.min_batch_size)),
            opt_batch=int(_pick(given.get("opt_batch"), b.opt_batch_size)),
            max_batch=int(_pick(given.get("max_batch"), b.max_batch_size)),
            timing_cache=_pick(given.get("timing_cache"), b.timing_cache) or None,
            int8_profile=given.get("int8_profile") or "onnxruntime",
        )
        request.check()
        return request

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"--backend {self.backend} is not allowed: choose one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision} is not allowed: choose one of {', '.join(PRECISIONS)}")
        if not self.model.is_file():
            raise ModelFileError(f"{self.model}: model file not found; pass the ONNX file written by `effdet-rt export`")
        if self.int8_profile not in ("onnxruntime", "tensorrt"):
            raise UserError(f"--int8-profile {self.int8_profile} is not allowed: choose onnxruntime or tensorrt")
        if self.calib_batches < 1 or self.calib_batch_size < 1:
            raise UserError("--calib-batches and --calib-batch-size must be positive integers")


def choose_backend(requested: str, log: Callable[[str], None], output: Path | None = None) -> str:
    from effdet_rt.engines.trt_common import tensorrt_status

    if requested != "auto":
        return requested
    usable, why = tensorrt_status()
    if usable:
        log(f"backend: tensorrt ({why})")
        return "tensorrt"
    from effdet_rt.engines.openvino_common import openvino_status

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


def calibration_source(request: BuildRequest, input_size: tuple[int, int], log: Callable[[str], None]):
    """A callable giving fresh calibration batches, or None when no TFRecords were named."""
    if not request.calib_tfrecords:
        return None
    from effdet_rt.calib.batches import calibration_batches, resolve_tfrecords

    resolve_tfrecords(request.calib_tfrecords)  # a glob that matches nothing fails before any work

    def batches():
        return calibration_batches(request.calib_tfrecords, input_size, request.calib_batch_size, request.calib_batches, log=log)

    return batches


def onnx_input_size(path: Path) -> tuple[int, int]:
    from effdet_rt.engines.ort_engine import read_onnx

    dims = read_onnx(path).graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelFileError(f"{path}: expected an NHWC image input")
    return int(dims[1].dim_value), int(dims[2].dim_value)


def build_engine(request: BuildRequest, log: Callable[[str], None] = print) -> Path:
    backend = choose_backend(request.backend, log, request.output)
    input_size = onnx_input_size(request.model)
    calibration = calibration_source(request, input_size, log)
    if backend == "openvino":
        from effdet_rt.engines.openvino_build import build_openvino_engine

        return build_openvino_engine(request.model, request.output, precision=request.precision,
                                     calibration=calibration, log=log)
    if backend == "onnxruntime":
        from effdet_rt.engines.ort_build import build_onnxruntime_engine

        return build_onnxruntime_engine(request.model, request.output, precision=request.precision,
                                        calibration=calibration, int8_profile=request.int8_profile, log=log)
    from effdet_rt.engines.tensorrt import build_tensorrt_engine

    if request.output.suffix.lower() not in (".plan", ".engine"):
        raise UserError(f"{request.output}: a TensorRT engine is a .plan or .engine file; rename the output")
    return build_tensorrt_engine(
        request.model, request.output, precision=request.precision, workspace_gb=request.workspace_gb,
        min_batch=request.min_batch, opt_batch=request.opt_batch, max_batch=request.max_batch,
        timing_cache=request.timing_cache, calibration=calibration() if calibration else None,
        calib_cache=request.calib_cache, calib_only=request.calib_only, log=log,
    )
