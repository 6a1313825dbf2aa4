"""Keras -> ONNX conversion and graph cleaning with onnx-graphsurgeon."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

INPUT_NAME = "images"
METADATA_PREFIX = "effdet_rt."


def keras_to_onnx(model, input_size: tuple[int, int], batch_size: int | None, opset: int) -> onnx.ModelProto:
    """Convert with tf2onnx; batch_size None makes the batch dimension dynamic."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((batch_size, *input_size, 3), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return proto


def clean_graph(graph: gs.Graph, max_rounds: int = 10) -> gs.Graph:
    """cleanup + toposort + constant folding until the node count stops changing."""
    previous = -1
    for _ in range(max_rounds):
        graph.cleanup().toposort()
        graph.fold_constants().cleanup()
        if len(graph.nodes) == previous:
            break
        previous = len(graph.nodes)
    return graph.toposort()


def use_asymmetric_nearest_resize(graph: gs.Graph) -> int:
    """tf2onnx writes TF's nearest upsampling with the deprecated `tf_half_pixel_for_nn` mode.

    For the integer upsampling factors EfficientDet uses (2x), floor((x + 0.5) / 2) == floor(x / 2), so the
    standard `asymmetric` + `floor` mode is the same function and every runtime (TensorRT included) supports it.
    """
    changed = 0
    for node in graph.nodes:
        if node.op == "Resize" and node.attrs.get("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
            node.attrs["coordinate_transformation_mode"] = "asymmetric"
            node.attrs["nearest_mode"] = "floor"
            changed += 1
    return changed


NORMALIZE_NODE = "input_normalization"


def _constant_vector(tensor: gs.Tensor, length: int) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant) and tensor.values.size == length:
        return np.asarray(tensor.values, np.float32).reshape(length)
    return None


def normalize_after_transpose(graph: gs.Graph) -> bool:
    """Move `(images - mean) * (1 / std)` behind tf2onnx's NHWC->NCHW transpose, as a 1x1 per-channel Conv.

    On NHWC input the two ops broadcast over a 3-wide innermost axis, which ONNX Runtime runs one 3-element span at a
    time (the slowest ops of the FP32 model, and worse as QLinearMul in INT8). As a grouped Conv in NCHW it is one
    fast kernel in every runtime, the transpose optimiser leaves it in place, and it computes the same values.
    """
    (images,) = graph.inputs
    sub = next((n for n in images.outputs if n.op == "Sub" and n.inputs[0] is images), None)
    if sub is None or len(sub.outputs[0].outputs) != 1:
        return False
    scale_node = sub.outputs[0].outputs[0]
    transpose = scale_node.outputs[0].outputs[0] if len(scale_node.outputs[0].outputs) == 1 else None
    mean = _constant_vector(sub.inputs[1], 3)
    scale = _constant_vector(scale_node.inputs[1], 3)
    if scale is not None and scale_node.op == "Div":
        scale = 1.0 / scale
    elif scale_node.op != "Mul":
        scale = None
    if mean is None or scale is None or transpose is None or transpose.op != "Transpose" or \
            list(transpose.attrs.get("perm", [])) != [0, 3, 1, 2]:
        return False
    nchw = gs.Variable("images_nchw", np.float32)
    normalized = transpose.outputs[0]
    transpose.inputs[0] = images
    transpose.outputs = [nchw]
    weights = constant("input_normalization_scale", scale.reshape(3, 1, 1, 1))
    bias = constant("input_normalization_bias", (-mean * scale).astype(np.float32))
    graph.nodes.append(gs.Node("Conv", NORMALIZE_NODE, {"group": 3, "kernel_shape": [1, 1]},
                               inputs=[nchw, weights, bias], outputs=[normalized]))
    sub.outputs.clear()
    scale_node.outputs.clear()
    graph.cleanup().toposort()
    return True


def rename_input(graph: gs.Graph, batch: int | str) -> gs.Variable:
    (images,) = graph.inputs
    images.name = INPUT_NAME
    images.shape = [batch, *images.shape[1:]]
    return images


def set_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(values.items()):
        entry = model.metadata_props.add()
        entry.key = METADATA_PREFIX + key
        entry.value = json.dumps(value)


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    return {
        p.key[len(METADATA_PREFIX) :]: json.loads(p.value)
        for p in model.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }


def constant(name: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.ascontiguousarray(value))
