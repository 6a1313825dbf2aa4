"""Q/DQ clean-up for quantization-aware exports (tf2onnx output of effdet_rt.model.qat).

tf2onnx converts the QAT model's weight fake-quant (`QuantizeAndDequantizeV2`, per output channel, range from the
kernel itself) into QuantizeLinear/DequantizeLinear on the kernel in TF's layout, followed by the Reshape/Transpose
that move it to ONNX's OIHW, and it gets the per-channel scales wrong once the kernel is transposed. Since the kernel
is a constant, we redo that step in ONNX's layout: the same symmetric narrow-range INT8 rounding (scale = max|w| / 127
per output channel, axis 0), with the DequantizeLinear feeding the Conv directly, which is what TensorRT's explicit
quantization expects.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

INT8_MAX = 127.0
LAYOUT_OPS = ("Reshape", "Transpose")


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def _apply_layout(values: np.ndarray, node: gs.Node) -> np.ndarray | None:
    if node.op == "Transpose":
        return values.transpose(node.attrs.get("perm"))
    shape = node.inputs[1]
    if not isinstance(shape, gs.Constant):
        return None
    target = [values.shape[i] if size == 0 else int(size) for i, size in enumerate(shape.values.tolist())]
    return values.reshape(target)


def _weight_chain(conv: gs.Node) -> tuple[gs.Node, list[gs.Node]] | None:
    """The QuantizeLinear on a constant kernel and the layout ops between its DequantizeLinear and the Conv."""
    layout: list[gs.Node] = []
    node = _producer(conv.inputs[1])
    while node is not None and node.op in LAYOUT_OPS:
        layout.append(node)
        node = _producer(node.inputs[0])
    if node is None or node.op != "DequantizeLinear":
        return None
    quantize = _producer(node.inputs[0])
    if quantize is None or quantize.op != "QuantizeLinear" or not isinstance(quantize.inputs[0], gs.Constant):
        return None
    return quantize, layout[::-1]


def requantize_conv_weights(graph: gs.Graph) -> int:
    """Rebuild every Conv's weight Q/DQ on the OIHW kernel; returns how many convs were rebuilt."""
    rebuilt = 0
    for conv in [n for n in graph.nodes if n.op == "Conv"]:
        chain = _weight_chain(conv)
        if chain is None:
            continue
        quantize, layout = chain
        kernel = np.asarray(quantize.inputs[0].values, np.float32)
        for node in layout:
            kernel = _apply_layout(kernel, node)
            if kernel is None:
                break
        if kernel is None or kernel.ndim != 4:
            continue
        amax = np.abs(kernel).reshape(kernel.shape[0], -1).max(axis=1)
        scale = (np.maximum(amax, np.finfo(np.float32).tiny) / INT8_MAX).astype(np.float32)
        zero = np.zeros_like(scale, np.int8)
        name = conv.name
        weight = gs.Constant(f"{name}/kernel_oihw", np.ascontiguousarray(kernel))
        scale_c, zero_c = gs.Constant(f"{name}/kernel_scale", scale), gs.Constant(f"{name}/kernel_zero_point", zero)
        quantized = gs.Variable(f"{name}/kernel_quantized", np.int8, kernel.shape)
        dequantized = gs.Variable(f"{name}/kernel_dequantized", np.float32, kernel.shape)
        graph.nodes.append(gs.Node("QuantizeLinear", f"{name}/kernel_quantize", {"axis": 0},
                                   inputs=[weight, scale_c, zero_c], outputs=[quantized]))
        graph.nodes.append(gs.Node("DequantizeLinear", f"{name}/kernel_dequantize", {"axis": 0},
                                   inputs=[quantized, scale_c, zero_c], outputs=[dequantized]))
        conv.inputs[1] = dequantized
        rebuilt += 1
    if rebuilt:
        graph.cleanup().toposort()
    return rebuilt
