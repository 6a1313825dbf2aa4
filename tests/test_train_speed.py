"""Training speed-ups keep the results: fused swish gradient (train.xla_swish_gradient) and padding-free labelling."""

import numpy as np
import pytest
import tensorflow as tf

from effdet_rt.model.anchors import AnchorConfig, generate_anchors
from effdet_rt.model.efficientdet import build_efficientdet
from effdet_rt.model.labeler import BACKGROUND, drop_padding, label_anchors
from effdet_rt.spec.loader import load_spec
from effdet_rt.trainer.fast_swish import is_swish, swish_with_fused_gradient, use_fused_swish_gradient


def silu_gradient(fn, x: tf.Tensor, upstream: tf.Tensor) -> np.ndarray:
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x, output_gradients=upstream).numpy()


def test_fused_swish_matches_silu_values_and_gradient():
    x = tf.constant([[-30.0, -12.0, -6.0, -1.0, 0.0, 0.5, 3.0, 40.0]])
    upstream = tf.constant([[1.0, 1.0, 1.0, 2.0, -1.0, 0.5, 1.0, 1.0]])
    np.testing.assert_array_equal(swish_with_fused_gradient(x).numpy(), tf.nn.silu(x).numpy())
    fused = silu_gradient(swish_with_fused_gradient, x, upstream)
    # relative accuracy also where the gradient is tiny (deep negative inputs): no absolute tolerance
    np.testing.assert_allclose(fused, silu_gradient(tf.nn.silu, x, upstream), rtol=1e-5, atol=0)
    # d/dx x*sigmoid(x) at 0 is 1/2; times upstream -1
    assert fused[0, 4] == pytest.approx(-0.5)


@pytest.fixture(scope="module")
def tiny_d0_pair():
    """Two D0 128x128 models with the same weights; the second uses the fused swish gradient."""
    stock = build_efficientdet("efficientdet-d0", 3, (128, 128))
    fused = build_efficientdet("efficientdet-d0", 3, (128, 128))
    fused.set_weights(stock.get_weights())
    return stock, fused, use_fused_swish_gradient(fused)


def test_every_swish_layer_of_d0_is_swapped(tiny_d0_pair):
    stock, fused, swapped = tiny_d0_pair
    names = [layer.name for layer in stock.layers if is_swish(layer)]
    assert swapped == len(names) == sum(1 for layer in stock.layers if "swish" in layer.name)
    # D0: stem 1 + 16 MBConv blocks (dw + SE, expand in 15) 47 + BiFPN 3 cells x 8 nodes 24 + 2 heads x 3 convs x 5 levels 30
    assert swapped == 102
    assert not any(is_swish(layer) for layer in fused.layers)
    assert not any(layer.activation is swish_with_fused_gradient for layer in stock.layers if hasattr(layer, "activation"))


def test_fused_swish_model_has_the_same_outputs_and_gradients(tiny_d0_pair):
    stock, fused, _ = tiny_d0_pair
    images = tf.random.stateless_uniform([1, 128, 128, 3], seed=[1, 2], maxval=255.0)

    def loss_and_grads(model):
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(tf.square(out)) for out in model(images, training=False)])
        return loss.numpy(), tape.gradient(loss, model.trainable_variables)

    stock_loss, stock_grads = loss_and_grads(stock)
    fused_loss, fused_grads = loss_and_grads(fused)
    assert fused_loss == stock_loss  # forward is the same op
    for variable, a, b in zip(stock.trainable_variables, stock_grads, fused_grads, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-6, err_msg=variable.name)


def test_spec_switch_defaults_off_and_can_be_turned_on():
    assert load_spec(None, []).train.xla_swish_gradient is False
    assert load_spec(None, ["train.xla_swish_gradient=true"]).train.xla_swish_gradient is True


def test_drop_padding_keeps_real_boxes_in_order_plus_one_pad():
    boxes = tf.constant([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3], [3, 3, 4, 4]], tf.float32)
    classes = tf.constant([-1, 2, -1, 0])
    kept_boxes, kept_classes = drop_padding(boxes, classes)
    np.testing.assert_array_equal(kept_classes.numpy(), [2, 0, -1])
    np.testing.assert_array_equal(kept_boxes.numpy(), [[1, 1, 2, 2], [3, 3, 4, 4], [0, 0, 0, 0]])


def test_labels_do_not_depend_on_padding():
    anchors = generate_anchors((128, 128), AnchorConfig())
    real_boxes = np.array([[10, 12, 50, 60], [64, 64, 120, 100], [5, 90, 20, 110]], np.float32)
    real_classes = np.array([1, 0, 2], np.int32)
    padded_boxes = np.zeros((100, 4), np.float32)
    padded_classes = np.full(100, -1, np.int32)
    padded_boxes[:3], padded_classes[:3] = real_boxes, real_classes
    tight = label_anchors(anchors, real_boxes, real_classes)
    padded = label_anchors(anchors, padded_boxes, padded_classes)
    for a, b in zip(tight, padded, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    class_targets = tight[0].numpy()
    assert set(np.unique(class_targets)) == {BACKGROUND, 0, 1, 2}
    empty_classes, empty_boxes = label_anchors(anchors, padded_boxes[3:], padded_classes[3:])
    assert np.all(empty_classes.numpy() == BACKGROUND) and not np.any(empty_boxes.numpy())
