"""Rewrites of BiFPN's weighted fusions for ONNX Runtime's CPU kernels.

Each computes the same values (up to float rounding) with fewer layout changes or memory passes: the FP32 build runs
them all (`prepare_blocked_layout`, for the blocked NCHWc convolutions), the INT8 build `sums_as_adds` before
quantizing. In EfficientDet they all land in the fusions ``sum_i(w_i * x_i) / (sum_i w_i + eps)``: 24 nodes of 2 or 3
terms in D0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from effdet_rt.onnx.graph import inferred_dims, inferred_shapes, only_consumer, scalar_product

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


def sum_weights_as_channel_scales(graph: gs.Graph) -> int:
    """Rewrite each weighted Sum term ``x * w`` (w a constant scalar, x NCHW) as a BatchNormalization scaling
    every channel by w: the same values, but ONNX Runtime's blocked (NCHWc) CPU layout takes a
    BatchNormalization and the Sum in, where a broadcast Mul sends the tensor back to NCHW and forth again.
    In EfficientDet these are BiFPN's fusion weights (57 terms in D0)."""
    import onnx_graphsurgeon as gs


    dims = inferred_dims(graph)
    rewritten = 0
    for node in graph.nodes:
        product = scalar_product(node)
        consumers = node.outputs[0].outputs
        if product is None or not consumers or any(c.op != "Sum" for c in consumers):
            continue
        source, weight = product
        shape = dims.get(source.name)
        if shape is None or len(shape) != 4 or not shape[1] or weight.values.dtype != np.float32:
            continue
        channels = shape[1]
        values = {
            "scale": np.full(channels, np.asarray(weight.values).item(), np.float32),
            "bias": np.zeros(channels, np.float32),
            "mean": np.zeros(channels, np.float32),
            "var": np.ones(channels, np.float32),
        }
        node.op, node.attrs = "BatchNormalization", {"epsilon": 0.0}
        node.inputs = [source, *(gs.Constant(f"{node.name}_{k}", v) for k, v in values.items())]
        rewritten += 1
    return rewritten


def spread_sum_scale(graph: gs.Graph) -> int:
    """Rewrite ``Sum(x_i) * k`` (k a constant scalar, no term weighted) as ``Sum(x_i * k)``.

    An untrained BiFPN has all fusion weights at 1, so export leaves the fusion as a plain Sum times
    1 / (n + eps); as weighted terms it takes the same path as a trained model's fusion.
    """
    import onnx_graphsurgeon as gs


    spread = 0
    for node in [n for n in graph.nodes if n.op == "Sum"]:
        after = only_consumer(graph, node.outputs[0])
        scale = scalar_product(after) if after is not None else None
        if scale is None or any(t.inputs and scalar_product(t.inputs[0]) for t in node.inputs):
            continue
        terms = []
        for i, tensor in enumerate(node.inputs):
            term = gs.Variable(f"{node.name}_term{i}", tensor.dtype)
            graph.nodes.append(gs.Node("Mul", f"{node.name}_scale{i}", inputs=[tensor, scale[1]], outputs=[term]))
            terms.append(term)
        node.inputs = terms
        node.outputs = [after.outputs[0]]
        after.outputs.clear()
        spread += 1
    graph.cleanup().toposort()
    return spread


def sums_as_adds(graph: gs.Graph) -> int:
    """Rewrite each Sum as a chain of two-input Adds, in input order (the same additions in the same order).

    ONNX Runtime adds a two-input Add into the blocked convolution that produces one of its inputs (a three-input
    Sum stays a separate op on reshaped 5-D views), and its quantizer turns an Add into QLinearAdd where a Sum
    stays float between DequantizeLinear and QuantizeLinear.
    """
    import onnx_graphsurgeon as gs

    rewritten = 0
    for node in [n for n in graph.nodes if n.op == "Sum" and len(n.inputs) >= 2]:
        inputs, result = list(node.inputs), node.outputs[0]
        partial = inputs[0]
        for i, tensor in enumerate(inputs[1:], start=1):
            out = result if i == len(inputs) - 1 else gs.Variable(f"{node.name}_partial{i}", tensor.dtype)
            graph.nodes.append(gs.Node("Add", f"{node.name}_add{i}", inputs=[partial, tensor], outputs=[out]))
            partial = out
        node.outputs.clear()
        rewritten += 1
    graph.cleanup().toposort()
    return rewritten


def keep_batch_through_resize(graph: gs.Graph) -> int:
    """Give each Resize by constant scales (1, 1, s, s) of a batch-first tensor its output shape, batch included.

    ONNX shape inference turns a symbolic dimension times a scale of 1 into a new unknown one, so behind BiFPN's
    upsampling the batch is no longer the input's. ONNX Runtime then cannot prove that a fusion's inputs have one
    shape and leaves each Add out of the convolution it would add it into. Shapes are inferred again after each
    round, as each upsampling in a cell reads the one before it.
    """

    batch = graph.inputs[0].shape[0] if len(graph.inputs) == 1 and graph.inputs[0].shape else None
    pending = [n for n in graph.nodes if n.op == "Resize" and len(n.inputs) >= 3 and n.outputs[0].shape is None]
    named = 0
    while pending and batch is not None:
        shapes = inferred_shapes(graph)
        ready = [(n, shape) for n in pending if (shape := _upsampled_shape(n, shapes.get(n.inputs[0].name), batch))]
        if not ready:
            break
        for node, shape in ready:
            node.outputs[0].shape = shape
            node.outputs[0].dtype = node.inputs[0].dtype or np.float32
            pending.remove(node)
        named += len(ready)
    return named


def _upsampled_shape(node: gs.Node, shape: list | None, batch: int | str) -> list | None:
    scales = getattr(node.inputs[2], "values", None)
    if scales is None or scales.size != 4 or list(scales[:2]) != [1, 1] or shape is None or len(shape) != 4:
        return None
    if shape[0] != batch or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return None
    return [batch, shape[1], int(shape[2] * scales[2]), int(shape[3] * scales[3])]


def prepare_blocked_layout(graph: gs.Graph) -> dict[str, int]:
    """All the rewrites above, in the order they feed each other; returns how many nodes each changed."""
    counts = {"spread_sum_scale": spread_sum_scale(graph)}
    counts["sum_weights_as_channel_scales"] = sum_weights_as_channel_scales(graph)
    counts["sums_as_adds"] = sums_as_adds(graph)
    counts["keep_batch_through_resize"] = keep_batch_through_resize(graph)
    return counts
