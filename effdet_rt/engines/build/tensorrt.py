"""Build a TensorRT engine from our ONNX export, for TensorRT <= 10 (builder flags) and 11 (strongly typed)."""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from effdet_rt.backends import backend_named
from effdet_rt.calib.tensorrt import make_calibrator
from effdet_rt.engines.runtime.tensorrt import engine_info_path
from effdet_rt.engines.runtime.trt_profile import BatchProfile, batch_profile
from effdet_rt.errors import ModelFileError, SpecError, UserError
from effdet_rt.gpu.trt_common import (
    build_path_name,
    import_tensorrt,
    load_plugins,
    major_version,
    make_logger,
)
from effdet_rt.onnx.fp16 import convert_to_fp16, has_qdq_nodes, load_onnx, op_types
from effdet_rt.onnx.graph import read_metadata
from effdet_rt.onnx.tasks import ModelTask, default_model_task, model_task
from effdet_rt.utils.atomic import atomic_write_bytes, atomic_write_text

PRECISIONS = backend_named("tensorrt").precisions
NMS_LAYER_MIN_VERSION = (8, 6)  # the ONNX parser maps NonMaxSuppression onto TensorRT's NMS layer
# TensorRT's TopK layer keeps at most this many elements (operator docs: k <= 1024 in 8.6, k <= 3840 in 10)
TOPK_MAX_K_TRT8, TOPK_MAX_K = 1024, 3840


@dataclass
class PrecisionPlan:
    """What the build does for a precision on a TensorRT version: flags to set, calibrator, FP16 conversion."""

    flags: list[str] = field(default_factory=list)
    calibrate: bool = False
    convert_fp16: bool = False
    note: str = ""


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit())


def largest_topk(model: Any) -> int:
    """The largest constant K of the model's TopK nodes (0 without any)."""
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                      if a.name == "value"})
    ks = [int(numpy_helper.to_array(constants[n.input[1]]).max()) for n in model.graph.node
          if n.op_type == "TopK" and len(n.input) > 1 and n.input[1] in constants]
    return max(ks, default=0)


def check_topk_fits(model: Any, onnx_path: Path, major: int, version: str) -> None:
    limit = TOPK_MAX_K if major >= 10 else TOPK_MAX_K_TRT8
    k = largest_topk(model)
    if k > limit:
        raise ModelFileError(
            f"{onnx_path}: a TopK keeps {k} elements, TensorRT {version} keeps at most {limit}; the --nms onnx graph "
            f"keeps the top {k} (anchor, class) pairs before NMS, as TensorFlow does: export with --nms efficient for TensorRT"
        )


def precision_plan(major: int, precision: str, *, qdq: bool, is_fp16_model: bool, calib_only: bool,
                   has_cache: bool, has_batches: bool, task: ModelTask | None = None) -> PrecisionPlan:
    """``task``: the model's task, which says how its calibration data is given (None: the default task)."""
    task = task or default_model_task()
    if precision not in PRECISIONS:
        raise SpecError(f"build.data_type '{precision}' is not one of {', '.join(PRECISIONS)}")
    if calib_only and (precision != "int8" or qdq or major >= 11):
        raise UserError(
            "calibration-only builds make a TensorRT <= 10 INT8 cache from an FP32 ONNX; "
            + ("TensorRT 11 has no calibrators: give it a Q/DQ ONNX instead" if major >= 11
               else "set build.data_type=int8 and pass the FP32 (not Q/DQ) model")
        )
    if major >= 11:
        if precision == "int8" and not qdq:
            data = task.calib_data
            raise ModelFileError(
                "INT8 on TensorRT 11 needs a Q/DQ ONNX (strongly typed networks take INT8 from "
                "QuantizeLinear/DequantizeLinear nodes); quantize the export with the ONNX Runtime INT8 "
                f"quantizer (`effdet-rt build --backend onnxruntime --precision int8 --int8-profile tensorrt {data} "
                "-o model_qdq.onnx`) and build from that model"
            )
        if precision == "fp16" and not is_fp16_model and not qdq:
            return PrecisionPlan(convert_fp16=True, note="converting the ONNX to FP16 (FP32 inputs/outputs)")
        return PrecisionPlan(note="precision comes from the ONNX model's types")
    if precision == "fp32":
        return PrecisionPlan()
    if precision == "fp16":
        return PrecisionPlan(flags=["FP16"])
    if qdq:
        return PrecisionPlan(flags=["INT8", "FP16"], note="explicit quantization from the Q/DQ nodes")
    if not has_cache and not has_batches:
        data = task.calib_advice
        raise UserError(
            f"INT8 calibration needs data: {data}, or point build.calibration.cache_file (--calib-cache) at an "
            "existing cache"
        )
    return PrecisionPlan(flags=["INT8", "FP16"], calibrate=True)


