"""Keras -> ONNX conversion and graph cleaning with onnx-graphsurgeon."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from effdet_rt.onnx.names import INPUT_NAME, RAW_OUTPUTS

METADATA_PREFIX = "effdet_rt."


def keras_to_onnx(model, input_size: tuple[int, int], batch_size: int | None, opset: int,
                  channels: int = 3) -> onnx.ModelProto:
    """Convert with tf2onnx; batch_size None makes the batch dimension dynamic."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((batch_size, *input_size, channels), tf.float32, name=INPUT_NAME)]
    try:
        with tf2onnx_fallback_copies(False):
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception:  # one of tf2onnx's optimizers failed on this graph: convert again, letting it skip that one
        with tf2onnx_fallback_copies(True):
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return proto


@contextmanager
def tf2onnx_fallback_copies(keep: bool) -> Iterator[None]:
    """By default tf2onnx deep-copies the whole graph before each optimizer pass, to go on from the copy when a pass
    fails, and copying a detector's graph that often is a large part of converting it. The passes and their order
    are the same without the copies.
    tf2onnx turns the copies off when TF2ONNX_CATCH_ERRORS is set at all (it compares the variable's name, not its
    value, with "TRUE"), so ``keep=False`` sets it for one conversion and ``keep=True`` removes it."""
    from tf2onnx import constants

    name = constants.ENV_TF2ONNX_CATCH_ERRORS
    before = os.environ.pop(name, None)
    if not keep:
        os.environ[name] = "FALSE"
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if before is not None:
            os.environ[name] = before


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
    Other factors (odd maps above P5, e.g. 3x3 -> 5x5 in Lite0 at 320) go by output size, see resize_by_size.
    """
    changed = 0
    for node in list(graph.nodes):
        if node.op == "Resize" and node.attrs.get("coordinate_transformation_mode") == "tf_half_pixel_for_nn":
            scales = getattr(node.inputs[2], "values", None) if len(node.inputs) > 2 else None
            if scales is not None and scales.size == 4 and np.all(scales == np.round(scales)):
                node.attrs["coordinate_transformation_mode"] = "asymmetric"
                node.attrs["nearest_mode"] = "floor"
            else:
                resize_by_size(graph, node)
            changed += 1
    return changed


def resize_by_size(graph: gs.Graph, node: gs.Node) -> None:
    """A nearest Resize by a fractional scale (5/3), rewritten to give its output size instead.

    tf2onnx passes the float32 scale 5/3, and floor(3 * 1.6666666) = 4 rows, not TF's 5. With `sizes` (batch and
    channels from Shape, the spatial size TF produced) every runtime gets 5; `half_pixel` + `round_prefer_ceil`
    picks the same source pixel as TF's floor((x + 0.5) * in / out), in the standard modes TensorRT supports.
    """
    scales = getattr(node.inputs[2], "values", None) if len(node.inputs) > 2 else None
    dims = inferred_dims(graph).get(node.inputs[0].name)
    if scales is None or dims is None or None in dims[2:]:
        raise ValueError(f"Resize {node.name}: cannot tell its output size (scales {scales}, input {dims})")
    spatial = np.array([round(dims[2] * float(scales[2])), round(dims[3] * float(scales[3]))], np.int64)
    shape = gs.Variable(f"{node.name}_in_shape", np.int64)
    leading = gs.Variable(f"{node.name}_batch_channels", np.int64)
    sizes = gs.Variable(f"{node.name}_sizes", np.int64)
    graph.nodes += [
        gs.Node("Shape", f"{node.name}_shape", inputs=[node.inputs[0]], outputs=[shape]),
        gs.Node("Slice", f"{node.name}_slice", inputs=[shape, constant(f"{node.name}_s0", np.array([0], np.int64)),
                                                       constant(f"{node.name}_s2", np.array([2], np.int64))],
                outputs=[leading]),
        gs.Node("Concat", f"{node.name}_concat", {"axis": 0},
                inputs=[leading, constant(f"{node.name}_hw", spatial)], outputs=[sizes]),
    ]
    node.inputs = [node.inputs[0], constant(f"{node.name}_roi", np.zeros(0, np.float32)), gs.Variable.empty(), sizes]
    node.attrs["coordinate_transformation_mode"] = "half_pixel"
    node.attrs["nearest_mode"] = "round_prefer_ceil"
    graph.toposort()


def inferred_shapes(graph: gs.Graph) -> dict[str, list[int | str | None]]:
    """Each tensor's dimensions from ONNX shape inference: a number, a symbolic name, or None where unknown."""
    inferred = onnx.shape_inference.infer_shapes(gs.export_onnx(graph))
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {
        info.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in info.type.tensor_type.shape.dim]
        for info in infos
        if info.type.tensor_type.HasField("shape")
    }


def inferred_dims(graph: gs.Graph) -> dict[str, list[int | None]]:
    """Each tensor's dimensions from ONNX shape inference; None where a dimension is not a known number."""
    return {name: [d if isinstance(d, int) else None for d in dims] for name, dims in inferred_shapes(graph).items()}


def _reshape_keeps_shape(dims: list[int | None], target: list[int]) -> bool:
    """True when Reshape(x, target) provably returns x's shape (0 copies a dimension, one -1 takes the rest)."""
    if len(dims) != len(target) or target.count(-1) > 1:
        return False
    return all(t == 0 or t == -1 or (d is not None and d == t) for d, t in zip(dims, target, strict=True))


