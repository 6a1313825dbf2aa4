"""Choose the backend and build an engine from the spec's build section: the library side of `effdet-rt build`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effdet_rt.backends import AUTO, backend_named
from effdet_rt.calib.batches import FIELD, calibration_batches
from effdet_rt.data.tfrecord import resolve_tfrecords
from effdet_rt.engines.registry import auto_candidates, backend_status, builder_module
from effdet_rt.engines.runtime.onnxruntime import read_onnx
from effdet_rt.errors import ModelFileError, UserError


def choose_backend(requested: str, log: Callable[[str], None], output: Path | None = None) -> str:
    """`--backend auto`: the first usable GPU backend of the table, else `choose_cpu_backend`."""
    if requested != AUTO:
        return backend_named(requested).name
    candidates = auto_candidates()
    gpu_reasons = []
    for backend in (b for b in candidates if b.device == "gpu"):
        usable, why = backend_status(backend)
        if usable:
            log(f"backend: {backend.name} ({why})")
            return backend.name
        gpu_reasons.append(f"{backend.title} not used: {why}")
    statuses = {b.name: backend_status(b) for b in candidates if b.device == "cpu"}
    return choose_cpu_backend(output, statuses, "; ".join(gpu_reasons) or "no GPU backend", log)


def choose_cpu_backend(output: Path | None, statuses: dict[str, tuple[bool, str]], no_gpu: str,
                       log: Callable[[str], None]) -> str:
    """The CPU backend for ``auto``, from (usable, why) of each candidate in the table's order (fastest first, see
    benchmarks/engine_latency.py): the one whose file type the output names, else the first usable one."""
    ranked = [b for b in auto_candidates() if b.name in statuses]
    usable = [b for b in ranked if statuses[b.name][0]]
    suffix = output.suffix.lower() if output else ""
    named = next((b for b in ranked if b.suffixes[0] == suffix), None)
    best = usable[0] if usable else ranked[-1]
    if named is not None and named is not best:
        faster = [b for b in usable if b.auto_rank < named.auto_rank]
        hint = f"; {faster[0].title}, the faster CPU runtime, would build an {faster[0].suffixes[0]}" if faster else ""
        log(f"backend: {named.name} (the output is an {suffix} file; {no_gpu}{hint})")
        return named.name  # an unusable one: its build says how to install it
    if best is ranked[0]:
        log(f"backend: {best.name} ({statuses[best.name][1]}: the fastest installed CPU runtime for this graph, "
            f"see benchmarks/engine_latency.py; {no_gpu})")
        return best.name
    skipped = "; ".join(f"{b.title} not used: {statuses[b.name][1]}" for b in ranked if b is not best)
    log(f"backend: {best.name} ({no_gpu}; {skipped})")
    return best.name


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
    batches) replaces build.calibration's TFRecords, for tasks that calibrate on other data (onnx/tasks.py: calib_data)."""
    model = Path(model)
    if not model.is_file():
        raise ModelFileError(f"{model}: model file not found; pass the ONNX file written by `effdet-rt export`")
    if not build.engine_file:
        raise UserError("no output file: pass -o engine.plan|engine.onnx (or set build.engine_file)")
    if build.data_type == AUTO:  # the measured choice builds and runs engines: effdet_rt.infer.autotune
        raise UserError("--precision auto is chosen by measurement: run `effdet-rt build --precision auto` "
                        "(effdet_rt.infer.autotune.build_fastest)")
    output = Path(build.engine_file)
    backend = backend_named(choose_backend(build.backend, log, output))
    if calib_only and backend.name != "tensorrt":
        raise UserError(f"--calib-only writes a TensorRT <= 10 calibration cache; {backend.title} builds have none: "
                        "drop --calib-only")
    input_size = onnx_input_size(model)
    calibration = calibration or calibration_source(build.calibration, input_size, log)
    return builder_module(backend).build(model, output, build, calibration=calibration, calib_only=calib_only, log=log)
