"""BiFPN: the extra pyramid levels above C5 and the repeated bidirectional fusion cells.

The cell topology is data (`FpnNode` list): node i produces feature index num_levels + i from the features at
`inputs` (indices into [P_min .. P_max input features, node 0 output, node 1 output, ...]).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from effdet_rt.model.configs import DetectorConfig
from effdet_rt.model.efficientnet import activation

FUSION_EPSILON = 1e-4


@dataclass(frozen=True)
class FpnNode:
    level: int
    inputs: tuple[int, ...]


def bifpn_nodes(min_level: int, max_level: int) -> list[FpnNode]:
    """Top-down pass (max-1 .. min) then bottom-up pass (min+1 .. max) with same-level skip inputs."""
    ids = {level: [level - min_level] for level in range(min_level, max_level + 1)}
    next_id = max_level - min_level + 1
    nodes: list[FpnNode] = []
    for level in range(max_level - 1, min_level - 1, -1):
        nodes.append(FpnNode(level, (ids[level][-1], ids[level + 1][-1])))
        ids[level].append(next_id)
        next_id += 1
    for level in range(min_level + 1, max_level + 1):
        nodes.append(FpnNode(level, (*ids[level], ids[level - 1][-1])))
        ids[level].append(next_id)
        next_id += 1
    return nodes


def cell_outputs(nodes: list[FpnNode], min_level: int, max_level: int) -> list[int]:
    """Feature index of the last node of each level (the cell's outputs, P_min first)."""
    num_levels = max_level - min_level + 1
    last = {level: level - min_level for level in range(min_level, max_level + 1)}
    for i, node in enumerate(nodes):
        last[node.level] = num_levels + i
    return [last[level] for level in range(min_level, max_level + 1)]


@keras.utils.register_keras_serializable(package="effdet_rt")
class FastNormalizedFusion(keras.layers.Layer):
    """sum_i relu(w_i) * x_i / (sum_i relu(w_i) + eps), one learnt scalar per input."""

    def build(self, input_shape):
        self.fusion_weights = self.add_weight(
            name="weights", shape=(len(input_shape),), initializer="ones", trainable=True
        )
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        weights = tf.nn.relu(tf.cast(self.fusion_weights, inputs[0].dtype))
        total = tf.reduce_sum(weights) + FUSION_EPSILON
        return tf.add_n([inputs[i] * weights[i] for i in range(len(inputs))]) / total


def _batch_norm(cfg: DetectorConfig, name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, name=name)


def resample(
    x: tf.Tensor, from_level: int, to_level: int, cfg: DetectorConfig, name: str,
    target_size: tuple[int | None, int | None] | None = None,
) -> tf.Tensor:
    """1x1 conv + BN when channels differ from fpn_num_filters, then max-pool down or nearest-upsample.

    Down: a (2s+1)-wide max-pool of stride s with 'same' padding, so odd maps halve rounding up (ceil), as automl.
    Up: nearest-neighbour by the level factor; when ``target_size`` (the map at ``to_level``) is not exactly that
    (an input that is not a multiple of 2**max_level gives odd maps: Lite0 at 320 has P6 5x5, P7 3x3), a nearest
    resize to ``target_size``, which is what automl does.
    """
    if x.shape[-1] != cfg.fpn_num_filters:
        x = keras.layers.Conv2D(cfg.fpn_num_filters, 1, padding="same", name=name + "_conv")(x)
        x = _batch_norm(cfg, name + "_bn")(x)
    if to_level > from_level:
        stride = 2 ** (to_level - from_level)
        x = keras.layers.MaxPooling2D(stride + 1, strides=stride, padding="same", name=name + "_pool")(x)
    elif to_level < from_level:
        factor = 2 ** (from_level - to_level)
        height, width = x.shape[1], x.shape[2]
        known = target_size is not None and None not in (*target_size, height, width)
        if known and tuple(target_size) != (height * factor, width * factor):
            x = keras.layers.Resizing(int(target_size[0]), int(target_size[1]), interpolation="nearest",
                                      name=name + "_up")(x)
        else:
            x = keras.layers.UpSampling2D(factor, interpolation="nearest", name=name + "_up")(x)
    return x


def extra_levels(features: dict[int, tf.Tensor], cfg: DetectorConfig, max_level: int) -> dict[int, tf.Tensor]:
    """Add P6.. P_max above the backbone's C5 (1x1 conv + BN if needed, 3x3/2 max-pool)."""
    features = dict(features)
    top = max(features)
    for level in range(top + 1, max_level + 1):
        features[level] = resample(features[level - 1], level - 1, level, cfg, f"p{level}_from_p{level - 1}")
    return features


def fuse(inputs: list[tf.Tensor], weight_method: str, name: str) -> tf.Tensor:
    if weight_method == "fastattn":
        return FastNormalizedFusion(name=name)(inputs)
    if weight_method == "sum":
        return keras.layers.Add(name=name)(inputs)
    raise ValueError(f"unknown BiFPN weight method {weight_method!r}")


def bifpn_cell(
    features: list[tf.Tensor], cfg: DetectorConfig, min_level: int, max_level: int, cell: int
) -> list[tf.Tensor]:
    nodes = bifpn_nodes(min_level, max_level)
    feats = list(features)
    feat_levels = list(range(min_level, max_level + 1))
    for i, node in enumerate(nodes):
        p = f"fpn_cell{cell}_node{i}"
        target = tuple(feats[node.inputs[0]].shape[1:3])  # every node's first input is at its own level
        inputs = [
            resample(feats[j], feat_levels[j], node.level, cfg, f"{p}_in{j}", target) for j in node.inputs
        ]
        x = fuse(inputs, cfg.weight_method, p + "_fuse")
        x = activation(cfg.activation, p + "_")(x)
        x = keras.layers.SeparableConv2D(cfg.fpn_num_filters, 3, padding="same", use_bias=True, name=p + "_conv")(x)
        x = _batch_norm(cfg, p + "_bn")(x)
        feats.append(x)
        feat_levels.append(node.level)
    return [feats[j] for j in cell_outputs(nodes, min_level, max_level)]


def bifpn(features: dict[int, tf.Tensor], cfg: DetectorConfig, min_level: int, max_level: int) -> list[tf.Tensor]:
    """Backbone features {level: tensor} -> [P_min .. P_max] after fpn_cell_repeats cells."""
    pyramid = extra_levels(features, cfg, max_level)
    feats = [pyramid[level] for level in range(min_level, max_level + 1)]
    for cell in range(cfg.fpn_cell_repeats):
        feats = bifpn_cell(feats, cfg, min_level, max_level, cell)
    return feats
