"""INT8 Q/DQ ONNX with onnxruntime.quantization, calibrated on batches from calib/batches.

QDQ format with per-channel symmetric INT8 weights, in two flavours from the same calibration batches:
- `onnxruntime` (the CPU engine): every quantizable op of the network, UINT8 activations with a zero point, which is
  the layout ONNX Runtime's CPU kernels are fast at (its s8s8 kernels for symmetric INT8 activations are slow), and
  weights in 7 bits (-64..64, `reduce_range`): on x86 CPUs without VNNI (AVX2, and AVX-512 without VNNI) ONNX
  Runtime multiplies UINT8 by INT8 in pairs summed into 16 bits, which overflows with 8-bit weights
  (255 * 127 * 2 > 32767) and costs a trained detector several mAP points. 7 bits cannot overflow and run at the
  same speed; UINT8 weights would avoid it too but run slower. Used on every CPU: the file may run on another one;
- `tensorrt` (the explicit-quantization input TensorRT 11 needs): symmetric INT8 activations on the convolutions.
  Symmetric INT8 x INT8 products (this profile, and QAT exports) do not overflow on those CPUs, so it keeps full
  8-bit weights. The measurements behind these choices are in docs/int8-cpu.md.
Only the network is quantized; the input normalisation (a per-channel 1x1 Conv), decoding and NMS stay in float.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from effdet_rt.errors import DataError, ModelFileError
from effdet_rt.onnx.graph import (
    NORMALIZE_NODE,
    postprocess_node_names,
    read_metadata,
    rewrite_model,
    set_metadata,
)
from effdet_rt.onnx.names import RAW_OUTPUTS
from effdet_rt.onnx.ort_layout import sums_as_adds
from effdet_rt.onnx.tasks import model_task
from effdet_rt.utils.atomic import atomic_path

PROFILES = ("onnxruntime", "tensorrt")
TENSORRT_OPS = ("Conv", "MatMul", "Gemm")


class BatchReader:
    """onnxruntime CalibrationDataReader over preprocessed batches (float32 NHWC 0..255)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)
        self.count = 0

    def get_next(self):
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += 1
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # onnxruntime may call it; calibration makes one pass
        pass


