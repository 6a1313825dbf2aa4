"""Training-only swish whose gradient runs as one XLA-fused kernel (``train.xla_swish_gradient``).

Forward is ``tf.nn.silu`` as before. The stock gradient recomputes the sigmoid and then makes about six passes
over the activation (sigmoid, sub, mul, add, mul, mul); on a CPU these element-wise passes over the large early
feature maps cost as much as the depthwise convolutions. Compiling just that expression with XLA fuses it into a
single pass that reads the activation once: same value to float rounding (not bit for bit, so seeded runs drift
apart). The whole train step under XLA is not an option on CPU (see benchmarks/results/train_throughput.md). Only the training model is changed; saved
checkpoints hold weights, so export and inference build the stock network.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@tf.function(jit_compile=True, autograph=False)
def _swish_gradient(features: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
    sigmoid = tf.sigmoid(features)
    return upstream * (sigmoid * (1.0 + features * (1.0 - sigmoid)))


@tf.custom_gradient
def swish_with_fused_gradient(features: tf.Tensor):
    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return _swish_gradient(features, upstream)

    return tf.nn.silu(features), gradient


def is_swish(layer: keras.layers.Layer) -> bool:
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Activation) and getattr(activation, "__name__", "") in ("swish", "silu")


def use_fused_swish_gradient(model: keras.Model) -> int:
    """Swap every swish Activation layer of ``model`` to the fused-gradient version; returns how many."""
    swapped = 0
    for layer in model.layers:
        if is_swish(layer):
            layer.activation = swish_with_fused_gradient
            swapped += 1
    return swapped
