"""Q/DQ clean-up for quantization-aware exports (tf2onnx output of effdet_rt.model.qat)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _channel_axis(shape: list[int], channels: int, current: int) -> int | None:
    if 0 <= current < len(shape) and shape[current] == channels:
        return current
    matches = [axis for axis, size in enumerate(shape) if size == channels]
    return matches[0] if matches else None


def fix_weight_quant_axes(graph: gs.Graph) -> int:
    """tf2onnx moves conv kernels to ONNX's OIHW layout but keeps TF's per-channel axis on their Q/DQ pair;
    point the axis back at the dimension that holds one scale per channel (the output channels, axis 0)."""
    fixed = 0
    for node in graph.nodes:
        if node.op != "QuantizeLinear" or not isinstance(node.inputs[0], gs.Constant):
            continue
        scale = node.inputs[1]
        if not isinstance(scale, gs.Constant) or scale.values.ndim != 1 or scale.values.size < 2:
            continue
        current = int(node.attrs.get("axis", 1))
        axis = _channel_axis(list(node.inputs[0].values.shape), int(scale.values.size), current)
        if axis is None or axis == current:
            continue
        dequantizers = [n for n in node.outputs[0].outputs if n.op == "DequantizeLinear"]
        for target in (node, *dequantizers):
            target.attrs["axis"] = axis
        fixed += 1
    return fixed