def drop_identity_reshapes(graph: gs.Graph) -> int:
    """Remove Reshapes that do not change their input's shape, such as tf2onnx's (-1, C, 1, 1) after a pooling.

    Besides the wasted op, their `-1` gives the batch dimension a fresh unknown name in shape inference, so ONNX
    Runtime cannot prove that a residual Add's two inputs have the same shape and leaves the Add out of the
    convolution it would otherwise fuse it into.
    """
    dims = inferred_dims(graph)
    graph_outputs = {id(t) for t in graph.outputs}
    dropped = 0
    for node in graph.nodes:
        if node.op != "Reshape" or not isinstance(node.inputs[1], gs.Constant) or node.attrs.get("allowzero", 0):
            continue
        source, result = node.inputs[0], node.outputs[0]
        if id(result) in graph_outputs or source.name not in dims:
            continue
        if not _reshape_keeps_shape(dims[source.name], [int(v) for v in node.inputs[1].values.ravel()]):
            continue
        for consumer in list(result.outputs):
            for slot, tensor in enumerate(consumer.inputs):
                if tensor is result:
                    consumer.inputs[slot] = source
        node.outputs.clear()
        dropped += 1
    graph.cleanup().toposort()
    return dropped


def scalar_product(node: gs.Node) -> tuple[gs.Tensor, gs.Constant] | None:
    """(x, c) when ``node`` is Mul(x, c) or Mul(c, x) with a one-element constant c."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return None
    for tensor, other in (node.inputs, reversed(node.inputs)):
        if isinstance(other, gs.Constant) and other.values.size == 1 and not isinstance(tensor, gs.Constant):
            return tensor, other
    return None


def only_consumer(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    """The one node reading ``tensor``; None if several do or it is also a graph output."""
    if len(tensor.outputs) != 1 or any(tensor is out for out in graph.outputs):
        return None
    return tensor.outputs[0]


def fold_scale_into_weighted_sums(graph: gs.Graph) -> int:
    """Rewrite ``Sum(x_i * w_i) * k`` as ``Sum(x_i * (w_i * k))`` when every w_i and k are constant scalars.

    This is BiFPN's fast normalised fusion, ``sum_i(w_i x_i) / (sum_i w_i + eps)``, once the learnt weights are
    constants: one full-size multiplication per fusion node fewer, the same values up to rounding.
    """
    folded = 0
    for node in [n for n in graph.nodes if n.op == "Sum"]:
        after = only_consumer(graph, node.outputs[0])
        scale = scalar_product(after) if after is not None else None
        terms = [t.inputs[0] if len(t.inputs) == 1 else None for t in node.inputs]
        if scale is None or any(t is None or only_consumer(graph, t.outputs[0]) is not node for t in terms):
            continue
        products = [scalar_product(t) for t in terms]
        if any(p is None for p in products):
            continue
        k = float(np.asarray(scale[1].values).ravel()[0])
        for term, (_, weight) in zip(terms, products, strict=True):
            value = np.asarray(np.asarray(weight.values).ravel()[0] * k, dtype=weight.values.dtype)
            slot = 1 if term.inputs[1] is weight else 0
            term.inputs[slot] = constant(f"{weight.name}_scaled_{folded}", value.reshape(weight.values.shape))
        node.outputs = [after.outputs[0]]
        after.outputs.clear()
        folded += 1
    graph.cleanup().toposort()
    return folded


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


def rewrite_model(model: onnx.ModelProto, rewrite: Callable[[gs.Graph], bool]) -> onnx.ModelProto:
    """``model`` after ``rewrite`` changed its graph (at the same IR version); ``model`` itself when it changed nothing."""
    graph = gs.import_onnx(model)
    if not rewrite(graph):
        return model
    result = gs.export_onnx(graph.cleanup().toposort())
    result.ir_version = model.ir_version
    return result


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


def read_metadata(model: onnx.ModelProto, source: str | None = None) -> dict[str, Any]:
    """The effdet_rt entries of the model's metadata; a value that is not JSON (an edited or foreign file) is a
    ModelFileError naming the entry (and ``source``, the file, when given)."""
    from effdet_rt.errors import ModelFileError

    values = {}
    for p in model.metadata_props:
        if not p.key.startswith(METADATA_PREFIX):
            continue
        try:
            values[p.key[len(METADATA_PREFIX) :]] = json.loads(p.value)
        except ValueError:
            where = f"{source}: " if source else ""
            raise ModelFileError(f"{where}ONNX metadata entry {p.key!r} is not JSON ({p.value[:40]!r}); re-export the "
                                 "model with `effdet-rt export`") from None
    return values


def postprocess_node_names(model: onnx.ModelProto) -> list[str]:
    """Nodes after the network's raw heads (NMS, decoding): kept in float."""
    heads = set(RAW_OUTPUTS)
    downstream: set[str] = set()
    excluded = []
    for node in model.graph.node:  # nodes are topologically sorted
        if heads & set(node.input) or downstream & set(node.input):
            excluded.append(node.name)
            downstream.update(node.output)
    return excluded


def softmax_node_names(model: onnx.ModelProto) -> list[str]:
    return [node.name for node in model.graph.node if node.op_type == "Softmax"]


def constant(name: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.ascontiguousarray(value))
