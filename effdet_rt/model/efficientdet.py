"""EfficientDet: EfficientNet backbone + BiFPN + shared class/box heads, returning raw per-level outputs.

Model input ``images``: float32 NHWC, RGB 0..255 (the model normalises inside).
Model outputs, flat: [class_p{min} .. class_p{max}, box_p{min} .. box_p{max}],
class_p{l}: (N, H/2^l, W/2^l, num_anchors * num_classes) logits, box_p{l}: (N, ..., num_anchors * 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras

from effdet_rt.detections import CLASS_ID_OFFSET
from effdet_rt.errors import UserError
from effdet_rt.model.bifpn import bifpn
from effdet_rt.model.configs import DetectorConfig, get_config
from effdet_rt.model.efficientnet import efficientnet_features, freeze_backbone_blocks, input_normalization
from effdet_rt.model.heads import box_head, class_head

MIN_SUPPORTED_LEVEL = 3
MAX_SUPPORTED_LEVEL = 8


def real_num_classes(spec_num_classes: int) -> int:
    """TAO's dataset.num_classes counts the background class; the network predicts the others."""
    if int(spec_num_classes) < 2:
        raise UserError(
            f"dataset.num_classes = {spec_num_classes} is not allowed: it counts the background class, "
            "so it must be at least 2 (one real class + background)"
        )
    return int(spec_num_classes) - CLASS_ID_OFFSET


BACKBONE_STRIDE = 32  # C5's stride; levels above it may be odd-sized (rounded up), as in automl


def check_input_size(input_size: tuple[int, int], max_level: int) -> None:
    """Sides must be multiples of 32; above P5 the maps halve rounding up (Lite0's 320 gives P6 5x5, P7 3x3)."""
    del max_level  # any level count works once odd maps above P5 are resized as automl does
    for field, value in (("input_height", input_size[0]), ("input_width", input_size[1])):
        if int(value) <= 0 or int(value) % BACKBONE_STRIDE:
            raise UserError(
                f"model.{field} = {value} is not allowed: must be a multiple of {BACKBONE_STRIDE} (the backbone's stride)"
            )


def _check_levels(min_level: int, max_level: int) -> None:
    if not MIN_SUPPORTED_LEVEL <= min_level < max_level <= MAX_SUPPORTED_LEVEL:
        raise UserError(
            f"model levels min_level = {min_level}, max_level = {max_level} are not allowed: "
            f"need {MIN_SUPPORTED_LEVEL} <= min_level < max_level <= {MAX_SUPPORTED_LEVEL}"
        )


def _backbone_survival_prob(cfg: DetectorConfig) -> float | None:
    # As in the reference detector, EfficientNet-B0 runs without stochastic depth inside EfficientDet.
    return None if cfg.backbone == "efficientnet-b0" else cfg.backbone_config.survival_prob


def freeze_batch_norms(model: keras.Model) -> None:
    """Every BatchNorm non-trainable: tf_keras then runs it in inference mode even when training=True."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def efficientdet_network(
    cfg: DetectorConfig,
    num_classes: int,
    input_size: tuple[int | None, int | None],
    num_anchors: int,
    min_level: int,
    max_level: int,
) -> keras.Model:
    """The network without argument checks; input_size may be (None, None) for sides that are multiples of
    2**max_level (other sizes need static shapes: the upsampling of odd maps resizes to a known size)."""
    images = keras.Input((*input_size, 3), name="images", dtype=tf.float32)
    normalized = input_normalization(cfg.backbone_config)(images)
    features, _ = efficientnet_features(normalized, cfg.backbone_config, _backbone_survival_prob(cfg))
    features = {level: x for level, x in features.items() if min_level <= level <= max_level}
    pyramid = bifpn(features, cfg, min_level, max_level)
    levels = list(range(min_level, max_level + 1))
    class_outputs = class_head(pyramid, levels, cfg, num_classes, num_anchors)
    box_outputs = box_head(pyramid, levels, cfg, num_anchors)
    return keras.Model(images, class_outputs + box_outputs, name=cfg.name)


def build_efficientdet(
    name: str,
    num_classes: int,
    input_size: tuple[int, int] | None = None,
    *,
    num_anchors: int = 9,
    min_level: int | None = None,
    max_level: int | None = None,
    freeze_blocks: Sequence[int] = (),
    freeze_bn: bool = False,
) -> keras.Model:
    """EfficientDet `name` for `num_classes` REAL classes (no background); input_size = (height, width)."""
    cfg: DetectorConfig = get_config(name)
    if int(num_classes) < 1:
        raise UserError(f"num_classes = {num_classes} is not allowed: the detector needs at least 1 real class")
    if int(num_anchors) < 1:
        raise UserError(f"num_anchors = {num_anchors} is not allowed: must be at least 1")
    min_level = cfg.min_level if min_level is None else int(min_level)
    max_level = cfg.max_level if max_level is None else int(max_level)
    _check_levels(min_level, max_level)
    size = (cfg.image_size, cfg.image_size) if input_size is None else (int(input_size[0]), int(input_size[1]))
    check_input_size(size, max_level)

    model = efficientdet_network(cfg, int(num_classes), size, int(num_anchors), min_level, max_level)
    if freeze_blocks:
        freeze_backbone_blocks(model, freeze_blocks)
    if freeze_bn:
        freeze_batch_norms(model)
    return model


def split_outputs(outputs: Sequence[tf.Tensor], num_levels: int) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """Flat model outputs -> (class outputs per level, box outputs per level)."""
    outputs = list(outputs)
    if len(outputs) != 2 * num_levels:
        raise ValueError(f"expected {2 * num_levels} outputs for {num_levels} levels, got {len(outputs)}")
    return outputs[:num_levels], outputs[num_levels:]


def flatten_outputs(
    class_list: Sequence[tf.Tensor], box_list: Sequence[tf.Tensor], num_classes: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-level maps -> (N, total_anchors, num_classes), (N, total_anchors, 4) ordered level, y, x, anchor."""
    batch = tf.shape(class_list[0])[0]
    classes = tf.concat([tf.reshape(c, [batch, -1, num_classes]) for c in class_list], axis=1)
    boxes = tf.concat([tf.reshape(b, [batch, -1, 4]) for b in box_list], axis=1)
    return classes, boxes
