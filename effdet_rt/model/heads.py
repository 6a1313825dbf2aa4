"""Class and box prediction heads: separable convs shared by every pyramid level, BatchNorm per level."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from effdet_rt.model.configs import DetectorConfig
from effdet_rt.model.efficientnet import activation

CLASS_PRIOR = 0.01


def class_bias_prior(prior: float = CLASS_PRIOR) -> float:
    """Bias making every class start at probability `prior` after the sigmoid."""
    return -math.log((1.0 - prior) / prior)


def _separable(filters: int, name: str, bias_init="zeros") -> keras.layers.SeparableConv2D:
    return keras.layers.SeparableConv2D(
        filters, 3, padding="same", use_bias=True,
        depthwise_initializer=keras.initializers.VarianceScaling(),
        pointwise_initializer=keras.initializers.VarianceScaling(),
        bias_initializer=bias_init, name=name,
    )


def prediction_head(
    features: list[tf.Tensor],
    levels: list[int],
    cfg: DetectorConfig,
    outputs_per_anchor: int,
    num_anchors: int,
    kind: str,
    bias_init="zeros",
) -> list[tf.Tensor]:
    """Run the same conv tower on each level; returns one (N, H, W, num_anchors*outputs_per_anchor) per level."""
    convs = [_separable(cfg.fpn_num_filters, f"{kind}_net_conv{i}") for i in range(cfg.box_class_repeats)]
    predict = _separable(num_anchors * outputs_per_anchor, f"{kind}_net_predict", bias_init)
    outputs = []
    for x, level in zip(features, levels, strict=True):
        for i, conv in enumerate(convs):
            x = conv(x)
            x = keras.layers.BatchNormalization(
                momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, name=f"{kind}_net_bn{i}_p{level}"
            )(x)
            x = activation(cfg.activation, f"{kind}_net_", f"{i}_p{level}")(x)
        x = predict(x)
        outputs.append(keras.layers.Activation("linear", name=f"{kind}_p{level}")(x))
    return outputs


def class_head(features, levels, cfg: DetectorConfig, num_classes: int, num_anchors: int) -> list[tf.Tensor]:
    bias = keras.initializers.Constant(class_bias_prior())
    return prediction_head(features, levels, cfg, num_classes, num_anchors, "class", bias)


def box_head(features, levels, cfg: DetectorConfig, num_anchors: int) -> list[tf.Tensor]:
    return prediction_head(features, levels, cfg, 4, num_anchors, "box")
