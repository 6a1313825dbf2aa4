"""The one table of engine backends: what each is called, which files it reads and writes, which precisions it
builds, where it runs, and which modules build and run it.

Everything that names backends derives from this table: the spec's `build.backend` and `build.data_type` checks,
the CLI's `--backend` choices and help, build dispatch, `load(path)` for every task, `engine-info` and
`--backend auto`. A new backend is one module under `effdet_rt/engines/` and one row here.

The table is plain data so that spec validation (below engines/ in the layering) can read it; modules are named by
their dotted path and imported only by `effdet_rt.engines.registry`, the one place that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from effdet_rt.errors import ModelFileError, SpecError


@dataclass(frozen=True)
class Backend:
    name: str  # the --backend value and the `backend` every engine reports
    title: str  # how people write it
    suffixes: tuple[str, ...]  # files it opens; the first is what `build` writes
    precisions: tuple[str, ...]  # what `build --precision` (or `export --precision`) takes (empty: a checkpoint)
    device: str  # "cpu" or "gpu"
    runtime: str  # module with open_runner(path) -> Runner (and describe(path) for engine-info)
    builder: str | None = None  # module with build(model, output, build, calibration, calib_only, log) -> Path
    # module with export_detector(engine, output, export, calibration, metadata, log) -> bytes, for a format
    # converted from the checkpoint rather than built from the ONNX (`effdet-rt export -o` its suffix)
    exporter: str | None = None
    status: str | None = None  # "module:function" returning (usable, why); None: always usable
    install_hint: str = ""  # how to get it when `status` says it is missing
    auto_rank: int | None = None  # order `--backend auto` tries it in (lowest first); None: never chosen


BACKENDS: tuple[Backend, ...] = (
    Backend("checkpoint", "TensorFlow checkpoint", (".edrt",), (), "cpu",
            runtime="effdet_rt.engines.runtime.checkpoint"),
    Backend("tensorrt", "TensorRT", (".plan", ".engine"), ("fp32", "fp16", "int8"), "gpu",
            runtime="effdet_rt.engines.runtime.tensorrt", builder="effdet_rt.engines.build.tensorrt",
            status="effdet_rt.gpu.trt_common:tensorrt_status",
            install_hint="pip install tensorrt --extra-index-url https://pypi.nvidia.com and 'effdet-rt[trt]' "
                         "on a machine with an NVIDIA GPU",
            auto_rank=0),
    Backend("openvino", "OpenVINO", (".xml",), ("fp32", "bf16", "fp16", "int8"), "cpu",
            runtime="effdet_rt.engines.runtime.openvino", builder="effdet_rt.engines.build.openvino",
            status="effdet_rt.engines.runtime.openvino_common:openvino_status",
            install_hint="pip install 'effdet-rt[openvino]'", auto_rank=1),
    Backend("onnxruntime", "ONNX Runtime", (".onnx",), ("fp32", "int8"), "cpu",
            runtime="effdet_rt.engines.runtime.onnxruntime", builder="effdet_rt.engines.build.onnxruntime",
            auto_rank=2),
    Backend("litert", "LiteRT (TensorFlow Lite)", (".tflite",), ("fp32", "fp16", "int8"), "cpu",
            runtime="effdet_rt.engines.runtime.litert", exporter="effdet_rt.engines.build.litert",
            status="effdet_rt.engines.runtime.litert:litert_status",
            install_hint="pip install 'effdet-rt[litert]'"),
)

AUTO = "auto"


def backend_names(buildable: bool = False) -> tuple[str, ...]:
    return tuple(b.name for b in BACKENDS if b.builder or not buildable)


def all_precisions() -> tuple[str, ...]:
    """Every precision some backend builds, in table order (the spec's `build.data_type` choices)."""
    seen: dict[str, None] = {}
    for backend in BACKENDS:
        seen.update(dict.fromkeys(backend.precisions))
    return tuple(seen)


def backend_named(name: str) -> Backend:
    for backend in BACKENDS:
        if backend.name == name:
            return backend
    raise SpecError(f"build.backend '{name}' is not a backend; choose one of {', '.join((AUTO, *backend_names(True)))}")


def model_file_types() -> str:
    """'.edrt checkpoint, .plan/.engine (TensorRT), ...' for messages about which files a command opens."""
    return ", ".join(f"{'/'.join(b.suffixes)} ({b.title})" for b in BACKENDS)


def exporting_backend(path: str | Path) -> Backend | None:
    """The backend whose files `effdet-rt export` converts straight from the checkpoint (None: an ONNX export)."""
    suffix = Path(path).suffix.lower()
    return next((b for b in BACKENDS if b.exporter and suffix in b.suffixes), None)


def backend_for_file(path: str | Path) -> Backend:
    """The backend that opens ``path``, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    for backend in BACKENDS:
        if suffix in backend.suffixes:
            return backend
    raise ModelFileError(f"{path}: unknown model type '{Path(path).suffix}'; supported: {model_file_types()}")


def model_file_backend(path: str | Path) -> Backend:
    """The backend that opens the model file ``path``, chosen by its suffix; every task's `load` starts here, so a
    missing file gives one message whichever task's command opens it."""
    if not Path(path).is_file():
        raise ModelFileError(f"{path}: model file not found; pass a model file: {model_file_types()}")
    return backend_for_file(path)


def precision_help() -> str:
    """The `--precision` option's help, from the table."""
    return ("; ".join(f"{b.name}: {' | '.join(b.precisions)}" for b in BACKENDS if b.builder) + f"; {AUTO}: every "
            "engine this machine runs, timed in turns, the fastest that matches FP32 kept (build.auto).")


def backend_help() -> str:
    """The `--backend` option's help, from the table."""
    auto = " > ".join(b.name for b in sorted((b for b in BACKENDS if b.auto_rank is not None),
                                             key=lambda b: b.auto_rank))
    return (f"{' | '.join((AUTO, *backend_names(True)))} (auto: the first usable of {auto}; an output suffix "
            "names a backend too).")
