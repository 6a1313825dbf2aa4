"""EfficientNet B0..B7 (MBConv blocks with squeeze-excite, swish) and Lite0..Lite4 (no squeeze-excite, ReLU6, fixed
stem and head) built from tf_keras layers.

Backbone block ids (for ``freeze_blocks``): 0 = the stem (3x3 stride-2 conv + BN), 1..7 = the seven MBConv stages
(1: 16 ch, 2: 24 ch / stride 4, 3: 40 ch / stride 8 = C3, 4: 80 ch, 5: 112 ch / stride 16 = C4,
6: 192 ch, 7: 320 ch / stride 32 = C5; channel counts for B0, wider variants scale them).
Layer names start with ``stem_`` or ``stage{id}_`` so the id of a layer can be read off its name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf
import tf_keras as keras

from effdet_rt.errors import UserError
from effdet_rt.model.configs import (
    B0_STAGES,
    FEATURE_STAGES,
    HEAD_FILTERS,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    STEM_FILTERS,
    BackboneConfig,
    get_backbone_config,
)

NUM_BACKBONE_BLOCKS = 8  # stem + seven stages

# normal(0, sqrt(2 / fan_out)) for convolutions, uniform(+-1/sqrt(fan_out)) for the classifier's dense layer


def conv_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def dense_init() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_out", distribution="uniform")


@keras.utils.register_keras_serializable(package="effdet_rt")
class ImageNormalization(keras.layers.Layer):
    """(image - mean) / std on 0..255 RGB pixels (ImageNet's unless given); constants, no weights."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN_RGB, std: Sequence[float] = IMAGENET_STD_RGB, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        mean = tf.constant(self.mean, dtype=images.dtype)
        std = tf.constant(self.std, dtype=images.dtype)
        return (images - mean) / std

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


def input_normalization(cfg: BackboneConfig) -> ImageNormalization:
    return ImageNormalization(cfg.mean_rgb, cfg.stddev_rgb, name="normalize")


def activation(kind: str, name_prefix: str, name_suffix: str = "") -> keras.layers.Layer:
    """The network's nonlinearity, named ``<prefix><kind><suffix>`` (e.g. ``stem_swish``, ``stem_relu6``)."""
    if kind == "swish":
        return keras.layers.Activation("swish", name=name_prefix + "swish" + name_suffix)
    if kind == "relu6":
        return keras.layers.ReLU(6.0, name=name_prefix + "relu6" + name_suffix)
    raise ValueError(f"unknown activation {kind!r}")


@keras.utils.register_keras_serializable(package="effdet_rt")
class StochasticDepth(keras.layers.Layer):
    """Drops the whole residual branch of a sample with probability 1 - survival_prob while training."""

    def __init__(self, survival_prob: float, **kwargs):
        super().__init__(**kwargs)
        self.survival_prob = survival_prob

    def call(self, branch: tf.Tensor, training=None) -> tf.Tensor:
        if not training or self.survival_prob >= 1.0:
            return branch
        batch = tf.shape(branch)[0]
        keep = tf.floor(self.survival_prob + tf.random.uniform([batch, 1, 1, 1], dtype=branch.dtype))
        return branch / self.survival_prob * keep

    def get_config(self) -> dict:
        return {**super().get_config(), "survival_prob": self.survival_prob}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width` and round to a multiple of `divisor` (never below 90% of the target)."""
    target = filters * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * target:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


@dataclass(frozen=True)
class BlockSpec:
    """One scaled MBConv block."""

    stage: int  # 1..7
    index: int  # index inside the stage
    kernel_size: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int
    se_ratio: float

    @property
    def prefix(self) -> str:
        return f"stage{self.stage}_block{self.index}_"


def scaled_blocks(cfg: BackboneConfig) -> list[BlockSpec]:
    blocks: list[BlockSpec] = []
    for stage_id, stage in enumerate(B0_STAGES, start=1):
        in_filters = round_filters(stage.in_filters, cfg.width)
        out_filters = round_filters(stage.out_filters, cfg.width)
        fixed = cfg.fix_head_stem and stage_id in (1, len(B0_STAGES))
        repeats = stage.repeats if fixed else round_repeats(stage.repeats, cfg.depth)
        for index in range(repeats):
            blocks.append(
                BlockSpec(
                    stage=stage_id,
                    index=index,
                    kernel_size=stage.kernel_size,
                    stride=stage.stride if index == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    in_filters=in_filters if index == 0 else out_filters,
                    out_filters=out_filters,
                    se_ratio=stage.se_ratio if cfg.use_se else 0.0,
                )
            )
    return blocks


def _batch_norm(cfg: BackboneConfig, name: str):
    """The BatchNormalization after a convolution, or a pass-through when the config has none."""
    if not cfg.use_batch_norm:
        return lambda x: x
    return keras.layers.BatchNormalization(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, name=name)


def _conv1x1(filters: int, name: str, use_bias: bool = False) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters, 1, padding="same", use_bias=use_bias, kernel_initializer=conv_init(), name=name
    )


def _squeeze_excite(x: tf.Tensor, block: BlockSpec, cfg: BackboneConfig) -> tf.Tensor:
    p = block.prefix
    reduced = max(1, int(block.in_filters * block.se_ratio))
    expanded = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=p + "se_pool")(x)
    s = _conv1x1(reduced, p + "se_reduce", use_bias=True)(s)
    s = activation(cfg.activation, p + "se_")(s)
    s = _conv1x1(expanded, p + "se_expand", use_bias=True)(s)
    s = keras.layers.Activation("sigmoid", name=p + "se_sigmoid")(s)
    return keras.layers.Multiply(name=p + "se_scale")([x, s])


def mbconv_block(x: tf.Tensor, block: BlockSpec, cfg: BackboneConfig, survival_prob: float | None) -> tf.Tensor:
    """Inverted residual: 1x1 expand, depthwise kxk, squeeze-excite, 1x1 project (+ skip when shapes match)."""
    p = block.prefix
    inputs = x
    expanded = block.in_filters * block.expand_ratio
    if block.expand_ratio != 1:
        x = _conv1x1(expanded, p + "expand_conv", use_bias=not cfg.use_batch_norm)(x)
        x = _batch_norm(cfg, p + "expand_bn")(x)
        x = activation(cfg.activation, p + "expand_")(x)
    x = keras.layers.DepthwiseConv2D(
        block.kernel_size, strides=block.stride, padding="same", use_bias=not cfg.use_batch_norm,
        depthwise_initializer=conv_init(), name=p + "dwconv",
    )(x)
    x = _batch_norm(cfg, p + "dw_bn")(x)
    x = activation(cfg.activation, p + "dw_")(x)
    if block.se_ratio:
        x = _squeeze_excite(x, block, cfg)
    x = _conv1x1(block.out_filters, p + "project_conv", use_bias=not cfg.use_batch_norm)(x)
    x = _batch_norm(cfg, p + "project_bn")(x)
    if block.stride == 1 and block.in_filters == block.out_filters:
        if survival_prob is not None and survival_prob < 1.0:
            x = StochasticDepth(survival_prob, name=p + "drop")(x)
        x = keras.layers.Add(name=p + "add")([x, inputs])
    return x


def stem_filters(cfg: BackboneConfig) -> int:
    return STEM_FILTERS if cfg.fix_head_stem else round_filters(STEM_FILTERS, cfg.width)


def head_filters(cfg: BackboneConfig) -> int:
    return HEAD_FILTERS if cfg.fix_head_stem else round_filters(HEAD_FILTERS, cfg.width)


def efficientnet_stem(x: tf.Tensor, cfg: BackboneConfig) -> tf.Tensor:
    x = keras.layers.Conv2D(
        stem_filters(cfg), 3, strides=2, padding="same", use_bias=not cfg.use_batch_norm,
        kernel_initializer=conv_init(), name="stem_conv",
    )(x)
    x = _batch_norm(cfg, "stem_bn")(x)
    return activation(cfg.activation, "stem_")(x)


def efficientnet_features(
    images: tf.Tensor, cfg: BackboneConfig, survival_prob: float | None = None
) -> tuple[dict[int, tf.Tensor], tf.Tensor]:
    """Stem + MBConv stages on normalised images -> ({3: C3, 4: C4, 5: C5}, last block output).

    survival_prob: stochastic depth of the last block (earlier blocks keep more: 1 - (1-p) * i / n); None = off.
    """
    x = efficientnet_stem(images, cfg)
    blocks = scaled_blocks(cfg)
    features: dict[int, tf.Tensor] = {}
    stage_of_level = {stage: level for level, stage in FEATURE_STAGES.items()}
    for i, block in enumerate(blocks):
        block_prob = None if survival_prob is None else 1.0 - (1.0 - survival_prob) * i / len(blocks)
        x = mbconv_block(x, block, cfg, block_prob)
        is_stage_end = i + 1 == len(blocks) or blocks[i + 1].stage != block.stage
        if is_stage_end and (block.stage - 1) in stage_of_level:
            features[stage_of_level[block.stage - 1]] = x
    return features, x


def backbone_block_id(layer_name: str) -> int | None:
    """0 for stem layers, 1..7 for stage layers, None for layers outside the backbone."""
    if layer_name.startswith("stem_"):
        return 0
    match = re.match(r"stage(\d+)_", layer_name)
    return int(match.group(1)) if match else None


def freeze_backbone_blocks(model: keras.Model, block_ids: Sequence[int]) -> None:
    wanted = set(block_ids)
    bad = sorted(b for b in wanted if not 0 <= b < NUM_BACKBONE_BLOCKS)
    if bad:

        raise UserError(
            f"freeze_blocks {bad} out of range: backbone block ids are 0 (stem) to 7 (last MBConv stage)"
        )
    for layer in model.layers:
        if backbone_block_id(layer.name) in wanted:
            layer.trainable = False


def build_efficientnet_classifier(
    name: str, num_classes: int, input_size: tuple[int, int] | None = None
) -> keras.Model:
    """EfficientNet image classifier: backbone + 1x1 head conv + global pool + dropout + dense (logits)."""
    cfg = get_backbone_config(name)
    size = input_size or (cfg.resolution, cfg.resolution)
    images = keras.Input((*size, 3), name="images", dtype=tf.float32)
    _, x = efficientnet_features(input_normalization(cfg)(images), cfg, cfg.survival_prob)
    x = _conv1x1(head_filters(cfg), "head_conv")(x)
    x = _batch_norm(cfg, "head_bn")(x)
    x = activation(cfg.activation, "head_")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=dense_init(), name="logits")(x)
    return keras.Model(images, logits, name=cfg.name)