def is_fp16_onnx(model: Any) -> bool:
    from onnx import TensorProto

    return any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer)


def network_flags(trt: ModuleType, major: int) -> int:
    """Explicit batch is a flag only before TensorRT 10 (always on since; 11 is strongly typed by default)."""
    if major < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def parser_error_text(parser: Any) -> str:
    lines = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = _optional(error, "node_name") or f"#{_optional(error, 'node')}"
        operator = _optional(error, "node_operator") or "?"
        lines.append(f"node '{node}' ({operator}): {error.desc()}")
    return "; ".join(lines) or "no details from the parser"


def _optional(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    return fn() if callable(fn) else None


def parse_onnx(trt: ModuleType, builder: Any, logger: Any, onnx_path: Path, major: int) -> tuple[Any, Any]:
    network = builder.create_network(network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise ModelFileError(f"{onnx_path}: TensorRT cannot parse the model: {parser_error_text(parser)}")
    return network, parser


def input_tensor(network: Any, onnx_path: Path) -> Any:
    if network.num_inputs != 1:
        raise ModelFileError(f"{onnx_path}: expected one image input, found {network.num_inputs}")
    return network.get_input(0)


def add_profile(builder: Any, config: Any, name: str, shapes: BatchProfile) -> Any:
    profile = builder.create_optimization_profile()
    profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    return profile


def add_calibration_profile(builder: Any, config: Any, name: str, shapes: BatchProfile, batch: int) -> None:
    if not shapes.dynamic:
        if batch != shapes.max_batch:
            raise SpecError(
                f"build.calibration.batch_size={batch} but the model has a static batch of {shapes.max_batch}; "
                f"set build.calibration.batch_size={shapes.max_batch}"
            )
        return
    fixed = (batch, *shapes.opt[1:])
    profile = builder.create_optimization_profile()
    profile.set_shape(name, fixed, fixed, fixed)
    config.set_calibration_profile(profile)


def open_timing_cache(config: Any, path: str | None) -> Any:
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def peek_batches(calibration: Iterable[np.ndarray]) -> tuple[int, Iterable[np.ndarray]]:
    """(batch size of the first batch, the same batches again)."""
    iterator = iter(calibration)
    first = next(iterator, None)
    if first is None:
        raise UserError("calibration produced no batches; check build.calibration.tfrecords")
    return int(first.shape[0]), itertools.chain([first], iterator)


def build_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str,
    workspace_gb: float,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    timing_cache: str | None,
    calibration: Iterable[np.ndarray] | None,
    calib_cache: str | None,
    calib_only: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Build ``engine_path`` (a serialized plan) from ``onnx_path``; with ``calib_only`` write just the cache."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    model = load_onnx(onnx_path)
    if workspace_gb <= 0:
        raise SpecError(f"build.workspace_gb={workspace_gb} must be > 0")
    trt = import_tensorrt()
    major = major_version(trt)
    log(f"TensorRT {trt.__version__}: {build_path_name(major)}")
    ops = op_types(model)
    if "NonMaxSuppression" in ops and version_tuple(trt.__version__) < NMS_LAYER_MIN_VERSION:
        raise ModelFileError(
            f"{onnx_path}: NonMaxSuppression needs TensorRT >= 8.6; upgrade TensorRT or export with --nms efficient"
        )
    check_topk_fits(model, onnx_path, major, str(trt.__version__))
    has_cache = bool(calib_cache) and Path(calib_cache).is_file()
    plan = precision_plan(
        major, precision, qdq=has_qdq_nodes(model), is_fp16_model=is_fp16_onnx(model), calib_only=calib_only,
        has_cache=has_cache, has_batches=calibration is not None, task=model_task(model),
    )
    if plan.calibrate and not calib_cache:
        raise SpecError("INT8 calibration needs build.calibration.cache_file (--calib-cache: where the cache is "
                        "written)")
    if plan.note:
        log(f"precision {precision}: {plan.note}")
    with tempfile.TemporaryDirectory(prefix="effdet-trt-") as tmp:
        source = convert_to_fp16(onnx_path, Path(tmp) / "model_fp16.onnx") if plan.convert_fp16 else onnx_path
        serialized, shapes = _build(trt, major, source, plan, workspace_gb, (min_batch, opt_batch, max_batch),
                                    timing_cache, calibration, calib_cache, has_cache, log)
    if calib_only:
        log(f"calibration cache written to {calib_cache}; no engine written (calibration only)")
        return Path(calib_cache)
    atomic_write_bytes(engine_path, bytes(serialized))
    info: dict[str, Any] = {
        "precision": precision, "tensorrt": str(trt.__version__), "build_path": build_path_name(major),
        "onnx": str(onnx_path), "profile": {"min": list(shapes.min), "opt": list(shapes.opt),
                                            "max": list(shapes.max), "dynamic": shapes.dynamic},
    }
    metadata = read_metadata(model)
    if metadata:  # what the runtime and deepstream-config read (task, classes, image format...): no ONNX needed then
        info.update({"task": model_task(model).name, "metadata": {**metadata, "precision": precision}})
    atomic_write_text(engine_info_path(engine_path), json.dumps(info, indent=2) + "\n")
    log(f"wrote {engine_path} ({precision}, batch {shapes.min_batch}..{shapes.max_batch})")
    return engine_path


def _build(trt, major, onnx_path, plan, workspace_gb, batches, timing_cache, calibration, calib_cache,
           has_cache, log):
    logger = make_logger(trt)
    load_plugins(trt, logger)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path, major)
    image = input_tensor(network, onnx_path)
    shapes = batch_profile(tuple(image.shape), *batches, input_name=image.name)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if shapes.dynamic:
        add_profile(builder, config, image.name, shapes)
    cache = open_timing_cache(config, timing_cache)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    calibrator = None
    if plan.calibrate:

        if has_cache:
            calib_batch, calibration = shapes.opt[0], None  # the cache is used; no batches are read
        else:
            calib_batch, calibration = peek_batches(calibration)
        add_calibration_profile(builder, config, image.name, shapes, calib_batch)
        calibrator = make_calibrator(trt, calibration, calib_cache, calib_batch, log=log)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {onnx_path}; see the TensorRT messages above")
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    return serialized, shapes


def build(model: Path, output: Path, settings: Any, *, calibration: Callable[[], Iterable[np.ndarray]] | None,
          calib_only: bool, log: Callable[[str], None]) -> Path:
    """The backend table's entry point (effdet_rt/backends.py): the spec's build section -> this builder."""
    if output.suffix.lower() not in (".plan", ".engine"):
        raise UserError(f"{output}: a TensorRT engine is a .plan or .engine file; rename the output")
    return build_tensorrt_engine(
        model, output, precision=settings.data_type, workspace_gb=settings.workspace_gb,
        min_batch=settings.min_batch_size, opt_batch=settings.opt_batch_size, max_batch=settings.max_batch_size,
        timing_cache=settings.timing_cache or None, calibration=calibration() if calibration else None,
        calib_cache=settings.calibration.cache_file or None, calib_only=calib_only, log=log,
    )
