"""Losses, learning-rate schedules, EMA and anchor labelling on hand-made inputs."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from effdet_rt.errors import SpecError
from effdet_rt.model.anchors import AnchorConfig, generate_anchors
from effdet_rt.model.labeler import BACKGROUND, IGNORE, label_anchors
from effdet_rt.trainer.ema import WeightAverage
from effdet_rt.trainer.losses import detection_loss, focal_loss_sum, huber_loss_sum
from effdet_rt.trainer.lr_schedule import learning_rate_at, schedule_steps, schedule_tensor


def lr_config(name, warmup_epoch=1, warmup_init=0.001, learning_rate=0.1, annealing_epoch=3):
    return SimpleNamespace(name=name, warmup_epoch=warmup_epoch, warmup_init=warmup_init,
                           learning_rate=learning_rate, annealing_epoch=annealing_epoch)


def test_cosine_schedule_matches_hand_values():
    steps = schedule_steps(lr_config("cosine"), steps_per_epoch=10, num_epochs=5)  # warmup 10, total 50
    expected = {
        0: 0.001,
        5: 0.001 + (0.1 - 0.001) * 0.5,
        10: 0.1,
        30: 0.05,  # half-way through the cosine part
        50: 0.0,
    }
    for step, value in expected.items():
        assert learning_rate_at(steps, step) == pytest.approx(value, abs=1e-9)
        assert float(schedule_tensor(steps, step)) == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_soft_anneal_schedule_matches_hand_values():
    steps = schedule_steps(lr_config("soft_anneal"), steps_per_epoch=10, num_epochs=5)  # anneal from 30 to 50
    geometric_mid = math.sqrt(0.001 * 0.1)
    expected = {0: 0.001, 5: geometric_mid, 10: 0.1, 20: 0.1, 30: 0.1, 40: geometric_mid, 50: 0.001}
    for step, value in expected.items():
        assert learning_rate_at(steps, step) == pytest.approx(value, rel=1e-9)
        assert float(schedule_tensor(steps, step)) == pytest.approx(value, rel=1e-5)


def test_soft_anneal_rejects_annealing_before_warmup():
    with pytest.raises(SpecError, match="annealing_epoch"):
        schedule_steps(lr_config("soft_anneal", warmup_epoch=4, annealing_epoch=2), 10, 5)


def test_focal_loss_hand_values():
    logits = tf.constant([[0.0, 2.0], [0.0, 0.0], [5.0, 5.0]])
    targets = tf.constant([1, BACKGROUND, IGNORE])
    sig2 = 1 / (1 + math.exp(-2.0))
    negative_at_zero = 0.75 * 0.5**1.5 * math.log(2)  # label 0, p = 0.5
    positive_at_two = 0.25 * (1 - sig2) ** 1.5 * -math.log(sig2)
    expected = negative_at_zero + positive_at_two + 2 * negative_at_zero  # ignored row adds nothing
    assert float(focal_loss_sum(logits, targets)) == pytest.approx(expected, rel=1e-5)
    assert negative_at_zero == pytest.approx(0.1837984, rel=1e-6)


def test_huber_loss_quadratic_and_linear_parts():
    codes = tf.constant([[0.05, 0.3, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    targets = tf.zeros((2, 4))
    positive = tf.constant([True, False])
    # 0.5 * 0.05^2 + (0.5 * 0.1^2 + 0.1 * 0.2) ; the negative row is not counted
    assert float(huber_loss_sum(codes, targets, positive, delta=0.1)) == pytest.approx(0.00125 + 0.025, rel=1e-5)


def test_detection_loss_normalises_by_positives_and_weights_box():
    logits = tf.zeros((1, 2, 1))
    codes = tf.constant([[[0.05, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    targets = tf.constant([[0, BACKGROUND]])
    losses = detection_loss(logits, codes, targets, tf.zeros((1, 2, 4)), normaliser=tf.constant(2.0))
    class_sum = 0.25 * 0.5**1.5 * math.log(2) + 0.75 * 0.5**1.5 * math.log(2)
    assert float(losses["class_loss"]) == pytest.approx(class_sum / 2, rel=1e-5)
    assert float(losses["box_loss"]) == pytest.approx(0.00125 / 8, rel=1e-5)
    assert float(losses["det_loss"]) == pytest.approx(class_sum / 2 + 50 * 0.00125 / 8, rel=1e-5)


@pytest.fixture(scope="module")
def anchors_128():
    return generate_anchors((128, 128), AnchorConfig())


def test_box_equal_to_an_anchor_is_positive_for_it(anchors_128):
    index = 100
    box = anchors_128[index]
    boxes = np.stack([box, np.zeros(4, np.float32)])
    classes, codes = label_anchors(anchors_128, boxes, np.array([2, -1]))
    classes, codes = classes.numpy(), codes.numpy()
    assert classes[index] == 2
    np.testing.assert_allclose(codes[index], 0.0, atol=1e-5)
    positives = np.flatnonzero(classes >= 0)
    assert set(np.unique(classes[positives])) == {2}
    negatives = classes == BACKGROUND
    assert negatives.sum() == len(anchors_128) - len(positives)
    assert np.all(codes[negatives] == 0)


def test_small_box_is_force_matched_to_exactly_one_anchor(anchors_128):
    small = np.array([[10.0, 10.0, 13.0, 12.0]], np.float32)  # far below IoU 0.5 with any anchor (smallest 32x32)
    classes, codes = label_anchors(anchors_128, small, np.array([0]))
    positives = np.flatnonzero(classes.numpy() >= 0)
    assert len(positives) == 1
    anchor = anchors_128[positives[0]]
    assert anchor[2] - anchor[0] < 64 and anchor[0] < 13 and anchor[2] > 10  # a level-3 anchor over the box
    # the code decodes back to the box
    from effdet_rt.model.boxes import decode_boxes
    np.testing.assert_allclose(decode_boxes(codes.numpy()[positives[0]], anchor), small[0], atol=1e-3)


def test_image_without_boxes_is_all_background(anchors_128):
    classes, codes = label_anchors(anchors_128, np.zeros((3, 4), np.float32), np.array([-1, -1, -1]))
    assert np.all(classes.numpy() == BACKGROUND)
    assert float(tf.reduce_sum(tf.abs(codes))) == 0.0


def test_ema_decay_ramp_and_update():
    variable = tf.Variable([1.0, 2.0])
    average = WeightAverage([variable], decay=0.9)
    assert float(average.effective_decay(0)) == pytest.approx(0.1)
    assert float(average.effective_decay(1000)) == pytest.approx(0.9)
    variable.assign([3.0, 4.0])
    average.update(tf.constant(0))  # decay 0.1: 0.1 * old + 0.9 * new
    np.testing.assert_allclose(average.shadows[0].numpy(), [2.8, 3.8], rtol=1e-6)
    with average.swapped_in():
        np.testing.assert_allclose(variable.numpy(), [2.8, 3.8], rtol=1e-6)
    np.testing.assert_allclose(variable.numpy(), [3.0, 4.0])
