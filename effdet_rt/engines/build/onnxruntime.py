"""`build --backend onnxruntime`: an FP32 model with graph optimisations saved, or an INT8 Q/DQ model."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.calib.quantize import quantize_int8, uses_efficient_nms
from effdet_rt.engines.runtime.onnxruntime import read_detector_onnx, read_onnx
from effdet_rt.errors import UserError
from effdet_rt.onnx.fp16 import has_qdq_nodes
from effdet_rt.onnx.graph import read_metadata, rewrite_model, set_metadata
from effdet_rt.onnx.ort_layout import prepare_blocked_layout
from effdet_rt.onnx.tasks import model_task
from effdet_rt.utils.atomic import atomic_path


def read_buildable_onnx(path: Path):
    """An ONNX model ONNX Runtime can build: a detector's must carry its outputs (its task says so)."""
    proto = read_onnx(path)
    return read_detector_onnx(path) if model_task(proto).raw_heads else proto


def optimize_fp32(onnx_path: Path, output: Path, channel_scales: bool = True) -> Path:
    """Save ONNX Runtime's portable (extended-level) graph optimisations, keeping our metadata.

    With ``channel_scales``, BiFPN's weighted Sums are first rewritten for ONNX Runtime's blocked CPU layout (see
    `effdet_rt.onnx.ort_layout`); a Q/DQ model keeps its Muls, which its quantized kernels run.
    """
    import onnx
    import onnxruntime as ort


    source = read_buildable_onnx(onnx_path)
    model = source
    if channel_scales and model_task(source).ort_channel_scales:

        model = rewrite_model(source, lambda graph: any(prepare_blocked_layout(graph).values()))
    with atomic_path(output) as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(tmp)
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(str(tmp))
        meta = read_metadata(source)
        meta.update({"precision": "fp32", "ort_optimized": "extended"})
        set_metadata(optimized, meta)
        onnx.save(optimized, str(tmp))
    return output


def keep_quantized_model(onnx_path: Path, output: Path, log: Callable[[str], None]) -> Path:
    """An ONNX model that already has Q/DQ nodes (a QAT export) is INT8 as it is: optimise it, do not re-quantize."""
    import tempfile

    import onnx


    with tempfile.TemporaryDirectory(prefix="effdet-qdq-") as work, atomic_path(output) as tmp:
        model = onnx.load(str(optimize_fp32(onnx_path, Path(work) / "optimized.onnx", channel_scales=False)))
        meta = read_metadata(model)
        meta.update({"precision": "int8", "int8_source": "qdq in the input model (quantization-aware training)"})
        set_metadata(model, meta)
        onnx.save(model, str(tmp))
    log(f"{onnx_path} already holds QuantizeLinear/DequantizeLinear nodes (a QAT export): calibration skipped, "
        f"the model's own INT8 scales are kept -> {output}")
    return output


def build_onnxruntime_engine(
    onnx_path: str | Path,
    output: str | Path,
    *,
    precision: str,
    calibration: Callable[[], Iterable[np.ndarray]] | None = None,
    int8_profile: str = "onnxruntime",
    log: Callable[[str], None] = print,
) -> Path:
    onnx_path, output = Path(onnx_path), Path(output)
    if output.suffix.lower() != ".onnx":
        raise UserError(f"{output}: an ONNX Runtime engine is an .onnx file; name the output *.onnx")
    if output.resolve() == onnx_path.resolve():
        raise UserError(f"{output}: the output would overwrite the input model; choose another -o")
    if precision == "fp32":
        optimize_fp32(onnx_path, output)
        log(f"ONNX Runtime FP32 engine (extended graph optimisations) -> {output}")
        return output
    if precision == "int8":

        if int8_profile == "tensorrt" and uses_efficient_nms(read_onnx(onnx_path)):  # Q/DQ for TensorRT 11
            if calibration is None:
                raise UserError("int8 needs calibration data: pass --calib-tfrecords GLOB (or build.calibration.tfrecords)")
            return quantize_int8(onnx_path, output, calibration(), log=log, profile=int8_profile)
        if has_qdq_nodes(read_buildable_onnx(onnx_path)):
            return keep_quantized_model(onnx_path, output, log)
        if calibration is None:
            task = model_task(read_onnx(onnx_path))
            raise UserError(f"int8 needs calibration data: pass {task.calib_data} (for a {task.noun}: e.g. its "
                            "training data)")
        return quantize_int8(onnx_path, output, calibration(), log=log, profile=int8_profile)
    raise UserError(
        f"--precision {precision} is not available with ONNX Runtime on CPU: choose fp32 or int8 "
        "(fp16 engines need --backend tensorrt)"
    )


def write_metadata(built: Path, output: Path, values: dict[str, Any]) -> None:
    """The engine ``built`` saved as ``output`` with ``values`` added to its metadata."""
    import onnx

    model = onnx.load(str(built))
    set_metadata(model, {**read_metadata(model), **values})
    with atomic_path(output) as tmp:
        onnx.save(model, str(tmp))


def build(model: Path, output: Path, settings: Any, *, calibration: Callable[[], Iterable[np.ndarray]] | None,
          calib_only: bool, log: Callable[[str], None]) -> Path:
    """The backend table's entry point (effdet_rt/backends.py): the spec's build section -> this builder."""
    return build_onnxruntime_engine(model, output, precision=settings.data_type, calibration=calibration,
                                    int8_profile=settings.int8_profile, log=log)
