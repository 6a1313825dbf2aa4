"""Quantization-aware training (train.qat): every convolution sees INT8-rounded inputs and weights while training.

What is simulated is what TensorRT's explicit quantization runs: symmetric INT8 (zero point 0, range -127..127),
per-output-channel scales for weights (taken from the weights themselves) and one per-tensor scale for each conv
input (a running average of the batch's max |x|, updated while training). Every conv input and kernel passes
through ``tf.quantization.quantize_and_dequantize_v2``, which tf2onnx turns into QuantizeLinear/DequantizeLinear,
so `effdet-rt export` writes a Q/DQ ONNX model that builds as INT8 without calibration.

Why not tensorflow-model-optimization: its default scheme needs a QuantizeConfig for each of our custom layers
(and for Multiply), fake-quantizes activations asymmetrically (uint8 with a zero point, which TensorRT does not
run) and quantizes weights with per-channel narrow-range FakeQuant ops that tf2onnx 1.17 cannot convert.

The rewritten layers keep their names and weight names (plus ``input_amax``-style range variables), so float
checkpoints (train.checkpoint) load into a QAT model by name, and QAT checkpoints round-trip like any other.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from effdet_rt.checkpoint import assign_weights, model_weights

NUM_BITS = 8
RANGE_DECAY = 0.99  # running average of the per-batch max |x| of each quantized conv input
MIN_RANGE = 1e-6


def fake_quant_weights(kernel: tf.Tensor, channel_axis: int) -> tf.Tensor:
    """Symmetric per-channel INT8 rounding of a kernel; the range is the kernel's own max |w| per channel."""
    channels = kernel.shape[channel_axis]
    unused = tf.zeros([channels], kernel.dtype)
    return tf.quantization.quantize_and_dequantize_v2(
        kernel, unused, unused, signed_input=True, num_bits=NUM_BITS, range_given=False, narrow_range=True,
        axis=channel_axis,
    )


def fake_quant_activations(x: tf.Tensor, amax: tf.Tensor) -> tf.Tensor:
    """Symmetric per-tensor INT8 rounding of x within [-amax, amax] (straight-through gradient inside)."""
    amax = tf.cast(tf.maximum(amax, MIN_RANGE), x.dtype)
    return tf.quantization.quantize_and_dequantize_v2(
        x, -amax, amax, signed_input=True, num_bits=NUM_BITS, range_given=True, narrow_range=True,
    )


class _RangeTracking:
    """Mixin: a non-trainable scalar range per quantized activation, learnt from training batches."""

    def add_range(self, name: str) -> tf.Variable:
        return self.add_weight(
            name=name, shape=(), initializer="zeros", trainable=False, dtype=tf.float32,
            synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.MEAN,
        )

    @staticmethod
    def quantize_input(x: tf.Tensor, amax_var: tf.Variable, training) -> tf.Tensor:
        if training:
            batch_amax = tf.stop_gradient(tf.reduce_max(tf.abs(tf.cast(x, tf.float32))))
            averaged = RANGE_DECAY * amax_var + (1.0 - RANGE_DECAY) * batch_amax
            amax = tf.where(amax_var > 0.0, averaged, batch_amax)
            amax_var.assign(amax)
            return fake_quant_activations(x, amax)
        return fake_quant_activations(x, amax_var)


class QuantConv2D(_RangeTracking, keras.layers.Conv2D):
    def build(self, input_shape):
        super().build(input_shape)
        self.input_amax = self.add_range("input_amax")

    def call(self, inputs, training=None):
        self._quantize_training = training
        return super().call(inputs)

    def convolution_op(self, inputs, kernel):
        x = self.quantize_input(inputs, self.input_amax, self._quantize_training)
        return super().convolution_op(x, fake_quant_weights(kernel, channel_axis=3))


def _depthwise(x: tf.Tensor, kernel: tf.Tensor, layer: keras.layers.Layer) -> tf.Tensor:
    strides = (1, *layer.strides, 1)
    return tf.nn.depthwise_conv2d(x, kernel, strides, layer.padding.upper(), dilations=layer.dilation_rate)


def _depthwise_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """(kh, kw, C, multiplier): one scale per output channel = per input channel when multiplier is 1."""
    if kernel.shape[-1] == 1:
        return fake_quant_weights(kernel, channel_axis=2)
    flat = tf.reshape(kernel, [*kernel.shape[:2], -1, 1])
    return tf.reshape(fake_quant_weights(flat, channel_axis=2), kernel.shape)


def _finish(layer: keras.layers.Layer, outputs: tf.Tensor) -> tf.Tensor:
    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, layer.bias)
    return layer.activation(outputs) if layer.activation is not None else outputs


class QuantDepthwiseConv2D(_RangeTracking, keras.layers.DepthwiseConv2D):
    def build(self, input_shape):
        super().build(input_shape)
        self.input_amax = self.add_range("input_amax")

    def call(self, inputs, training=None):
        x = self.quantize_input(inputs, self.input_amax, training)
        return _finish(self, _depthwise(x, _depthwise_kernel(self.depthwise_kernel), self))


class QuantSeparableConv2D(_RangeTracking, keras.layers.SeparableConv2D):
    """Depthwise then pointwise conv, each with quantized input and kernel (ONNX has them as two Convs)."""

    def build(self, input_shape):
        super().build(input_shape)
        self.input_amax = self.add_range("input_amax")
        self.pointwise_input_amax = self.add_range("pointwise_input_amax")

    def call(self, inputs, training=None):
        x = self.quantize_input(inputs, self.input_amax, training)
        x = _depthwise(x, _depthwise_kernel(self.depthwise_kernel), self)
        x = self.quantize_input(x, self.pointwise_input_amax, training)
        x = tf.nn.conv2d(x, fake_quant_weights(self.pointwise_kernel, channel_axis=3), 1, "VALID")
        return _finish(self, x)


# the most derived class first: SeparableConv2D and DepthwiseConv2D are Conv subclasses in tf_keras
QUANTIZED_LAYERS: tuple[tuple[type, type], ...] = (
    (keras.layers.SeparableConv2D, QuantSeparableConv2D),
    (keras.layers.DepthwiseConv2D, QuantDepthwiseConv2D),
    (keras.layers.Conv2D, QuantConv2D),
)


def quantized_class(layer: keras.layers.Layer) -> type | None:
    for float_class, quant_class in QUANTIZED_LAYERS:
        if type(layer) is float_class:
            return quant_class
    return None


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    quant_class = quantized_class(layer)
    return (quant_class or type(layer)).from_config(layer.get_config())


def is_quantized(model: keras.Model) -> bool:
    return any(isinstance(layer, _RangeTracking) for layer in model.layers)


def quantize_model(model: keras.Model) -> keras.Model:
    """A copy of ``model`` whose convolutions fake-quantize inputs and weights; the float weights are copied over."""

    if is_quantized(model):
        return model
    quantized = keras.models.clone_model(model, clone_function=_clone_layer)
    assign_weights(quantized, model_weights(model), strict=False)
    return quantized
