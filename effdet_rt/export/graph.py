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
