"""The ONNX Runtime backend: runs exported models (`--nms onnx` or raw heads with host NMS) on any CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.detections import Detections, category_ids
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.engines.runtime.host_nms import host_postprocess
from effdet_rt.errors import ModelFileError
from effdet_rt.model.anchors import AnchorConfig, generate_anchors
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.onnx.graph import read_metadata
from effdet_rt.onnx.names import OUTPUT_NAMES, RAW_OUTPUTS


def read_onnx(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / ValueError / OSError for foreign bytes
        raise ModelFileError(f"{path}: not an ONNX model ({exc.__class__.__name__}); pass a file written by `effdet-rt export`") from exc


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
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _anchor_config(meta: dict[str, Any]) -> AnchorConfig:
    a = meta["anchors"]
    return AnchorConfig(a["min_level"], a["max_level"], a["num_scales"], tuple(tuple(r) for r in a["aspect_ratios"]), a["anchor_scale"])


# A dynamic-batch model runs a big batch as several smaller session runs. On a CPU a big batch buys no parallelism
# ONNX Runtime does not already get inside each convolution, and once its activations fall out of cache each image
# costs more. The budget is in activation bytes rather than images because INT8 activations are 4x smaller, so
# INT8 fits more images per run than FP32 at the same size; one budget suits FP32 and INT8 at 256 and 512 alike:
# about 2 MiB of input-sized activations per run (images x pixels x bytes; measurements in docs/int8-cpu.md).
MICRO_BATCH_ACTIVATION_BYTES = 2 * 512 * 512 * 4


def cpu_micro_batch(input_size: tuple[int, int], precision: str) -> int:
    activation_bytes = 1 if precision == "int8" else 4
    return max(1, MICRO_BATCH_ACTIVATION_BYTES // (input_size[0] * input_size[1] * activation_bytes))


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, micro_batch: int | None = None):
        import onnxruntime as ort


        self.path = Path(path)
        proto = read_detector_onnx(self.path)
        self.metadata = read_metadata(proto)
        self.mode = "nms" if tuple(o.name for o in proto.graph.output) == OUTPUT_NAMES else "raw"
        if self.mode == "raw":
            if "anchors" not in self.metadata:
                raise ModelFileError(f"{self.path}: raw-heads model without anchor metadata; re-export it with effdet-rt")
            self.anchors = generate_anchors(tuple(self.metadata["input_size"]), _anchor_config(self.metadata))
            self.nms_config = NmsConfig(
                score_threshold=self.metadata.get("score_threshold", 0.001),
                iou_threshold=self.metadata.get("iou_threshold", 0.5),
                max_detections=self.metadata.get("max_detections", 100),
                pre_nms_top_k=self.metadata.get("pre_nms_top_k", 5000),
            )
        inputs = proto.graph.input
        if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
            raise ModelFileError(f"{self.path}: expected one NHWC image input named 'images'")
        dims = inputs[0].type.tensor_type.shape.dim
        self.input_name = inputs[0].name
        self.input_size = (int(dims[1].dim_value), int(dims[2].dim_value))
        self.static_batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") else None
        self.max_batch_size = self.static_batch
        self.precision = self.metadata.get("precision", "fp32")
        self.micro_batch = max(1, micro_batch or cpu_micro_batch(self.input_size, self.precision))
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load this model ({exc})") from exc

    def run(self, batch: np.ndarray) -> Detections:
        if self.static_batch or len(batch) <= self.micro_batch:
            return self._run_once(batch)
        step = self.micro_batch
        return Detections.concat([self._run_once(batch[i:i + step]) for i in range(0, len(batch), step)])

    def _run_once(self, batch: np.ndarray) -> Detections:
        count = len(batch)
        if self.static_batch and count < self.static_batch:
            pad = np.zeros((self.static_batch - count, *batch.shape[1:]), np.float32)
            batch = np.concatenate([batch, pad])
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        if self.mode == "raw":

            return host_postprocess(outputs[0][:count], outputs[1][:count], self.anchors, self.nms_config)
        num, boxes, scores, classes = outputs
        return Detections(boxes[:count], scores[:count], category_ids(classes[:count]), num[:count, 0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": str(self.path), "nms": self.mode, "batch": self.static_batch or "dynamic",
                "micro_batch": None if self.static_batch else self.micro_batch}


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(path)
