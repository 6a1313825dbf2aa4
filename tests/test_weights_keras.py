"""keras.applications EfficientNet .h5 import: Keras' own EfficientNetB0 with seeded random weights vs ours."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.errors import CheckpointError

SIZE = 128
TOLERANCE = 1e-5
# Keras layers whose outputs are our C3, C4, C5 (the last block of stages 3, 5 and 7 of B0)
FEATURE_LAYERS = ("block3b_add", "block5c_add", "block7a_project_bn")


@pytest.fixture(scope="module")
def keras_b0(tmp_path_factory):
    """Keras' EfficientNetB0 (with its 1000-class top) with seeded random weights, saved as .h5."""
    import tf_keras as keras

    keras.utils.set_random_seed(21)
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(21)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.5, 1.5, c)])
        elif isinstance(layer, keras.layers.Normalization):  # ImageNet's, as keras.applications uses it
            layer.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2,
                               np.array(0, np.int64)])
        elif layer.weights:  # biases are zero-initialised: make them random too
            layer.set_weights([w + rng.normal(0, 0.05, w.shape) if w.ndim == 1 else w for w in layer.get_weights()])
    path = tmp_path_factory.mktemp("h5") / "efficientnetb0.h5"
    model.save_weights(path)
    image = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in FEATURE_LAYERS] + [model.output])
    return path, image, [o.numpy() for o in probe(image, training=False)]


def test_detector_backbone_feature_maps_equal_keras(keras_b0):
    from effdet_rt.checkpoint import assign_weights
    from effdet_rt.model.efficientnet import build_efficientnet_backbone
    from effdet_rt.weights.keras_h5 import import_keras_h5

    path, image, expected = keras_b0
    imported = import_keras_h5(path)
    assert imported.model_name == "efficientdet-d0" and imported.extra_metadata["backbone_only"]
    assert "input normalisation: the .h5's is ImageNet's mean and std, as ours" in imported.notices
    assert any("classifier head top_conv, top_bn, predictions" in n for n in imported.notices)
    backbone = build_efficientnet_backbone("efficientnet-b0", (SIZE, SIZE))
    report = assign_weights(backbone, imported.weights, strict=True)  # every backbone weight, nothing else
    assert len(report.loaded) == len(backbone.weights) == len(imported.weights) == 304
    ours = [o.numpy() for o in backbone(image, training=False)]
    for level, (a, b) in enumerate(zip(ours, expected[:3], strict=True), start=3):
        assert a.shape == b.shape
        assert float(np.abs(b).max()) > 0.5
        assert float(np.abs(a - b).max()) <= TOLERANCE * max(1.0, float(np.abs(b).max())), level


def test_classifier_with_imagenet_head_equals_keras(keras_b0):
    import tensorflow as tf

    from effdet_rt.checkpoint import assign_weights
    from effdet_rt.model.efficientnet import build_efficientnet_classifier
    from effdet_rt.weights.keras_h5 import import_keras_h5

    path, image, expected = keras_b0
    imported = import_keras_h5(path, "efficientnet-b0")
    assert imported.num_classes == 1000 and imported.extra_metadata["logits_imported"]
    model = build_efficientnet_classifier("efficientnet-b0", 1000, (SIZE, SIZE))
    assign_weights(model, imported.weights, strict=True)
    probabilities = tf.nn.softmax(model(image, training=False)).numpy()
    assert float(np.abs(probabilities - expected[3]).max()) <= TOLERANCE


def test_other_architecture_h5_is_refused(tmp_path):
    import tf_keras as keras

    from effdet_rt.weights.keras_h5 import import_keras_h5

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    model.save_weights(tmp_path / "other.h5")
    with pytest.raises(CheckpointError, match=r"not a keras.applications EfficientNet .h5 .*dense"):
        import_keras_h5(tmp_path / "other.h5")


def test_backbone_of_another_detector_is_refused():
    from effdet_rt.weights.keras_h5 import detector_for_backbone

    with pytest.raises(CheckpointError, match="holds efficientnet-b1 weights, but efficientdet-d0 uses efficientnet-b0"):
        detector_for_backbone("efficientnet-b1", "efficientdet-d0", "b1.h5")
    with pytest.raises(CheckpointError, match="efficientdet-d6 / efficientdet-d7"):
        detector_for_backbone("efficientnet-b6", None, "b6.h5")
