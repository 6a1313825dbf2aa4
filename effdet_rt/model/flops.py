"""Multiply-adds of a network at batch 1, counted like google/automl: tfprof float_ops // 2.

The model is traced at batch 1 in inference mode, its variables frozen to constants, and the TF1 profiler
counts the floating point operations of that graph (convolutions, matmuls, element-wise ops); one multiply-add
is two float ops.

For a detector at a large input, `detector_multiply_adds` avoids tracing the full size: every op's cost is either
proportional to H*W (all feature maps are H/2^l x W/2^l) or independent of it (squeeze-excite convs on pooled
1x1 maps), so two traces at the smallest allowed sizes give the exact count at any size by a linear fit in H*W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

from effdet_rt.model.configs import get_config
from effdet_rt.model.cost_table import CostTerms


def _frozen(concrete) -> tf.compat.v1.GraphDef:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete).graph.as_graph_def()


def float_ops(graph_def: tf.compat.v1.GraphDef) -> int:
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        builder = tf.compat.v1.profiler.ProfileOptionBuilder
        options = builder(builder.float_operation()).with_empty_output().build()
        profile = tf.compat.v1.profiler.profile(graph, options=options)
    return int(profile.total_float_ops)


def _traced_multiply_adds(forward, input_shape: tuple[int, ...], dtype=tf.float32) -> int:
    concrete = forward.get_concrete_function(tf.TensorSpec([1, *input_shape], dtype))
    return float_ops(_frozen(concrete)) // 2


def count_multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one forward pass at batch 1 of a model with a fixed input shape."""
    forward = tf.function(lambda images: model(images, training=False))
    return _traced_multiply_adds(forward, tuple(model.input.shape[1:]), model.input.dtype)


@dataclass(frozen=True)
class ModelCost:
    name: str
    input_size: tuple[int, int]
    trainable_params: int
    multiply_adds: int


def detector_cost(name: str, num_classes: int = 90, input_size: tuple[int, int] | None = None) -> ModelCost:
    """Trainable parameters and exact multiply-adds of an EfficientDet, from two small traces (see module doc)."""
    from effdet_rt.model.efficientdet import check_input_size, efficientdet_network

    cfg = get_config(name)
    size = input_size or (cfg.image_size, cfg.image_size)
    check_input_size(size, cfg.max_level)
    small = 2**cfg.max_level
    if size[0] % small or size[1] % small:  # odd maps above P5: no linear fit, trace the size itself
        model = efficientdet_network(cfg, num_classes, size, cfg.num_anchors, cfg.min_level, cfg.max_level)
        params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        return ModelCost(cfg.name, size, params, count_multiply_adds(model))
    terms = traced_cost_terms(cfg.name, num_classes)
    return ModelCost(cfg.name, size, terms.trainable_params, terms.multiply_adds(size))


def traced_cost_terms(name: str, num_classes: int = 90) -> CostTerms:
    from effdet_rt.model.efficientdet import efficientdet_network

    cfg = get_config(name)
    small = 2**cfg.max_level
    model = efficientdet_network(cfg, num_classes, (None, None), cfg.num_anchors, cfg.min_level, cfg.max_level)
    forward = tf.function(lambda images: model(images, training=False))
    costs = [_traced_multiply_adds(forward, (side, side, 3)) for side in (small, 2 * small)]
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return CostTerms(params, small, costs[0], costs[1])


def detector_multiply_adds(name: str, num_classes: int = 90, input_size: tuple[int, int] | None = None) -> int:
    return detector_cost(name, num_classes, input_size).multiply_adds