def static_batch(model) -> int | None:
    """The model input's fixed batch size, or None when it is dynamic."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def rebatched(batches: Iterable[np.ndarray], size: int, log=print) -> Iterator[np.ndarray]:
    """The same images in batches of ``size`` (a fixed-batch export takes no other); a last partial batch is
    dropped, as calibration batches are (MinMax ranges do not depend on how images are grouped)."""
    pending = np.zeros((0,), np.float32)
    seen = 0
    for batch in batches:
        pending = batch if not len(pending) else np.concatenate([pending, batch])
        seen += len(batch)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if len(pending):
        log(f"calibration: the model's batch is fixed at {size}: the last {len(pending)} of {seen} images are left out")


def check_heads_present(model) -> None:
    names = {o for n in model.graph.node for o in n.output} | {o.name for o in model.graph.output}
    if not set(RAW_OUTPUTS) <= names:
        raise ModelFileError("the ONNX model has no class_logits/box_codes tensors; export it with `effdet-rt export`")


def with_sums_as_adds(model, path: Path) -> Path:
    """`model` with BiFPN's Sums as chains of Adds, saved to `path`: the quantizer turns an Add into QLinearAdd on
    UINT8, where a Sum stays float between DequantizeLinear and QuantizeLinear, so the fusions run quantized too."""
    import onnx


    onnx.save(rewrite_model(model, sums_as_adds), str(path))
    return path


EFFICIENT_NMS = "EfficientNMS_TRT"


def uses_efficient_nms(model) -> bool:
    return any(node.op_type == EFFICIENT_NMS for node in model.graph.node)


def network_part(source_path: Path, model, path: Path) -> Path:
    """The network of an `--nms efficient` export, input to raw heads, saved to ``path``: ONNX Runtime (the
    calibrator) cannot run the EfficientNMS_TRT node after them."""
    import onnx

    onnx.utils.extract_model(str(source_path), str(path), [model.graph.input[0].name], list(RAW_OUTPUTS))
    return path


def with_nms_of(quantized, source):
    """``quantized`` (the Q/DQ network, raw heads out) with ``source``'s post-processing re-attached: its nodes
    after the heads (EfficientNMS_TRT and what feeds it), their constants, outputs and opset domains."""
    tail_names = set(postprocess_node_names(source))
    tail = [node for node in source.graph.node if node.name in tail_names]
    known = {i.name for i in quantized.graph.initializer} | {o for n in quantized.graph.node for o in n.output}
    known |= {n for node in tail for n in node.output}
    needed = {name for node in tail for name in node.input if name and name not in known}
    producers = [node for node in source.graph.node if set(node.output) & needed and node.name not in tail_names]
    needed |= {name for node in producers for name in node.input}
    quantized.graph.node.extend([*producers, *tail])
    quantized.graph.initializer.extend(i for i in source.graph.initializer if i.name in needed)
    del quantized.graph.output[:]
    quantized.graph.output.extend(source.graph.output)
    domains = {o.domain for o in quantized.opset_import}
    quantized.opset_import.extend(o for o in source.opset_import if o.domain not in domains)
    return quantized


def quantize_int8(onnx_path: str | Path, output_path: str | Path, batches: Iterable[np.ndarray], log=print,
                  profile: str = "onnxruntime") -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process


    if profile not in PROFILES:
        raise ValueError(f"unknown INT8 profile {profile!r}")
    for_tensorrt = profile == "tensorrt"
    source = onnx.load(str(onnx_path))
    efficient = uses_efficient_nms(source)
    if efficient and not for_tensorrt:
        raise ModelFileError(f"{onnx_path}: this model uses TensorRT's EfficientNMS_TRT plugin, which ONNX Runtime "
                             "cannot run; quantize it for TensorRT 11 with --int8-profile tensorrt, or export with "
                             "--nms onnx for an ONNX Runtime INT8 engine")
    weight_bits = 8 if for_tensorrt else 7  # TensorRT accumulates in 32 bits: it keeps the full 8-bit weights

    task = model_task(source)
    if task.raw_heads:
        check_heads_present(source)
    float_nodes = (task.float_nodes or postprocess_node_names)(source)
    input_name = source.graph.input[0].name
    fixed = static_batch(source)
    reader = BatchReader(input_name, rebatched(batches, fixed, log) if fixed else batches)
    with atomic_path(output_path) as tmp, tempfile.TemporaryDirectory(prefix="effdet-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        to_prepare = Path(onnx_path) if for_tensorrt else with_sums_as_adds(source, Path(work) / "adds.onnx")
        if efficient:  # calibrate the network; EfficientNMS_TRT is attached to the Q/DQ graph afterwards
            to_prepare = network_part(Path(onnx_path), source, Path(work) / "network.onnx")
        # fold BatchNorm into Conv and fuse what ONNX Runtime fuses, so Q/DQ pairs sit on the convs that run
        quant_pre_process(str(to_prepare), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(tmp),
            reader,
            quant_format=QuantFormat.QDQ,
            # the task may quantize fewer op types (effdet_rt/onnx/tasks.py says which and why)
            op_types_to_quantize=list(TENSORRT_OPS) if for_tensorrt else (
                list(task.quantized_ops) if task.quantized_ops else None),
            per_channel=True,
            activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[NORMALIZE_NODE, *float_nodes],
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=weight_bits == 7,
            extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True},
        )
        if reader.count == 0:
            raise DataError("no calibration batches: the calibration TFRecords hold fewer images than one batch")
        quantized = onnx.load(str(tmp))
        if efficient:
            quantized = with_nms_of(quantized, source)
        meta = read_metadata(source)
        meta.update({"precision": "int8", "calibration_batches": reader.count, "int8_profile": profile,
                     "int8_weight_bits": weight_bits})
        set_metadata(quantized, meta)
        onnx.save(quantized, str(tmp))
    log(f"INT8 Q/DQ model ({profile} profile) calibrated on {reader.count} batches -> {output_path}")
    return Path(output_path)
