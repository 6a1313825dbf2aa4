"""Networks and TensorFlow set-up only the tests use: the bare backbone (parameter counts against automl and the
importers), the QAT layer count, logical CPUs for one-process distribution."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from effdet_rt.model.configs import get_backbone_config
from effdet_rt.model.efficientnet import efficientnet_features, input_normalization
from effdet_rt.model.qat import _RangeTracking


def build_efficientnet_backbone(name: str, input_size: tuple[int, int] = (224, 224)) -> keras.Model:
    """Feature extractor: images (0..255) -> [C3, C4, C5]."""
    cfg = get_backbone_config(name)
    images = keras.Input((*input_size, 3), name="images", dtype=tf.float32)
    features, _ = efficientnet_features(input_normalization(cfg)(images), cfg, cfg.survival_prob)
    return keras.Model(images, [features[3], features[4], features[5]], name=cfg.name)


def count_quantized_convs(model: keras.Model) -> int:
    """Convolutions that train with fake-quantised inputs and weights."""
    return sum(1 for layer in model.layers if isinstance(layer, _RangeTracking))


def configure_logical_cpus(count: int) -> None:
    """Split the CPU into ``count`` logical devices (must run before TensorFlow initialises its devices)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
