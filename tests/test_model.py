"""EfficientDet D0 structure: outputs, normalisation, heads, freezing, errors (uses the shared tiny_d0)."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from effdet_rt.errors import UserError
from effdet_rt.model.bifpn import FpnNode, bifpn_nodes, cell_outputs
from effdet_rt.model.configs import MODEL_NAMES, get_config
from effdet_rt.model.efficientdet import build_efficientdet, flatten_outputs, real_num_classes, split_outputs
from effdet_rt.model.efficientnet import backbone_block_id, round_filters, round_repeats

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)


def test_tiny_d0_outputs_names_and_shapes(tiny_d0):
    assert tiny_d0.input.shape.as_list() == [None, 128, 128, 3]
    assert tiny_d0.output_names == [f"class_p{lv}" for lv in range(3, 8)] + [f"box_p{lv}" for lv in range(3, 8)]
    shapes = [o.shape.as_list() for o in tiny_d0.outputs]
    assert shapes[:5] == [[None, 128 >> lv, 128 >> lv, 27] for lv in range(3, 8)]
    assert shapes[5:] == [[None, 128 >> lv, 128 >> lv, 36] for lv in range(3, 8)]


def test_flatten_outputs_order_and_anchor_count(tiny_d0):
    images = tf.zeros((2, 128, 128, 3))
    classes, boxes = flatten_outputs(*split_outputs(tiny_d0(images, training=False), 5), 3)
    # 9 anchors on 16^2 + 8^2 + 4^2 + 2^2 + 1^2 cells
    assert classes.shape == (2, 9 * 341, 3) and boxes.shape == (2, 9 * 341, 4)
    # level, y, x, anchor order: element 0..8 of level 3 cell (0,0) are the first 27 channels of class_p3
    class_p3 = tiny_d0(images, training=False)[0]
    np.testing.assert_allclose(classes[:, :9].numpy().reshape(2, 27), class_p3[:, 0, 0].numpy())


def test_flatten_outputs_uses_level_y_x_anchor_order():
    c3 = tf.reshape(tf.range(2 * 2 * 2 * 1, dtype=tf.float32), (1, 2, 2, 2))  # 2 anchors, 1 class
    c4 = tf.constant([[[[100.0, 101.0]]]])
    b3 = tf.zeros((1, 2, 2, 8))
    b4 = tf.zeros((1, 1, 1, 8))
    classes, boxes = flatten_outputs([c3, c4], [b3, b4], 1)
    assert classes.numpy().ravel().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 100, 101]
    assert boxes.shape == (1, 10, 4)


def test_class_bias_starts_at_prior(tiny_d0):
    bias = tiny_d0.get_layer("class_net_predict").bias.numpy()
    assert bias.shape == (27,)
    np.testing.assert_allclose(bias, -math.log(0.99 / 0.01), rtol=1e-6)
    assert np.all(tiny_d0.get_layer("box_net_predict").bias.numpy() == 0)


def test_head_convs_shared_with_batchnorm_per_level(tiny_d0):
    names = [layer.name for layer in tiny_d0.layers]
    assert sum(n.startswith("class_net_conv") for n in names) == 3
    assert sum(n.startswith("class_net_bn") for n in names) == 3 * 5
    assert sum(n.startswith("box_net_bn") for n in names) == 3 * 5


def test_normalisation_inside_model_has_no_weights(tiny_d0):
    layer = tiny_d0.get_layer("normalize")
    assert layer.weights == []
    out = layer(tf.constant([[[[0.485 * 255, 0.456 * 255, 0.406 * 255], [255.0, 255.0, 255.0]]]]))
    np.testing.assert_allclose(out.numpy()[0, 0, 0], [0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(out.numpy()[0, 0, 1], [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225], rtol=1e-5)


def test_bifpn_topology_for_p3_p7():
    nodes = bifpn_nodes(3, 7)
    assert nodes == [
        FpnNode(6, (3, 4)), FpnNode(5, (2, 5)), FpnNode(4, (1, 6)), FpnNode(3, (0, 7)),
        FpnNode(4, (1, 7, 8)), FpnNode(5, (2, 6, 9)), FpnNode(6, (3, 5, 10)), FpnNode(7, (4, 11)),
    ]
    assert cell_outputs(nodes, 3, 7) == [8, 9, 10, 11, 12]


def test_bifpn_resample_convs_only_where_channels_differ(tiny_d0):
    names = [layer.name for layer in tiny_d0.layers]
    # cell 0: C3 once, C4 twice, C5 twice need 1x1 convs; P6 from C5 once; later cells none.
    assert sorted(n for n in names if n.startswith("fpn_cell") and n.endswith("_conv") and "_in" in n) == [
        "fpn_cell0_node1_in2_conv", "fpn_cell0_node2_in1_conv", "fpn_cell0_node3_in0_conv",
        "fpn_cell0_node4_in1_conv", "fpn_cell0_node5_in2_conv",
    ]
    assert "p6_from_p5_conv" in names and "p7_from_p6_conv" not in names
    assert sum(n.endswith("_fuse") for n in names) == 3 * 8


def test_channel_and_repeat_rounding():
    assert [round_filters(f, 1.1) for f in (32, 16, 24, 40, 80, 112, 192, 320)] == [
        32, 16, 24, 48, 88, 120, 208, 352,
    ]
    assert round_filters(32, 2.0) == 64 and round_filters(1280, 1.8) == 2304
    assert [round_repeats(r, 3.1) for r in (1, 2, 3, 4)] == [4, 7, 10, 13]


def test_backbone_block_ids(tiny_d0):
    ids = {backbone_block_id(layer.name) for layer in tiny_d0.layers}
    assert ids == {None, 0, 1, 2, 3, 4, 5, 6, 7}
    assert backbone_block_id("stage3_block1_dwconv") == 3 and backbone_block_id("class_p3") is None


def test_config_names_accept_tao_spelling():
    assert len(MODEL_NAMES) == 15 and MODEL_NAMES[8] == "efficientdet-d7x" and MODEL_NAMES[-1] == "efficientdet-lite4"
    assert get_config("efficientdet_d0") is get_config("efficientdet-d0")
    assert get_config("EfficientDet-D7X").max_level == 8
    assert get_config("efficientdet-d7").anchor_scale == 5.0
    assert get_config("efficientdet-d6").weight_method == "sum"


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown model name 'efficientdet-d9': use one of efficientdet-d0, .*d7x"):
        get_config("efficientdet-d9")


def test_input_size_must_be_multiple_of_32():
    msg = r"model.input_width = 500 is not allowed: must be a multiple of 32 \(the backbone's stride\)"
    with pytest.raises(UserError, match=msg):
        build_efficientdet("efficientdet-d0", 3, (512, 500))
    with pytest.raises(UserError, match="model.input_height = 100 .* multiple of 32"):
        build_efficientdet("efficientdet-d7x", 3, (100, 256))


def test_num_classes_rules():
    assert real_num_classes(91) == 90 and real_num_classes(2) == 1
    with pytest.raises(UserError, match=r"dataset.num_classes = 1 is not allowed.*at least 2"):
        real_num_classes(1)
    with pytest.raises(UserError, match="num_classes = 0 is not allowed"):
        build_efficientdet("efficientdet-d0", 0, (128, 128))


@pytest.fixture(scope="module")
def frozen_d0():
    keras.backend.clear_session()
    return build_efficientdet("efficientdet-d0", 2, (128, 128), freeze_blocks=(0, 1, 2), freeze_bn=True)


def test_freeze_blocks_makes_their_weights_not_trainable(frozen_d0, tiny_d0):
    trainable = {w.name for w in frozen_d0.trainable_weights}
    assert not any(n.startswith(("stem_", "stage1_", "stage2_")) for n in trainable)
    assert any(n.startswith("stage3_block0_expand_conv") for n in trainable)
    # stem conv 3*3*3*32 + stage1 (dw 288, se 264+272, project 512) + stage2 convs are gone; BN never trainable
    assert "stem_conv/kernel:0" in {w.name for w in frozen_d0.non_trainable_weights}
    assert not any("bn" in n for n in trainable)


def test_freeze_bn_keeps_moving_statistics_when_training(frozen_d0):
    bn = frozen_d0.get_layer("stage3_block0_expand_bn")
    before = bn.moving_mean.numpy().copy()
    frozen_d0(tf.random.uniform((2, 128, 128, 3), 0, 255), training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_bn_updates_when_not_frozen():
    keras.backend.clear_session()
    model = build_efficientdet("efficientdet-d0", 1, (128, 128))
    bn = model.get_layer("stem_bn")
    model(tf.random.uniform((2, 128, 128, 3), 0, 255), training=True)
    assert not np.allclose(bn.moving_mean.numpy(), 0.0)


def test_freeze_block_out_of_range():
    with pytest.raises(UserError, match=r"freeze_blocks \[8\] out of range"):
        build_efficientdet("efficientdet-d0", 1, (128, 128), freeze_blocks=(8,))
