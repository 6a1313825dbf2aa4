"""The EfficientNet classifier of a classification spec, on the detector's backbone builder.

images (N, H, W, C) raw pixels -> preprocessing (preprocess_mode, inside the graph) -> EfficientNet stem + MBConv
stages (`effdet_rt.model.efficientnet`) -> head -> logits.
- ``retain_head: true``: the ImageNet head of the literature: 1x1 conv to 1280 (x width) + BN + swish, global
  average pool, dropout at the variant's rate (B0 0.2 ... B7 0.5), Dense.
- ``retain_head: false`` (TAO's default): global average pool of the last stage, dropout ``model.dropout``, Dense.
Stochastic depth is off: its per-call randomness cannot be replayed, and a resumed run must equal a straight one.
The dropout layer draws its mask from a counter-seeded stateless generator for the same reason; the counter is a
weight of the model, so it is checkpointed with it.
"""

from __future__ import annotations

from dataclasses import replace

import tensorflow as tf
import tf_keras as keras

from effdet_rt.classification.preprocess import (
    preprocessing_from_spec,
    preprocessing_layer,
    preprocessing_layer_class,
)
from effdet_rt.model.configs import get_backbone_config
from effdet_rt.model.efficientdet import freeze_batch_norms
from effdet_rt.model.efficientnet import (
    activation,
    conv_init,
    dense_init,
    efficientnet_features,
    freeze_backbone_blocks,
    head_filters,
)
from effdet_rt.model.pruned import apply_filter_counts

LOGITS_LAYER = "logits"


@keras.utils.register_keras_serializable(package="effdet_rt")
class SeededDropout(keras.layers.Layer):
    """Dropout whose mask at training call k is a stateless function of (seed, k)."""

    def __init__(self, rate: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), int(seed)

    def build(self, input_shape) -> None:
        self.calls = self.add_weight("calls", shape=(), dtype=tf.int64, initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, x, training=None):
        if not training or self.rate <= 0.0:
            return x
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.calls])
        keep = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype) >= self.rate
        self.calls.assign_add(1)
        return tf.where(keep, x / (1.0 - self.rate), tf.zeros_like(x))

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def backbone_config(spec):
    cfg = get_backbone_config(spec.model.arch)
    bn = spec.train.bn_config
    return replace(cfg, bn_momentum=float(bn.momentum), bn_epsilon=float(bn.epsilon),
                   use_batch_norm=bool(spec.model.use_batch_norm))


def build_classifier(spec, num_classes: int, filter_counts: dict[str, int] | None = None) -> keras.Model:
    """The trainable classifier (logits out) with freeze_blocks / freeze_bn applied; ``filter_counts`` (a pruned
    checkpoint's record, `effdet_rt.model.pruned`) builds the smaller network it was pruned to."""
    m = spec.model
    cfg = backbone_config(spec)
    images = keras.Input((*m.size, m.channels), name="images", dtype=tf.float32)
    x = preprocessing_layer(preprocessing_from_spec(spec))(images)
    _, x = efficientnet_features(x, cfg, survival_prob=None)
    rate = cfg.dropout if m.retain_head else float(m.dropout)
    if m.retain_head:
        x = keras.layers.Conv2D(head_filters(cfg), 1, padding="same",
                                use_bias=not cfg.use_batch_norm, kernel_initializer=conv_init(), name="head_conv")(x)
        if cfg.use_batch_norm:
            x = keras.layers.BatchNormalization(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, name="head_bn")(x)
        x = activation(cfg.activation, "head_")(x)  # head_swish; head_relu6 for the Lite backbones
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if rate > 0:
        x = SeededDropout(rate, seed=spec.train.random_seed, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=dense_init(), name=LOGITS_LAYER)(x)
    model = apply_filter_counts(keras.Model(images, logits, name=cfg.name), filter_counts)
    if m.freeze_blocks:
        freeze_backbone_blocks(model, list(m.freeze_blocks))
    if m.freeze_bn:
        freeze_batch_norms(model)
    return model


def passthrough_layers() -> tuple[type, ...]:
    """The classifier's own layers that keep their input's channels (the pruner follows them like BatchNorm)."""
    return (preprocessing_layer_class(), SeededDropout)


def with_softmax(model: keras.Model) -> keras.Model:
    """The deployed form: probabilities out (the ONNX export and every engine)."""
    probabilities = keras.layers.Activation("softmax", dtype=tf.float32, name="probabilities")(model.output)
    return keras.Model(model.input, probabilities, name=model.name)


def regularized_kernels(model: keras.Model, scope: list[str]) -> list[tf.Variable]:
    """Kernels of the layers in ``reg_config.scope``: 'conv2d' = Conv2D proper (not depthwise), 'dense' = Dense."""
    kinds = {"conv2d": keras.layers.Conv2D, "dense": keras.layers.Dense}
    wanted = tuple(kinds[s] for s in scope)
    return [layer.kernel for layer in model.layers
            if type(layer) in wanted and layer.trainable and getattr(layer, "kernel", None) is not None]


def regularization_loss(kernels: list[tf.Variable], reg_type: str, weight_decay: float):
    """Keras' l1 / l2 regularizers summed: wd * sum|w| or wd * sum w^2 (TAO attaches those to the same layers)."""
    if reg_type == "None" or not kernels or weight_decay == 0:
        return tf.constant(0.0)
    if reg_type == "L1":
        return weight_decay * tf.add_n([tf.reduce_sum(tf.abs(k)) for k in kernels])
    return weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
