"""The OpenVINO backend: runs IR built by `effdet-rt build --backend openvino` (NMS inside, or raw heads) on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.engines.runtime.base import RunnerEngine
from effdet_rt.engines.runtime.openvino_common import (
    check_ir_pair,
    import_openvino,
    read_rt_metadata,
    weights_file,
)
from effdet_rt.engines.runtime.runner import Runner
from effdet_rt.errors import ModelFileError, UserError
from effdet_rt.onnx.names import OUTPUT_NAMES, RAW_OUTPUTS
from effdet_rt.utils.cpu import usable_cpus


def compute_precision(ov: Any, core: Any, precision: str) -> Any:
    """The float type OpenVINO computes in. FP32 and INT8 builds compute in f32 whatever the CPU: OpenVINO's own
    default on CPUs with BF16 (AVX512-BF16, AMX) is bf16, which would give other detections than every other FP32
    engine. FP16 builds (16-bit weights) compute in the CPU's own 16-bit float: f16 where it has FP16 arithmetic
    (AMX-FP16, ARM), else bf16 where it has BF16, else f32; a 16-bit float engine is what `fp16` asks for, and on
    a CPU with BF16 the bf16 kernels are the fast ones (the f16 ones would be emulated). BF16 builds compute in bf16,
    which needs a CPU with BF16 arithmetic (`check_bf16` refuses the others)."""
    if precision == "bf16":
        check_bf16(core)
        return ov.Type.bf16
    if precision != "fp16":
        return ov.Type.f32
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "FP16" in capabilities:
        return ov.Type.f16
    return ov.Type.bf16 if "BF16" in capabilities else ov.Type.f32


def has_bf16(core: Any) -> bool:
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_bf16(core: Any, source: str = "--precision bf16") -> None:
    """bf16 runs on CPUs with bfloat16 arithmetic (AVX512_BF16, AMX); elsewhere OpenVINO would quietly compute in
    f32, so the engine would not be what its name says."""
    if not has_bf16(core):
        raise UserError(f"{source}: this CPU has no bfloat16 arithmetic (AVX512_BF16 or AMX), so OpenVINO cannot "
                        "run a bf16 engine here; build --precision fp32 (or int8) instead")


def precision_status(precision: str) -> tuple[bool, str]:
    """Whether this CPU runs an engine of ``precision`` (the backend table's check, for `--precision auto`)."""
    if precision == "bf16" and not has_bf16(import_openvino().Core()):
        return False, "this CPU has no bfloat16 arithmetic (AVX512_BF16 or AMX)"
    return True, ""


def port_name(port: Any) -> str:
    """An output's name: the effdet-rt tensor name when the port carries one of them, else its first name."""
    names = port.get_names()
    known = [n for n in (*OUTPUT_NAMES, *RAW_OUTPUTS) if n in names]
    return known[0] if known else sorted(names)[0]


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None):
        ov = import_openvino()
        self.path = Path(path)
        core = ov.Core()
        if not weights_file(self.path).is_file():
            check_ir_pair(self.path, {})  # raises with the missing .bin named
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # a damaged .xml or a .bin too short for it
            detail = str(exc).strip().splitlines()[-1]
            raise ModelFileError(f"{self.path} (+ {weights_file(self.path).name}): not a readable OpenVINO IR pair "
                                 f"({detail}); rebuild it with `effdet-rt build --backend openvino`") from exc
        self.metadata = read_rt_metadata(model)
        check_ir_pair(self.path, self.metadata)
        shape = model.inputs[0].get_partial_shape()
        if len(model.inputs) != 1 or shape.rank.get_length() != 4 or shape[1].is_dynamic or shape[2].is_dynamic:
            raise ModelFileError(f"{self.path}: expected one NHWC image input of fixed height and width")
        self.input_size = (shape[1].get_length(), shape[2].get_length())
        self.static_batch = None if shape[0].is_dynamic else shape[0].get_length()
        self.precision = self.metadata.get("precision", "fp32")
        if self.precision == "bf16":
            check_bf16(core, f"{self.path} (a bf16 engine)")
        self.compute_type = compute_precision(ov, core, self.precision)
        config = {
            "INFERENCE_PRECISION_HINT": self.compute_type,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: every core on each request, as ONNX Runtime runs
            "INFERENCE_NUM_THREADS": threads or usable_cpus(),
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelFileError(f"{self.path}: OpenVINO cannot compile this model ({exc})") from exc
        self.output_names = tuple(port_name(port) for port in model.outputs)
        self.request = self.compiled.create_infer_request()

    def run_exact(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.request.infer({0: batch})
        return {name: np.array(results[port]) for name, port in zip(self.output_names, self.compiled.outputs,
                                                                      strict=True)}


def open_runner(path: str | Path) -> OpenVinoRunner:
    return OpenVinoRunner(path)


class OpenVinoEngine(RunnerEngine):
    backend = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__(OpenVinoRunner(path, threads))
        self.compiled, self.compute_type = self.runner.compiled, self.runner.compute_type

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "compute_precision": self.compute_type.get_type_name(),
                "openvino_built_with": self.metadata.get("openvino_version")}


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> OpenVinoEngine:
    return OpenVinoEngine(path)


def describe(path: str | Path) -> dict[str, Any]:
    """What `engine-info` prints for an OpenVINO IR: its inputs/outputs, precision and OpenVINO versions."""
    ov = import_openvino()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: OpenVINO model not found; build one with `effdet-rt build --backend openvino`")
    engine = OpenVinoRunner(path)
    ports = [("input", p) for p in engine.compiled.inputs] + [("output", p) for p in engine.compiled.outputs]
    return {
        "file": str(path),
        "openvino": ov.__version__.split("-")[0],
        "built_with": str(engine.metadata.get("openvino_version", "unknown")).split("-")[0],
        "precision": engine.precision,
        "compute_precision": engine.compute_type.get_type_name(),
        "tensors": [{"name": port.get_any_name() if io == "input" else sorted(port.get_names())[0], "io": io,
                     "shape": str(port.get_partial_shape()), "dtype": port.get_element_type().get_type_name()}
                    for io, port in ports],
        "metadata": {k: v for k, v in engine.metadata.items() if k != "bin_sha256"},
    }
