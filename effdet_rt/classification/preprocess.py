"""TAO's three preprocess modes, as one per-channel affine map that runs inside the network (and so the ONNX graph).

Input pixels are the image's own values (0..255 for 8-bit, 0..65535 for 16-bit grayscale), RGB channel order:
- caffe: RGB -> BGR, minus the BGR mean (``data.image_mean``, default 103.939, 116.779, 123.68; gray 117.3786, or
  30048.9216 = 117.3786 * 256 for 16-bit), no scaling;
- torch: x / 255 (16-bit: / 65535), minus mean (0.485, 0.456, 0.406; gray 0.449), divided by std 0.224 for every
  channel (TAO's value; Keras' own torch mode uses 0.229, 0.224, 0.225, which a single DeepStream net-scale-factor
  cannot express);
- tf: x / 127.5 - 1 (16-bit: x / 32767.5 - 1).
Each is written as ``(x[channels] - mean) * scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CAFFE_MEAN_GRAY = {8: 117.3786, 16: 30048.9216}
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_MEAN_GRAY = 0.449
TORCH_STD = 0.224


@dataclass(frozen=True)
class Preprocessing:
    reverse_channels: bool
    mean: tuple[float, ...]  # per network channel (after any reversal)
    scale: tuple[float, ...]

    def apply(self, images: np.ndarray) -> np.ndarray:
        """The reference in numpy: (N, H, W, C) or (H, W, C) float pixels -> network input."""
        x = np.asarray(images, np.float32)
        if self.reverse_channels:
            x = x[..., ::-1]
        return (x - np.asarray(self.mean, np.float32)) * np.asarray(self.scale, np.float32)


def preprocessing_for(mode: str, channels: int, depth: int = 8, image_mean: list[float] | None = None) -> Preprocessing:
    peak = 255.0 if depth == 8 else 65535.0
    if mode == "tf":
        half = peak / 2.0
        return Preprocessing(False, (half,) * channels, (1.0 / half,) * channels)
    if mode == "torch":
        means = TORCH_MEAN_RGB if channels == 3 else (TORCH_MEAN_GRAY,)
        return Preprocessing(False, tuple(m * peak for m in means), (1.0 / (TORCH_STD * peak),) * channels)
    if mode == "caffe":
        if image_mean:
            means = tuple(float(m) for m in image_mean)
        else:
            means = CAFFE_MEAN_BGR if channels == 3 else (CAFFE_MEAN_GRAY[depth],)
        return Preprocessing(channels == 3, means, (1.0,) * channels)
    raise ValueError(f"unknown preprocess_mode {mode!r}")


def preprocessing_from_spec(spec) -> Preprocessing:
    return preprocessing_for(spec.data.preprocess_mode, spec.model.channels, spec.model.input_image_depth,
                             list(spec.data.image_mean))


def preprocessing_layer(prep: Preprocessing, name: str = "preprocess"):
    """The tf_keras layer computing `Preprocessing.apply` in the graph."""
    return preprocessing_layer_class()(prep.reverse_channels, list(prep.mean), list(prep.scale), name=name)


_LAYER = None


def preprocessing_layer_class():
    """The tf_keras layer class of `preprocessing_layer` (defined on first use, so TensorFlow loads late)."""
    global _LAYER
    if _LAYER is not None:
        return _LAYER
    import tensorflow as tf
    import tf_keras as keras

    @keras.utils.register_keras_serializable(package="effdet_rt")
    class ClassifierPreprocessing(keras.layers.Layer):
        """(x[reversed channels] - mean) * scale with constants; no weights."""

        def __init__(self, reverse_channels: bool, mean: list[float], scale: list[float], **kwargs):
            super().__init__(**kwargs)
            self.reverse_channels, self.mean, self.scale = bool(reverse_channels), list(mean), list(scale)

        def call(self, images):
            x = tf.reverse(images, axis=[-1]) if self.reverse_channels else images
            return (x - tf.constant(self.mean, images.dtype)) * tf.constant(self.scale, images.dtype)

        def get_config(self) -> dict:
            return {**super().get_config(), "reverse_channels": self.reverse_channels, "mean": self.mean,
                    "scale": self.scale}

    _LAYER = ClassifierPreprocessing
    return _LAYER
