"""keras_to_onnx's use of tf2onnx: the graph copies it turns off, and the retry with them when an optimizer fails."""

import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def small_network():
    import tf_keras as keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="swish")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def _run(proto, images):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_conversion_skips_the_fallback_copies_and_leaves_the_environment_as_it_was(small_network, monkeypatch):
    import copy

    import tf2onnx.graph

    from effdet_rt.onnx.graph import keras_to_onnx

    copies = []
    real = copy.deepcopy

    def counting(value, *args, **kwargs):
        if isinstance(value, tf2onnx.graph.Graph):
            copies.append(value)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", counting)
    monkeypatch.delenv("TF2ONNX_CATCH_ERRORS", raising=False)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    proto = keras_to_onnx(small_network, (16, 16), None, 17)
    assert copies == [] and "TF2ONNX_CATCH_ERRORS" not in os.environ
    np.testing.assert_allclose(_run(proto, images), small_network(images).numpy(), atol=1e-5)


def test_an_optimizer_that_fails_is_skipped_on_a_second_conversion(small_network, monkeypatch):
    import tf2onnx.optimizer

    from effdet_rt.onnx.graph import keras_to_onnx

    class Failing:
        graph_been_opt = False

        def optimize(self, graph, iteration):
            raise RuntimeError("this optimizer cannot handle the graph")

    monkeypatch.setattr(tf2onnx.optimizer, "_optimizers", {"failing": Failing, **tf2onnx.optimizer._optimizers})
    monkeypatch.setenv("TF2ONNX_CATCH_ERRORS", "kept")
    images = np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    proto = keras_to_onnx(small_network, (16, 16), 1, 17)
    assert os.environ["TF2ONNX_CATCH_ERRORS"] == "kept"  # a user's own setting is put back
    np.testing.assert_allclose(_run(proto, images), small_network(images).numpy(), atol=1e-5)
