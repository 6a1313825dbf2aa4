"""The OpenVINO backend: runs IR built by `effdet-rt build --backend openvino` (NMS inside, or raw heads) on a CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.detections import Detections, category_ids
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.engines.runtime.openvino_common import (
    check_ir_pair,
    import_openvino,
    read_rt_metadata,
    weights_file,
)
from effdet_rt.errors import ModelFileError
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.onnx.names import OUTPUT_NAMES

RAW_OUTPUTS = ("class_logits", "box_codes")


def compute_precision(ov: Any, core: Any, precision: str) -> Any:
    """The float type OpenVINO computes in. FP32 and INT8 builds compute in f32 whatever the CPU: OpenVINO's own
    default on CPUs with BF16 (AVX512-BF16, AMX) is bf16, which would give other detections than every other FP32
    engine. FP16 builds (16-bit weights) compute in the CPU's own 16-bit float: f16 where it has FP16 arithmetic
    (AMX-FP16, ARM), else bf16 where it has BF16, else f32; a 16-bit float engine is what `fp16` asks for, and on
    a CPU with BF16 the bf16 kernels are the fast ones (the f16 ones would be emulated)."""
    if precision != "fp16":
        return ov.Type.f32
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "FP16" in capabilities:
        return ov.Type.f16
    return ov.Type.bf16 if "BF16" in capabilities else ov.Type.f32


def output_index(model: Any, names: tuple[str, ...]) -> list[int] | None:
    """Positions of the outputs named `names` (in that order), or None when the model lacks one of them."""
    found = {}
    for index, port in enumerate(model.outputs):
        for name in port.get_names() & set(names):
            found[name] = index
    return [found[n] for n in names] if len(found) == len(names) else None


class OpenVinoEngine(Engine):
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
        self.mode, self.outputs = "nms", output_index(model, OUTPUT_NAMES)
        if self.outputs is None:
            self.mode, self.outputs = "raw", output_index(model, RAW_OUTPUTS)
        if self.outputs is None:
            raise ModelFileError(f"{self.path}: outputs are not an effdet-rt detector's; expected {list(OUTPUT_NAMES)} "
                                 f"or {list(RAW_OUTPUTS)}")
        shape = model.inputs[0].get_partial_shape()
        if len(model.inputs) != 1 or shape.rank.get_length() != 4 or shape[1].is_dynamic or shape[2].is_dynamic:
            raise ModelFileError(f"{self.path}: expected one NHWC image input of fixed height and width")
        self.input_size = (shape[1].get_length(), shape[2].get_length())
        self.static_batch = None if shape[0].is_dynamic else shape[0].get_length()
        self.max_batch_size = self.static_batch
        self.precision = self.metadata.get("precision", "fp32")
        if self.mode == "raw":
            from effdet_rt.engines.runtime.onnxruntime import _anchor_config
            from effdet_rt.model.anchors import generate_anchors

            self.anchors = generate_anchors(tuple(self.metadata["input_size"]), _anchor_config(self.metadata))
            self.nms_config = NmsConfig(
                score_threshold=self.metadata.get("score_threshold", 0.001),
                iou_threshold=self.metadata.get("iou_threshold", 0.5),
                max_detections=self.metadata.get("max_detections", 100),
                pre_nms_top_k=self.metadata.get("pre_nms_top_k", 5000),
            )
        self.compute_type = compute_precision(ov, core, self.precision)
        config = {
            "INFERENCE_PRECISION_HINT": self.compute_type,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: every core on each request, as ONNX Runtime runs
            "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelFileError(f"{self.path}: OpenVINO cannot compile this model ({exc})") from exc
        self.request = self.compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> Detections:
        count = len(batch)
        if self.static_batch and count < self.static_batch:
            pad = np.zeros((self.static_batch - count, *batch.shape[1:]), np.float32)
            batch = np.concatenate([batch, pad])
        results = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        outputs = [results[self.compiled.outputs[i]] for i in self.outputs]
        if self.mode == "raw":
            from effdet_rt.engines.runtime.host_nms import host_postprocess

            return host_postprocess(outputs[0][:count], outputs[1][:count], self.anchors, self.nms_config)
        num, boxes, scores, classes = (np.array(o[:count]) for o in outputs)
        return Detections(boxes, scores, category_ids(classes), num[:, 0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": str(self.path), "nms": self.mode, "batch": self.static_batch or "dynamic",
                "compute_precision": self.compute_type.get_type_name(),
                "openvino_built_with": self.metadata.get("openvino_version")}


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> OpenVinoEngine:
    return OpenVinoEngine(path)


def describe_ir(path: str | Path) -> dict[str, Any]:
    """What `engine-info` prints for an OpenVINO IR: its inputs/outputs, precision and OpenVINO versions."""
    ov = import_openvino()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: OpenVINO model not found; build one with `effdet-rt build --backend openvino`")
    engine = OpenVinoEngine(path)
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
