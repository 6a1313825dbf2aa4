"""Trainable parameter counts equal google/automl's for every EfficientDet variant (90 classes)."""

import numpy as np
import pytest
import tf_keras as keras

from effdet_rt.model.configs import get_config
from effdet_rt.model.efficientdet import build_efficientdet
from effdet_rt.model.efficientnet import build_efficientnet_classifier
from tests.support.models import build_efficientnet_backbone

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

# (trainable, non-trainable BN statistics) with 90 classes; the first figure is automl's unit-test value.
EXPECTED = {
    "efficientdet-d0": (3_880_067, 47_136),
    "efficientdet-d1": (6_625_898, 71_456),
    "efficientdet-d2": (8_097_039, 81_776),
    "efficientdet-d3": (12_032_296, 114_304),
    "efficientdet-d4": (20_723_675, 167_312),
    "efficientdet-d5": (33_653_315, 227_392),
    "efficientdet-d6": (51_871_782, 311_984),
    "efficientdet-d7x": (77_147_166, 417_728),
}
HEAVY = {"efficientdet-d4", "efficientdet-d5", "efficientdet-d6", "efficientdet-d7x"}


def count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in EXPECTED]
)
def test_trainable_parameters_match_automl(name):
    keras.backend.clear_session()
    size = 2 ** get_config(name).max_level  # the count does not depend on the input size
    model = build_efficientdet(name, 90, (size, size))
    assert (count(model.trainable_weights), count(model.non_trainable_weights)) == EXPECTED[name]
    keras.backend.clear_session()


def test_d7_is_d6_with_larger_input_and_anchors():
    d6, d7 = get_config("efficientdet-d6"), get_config("efficientdet-d7")
    same = ("backbone", "fpn_num_filters", "fpn_cell_repeats", "box_class_repeats", "weight_method", "max_level")
    assert all(getattr(d6, f) == getattr(d7, f) for f in same)  # hence D7 also has 51,871,782 parameters
    assert (d6.image_size, d7.image_size, d6.anchor_scale, d7.anchor_scale) == (1280, 1536, 4.0, 5.0)


def test_d0_backbone_alone():
    keras.backend.clear_session()
    model = build_efficientnet_backbone("efficientnet-b0", (128, 128))
    assert count(model.trainable_weights) == 3_595_388
    assert [o.shape.as_list() for o in model.outputs] == [[None, 16, 16, 40], [None, 8, 8, 112], [None, 4, 4, 320]]


def test_b0_classifier_matches_imagenet_efficientnet():
    keras.backend.clear_session()
    model = build_efficientnet_classifier("efficientnet-b0", 1000, (64, 64))
    assert count(model.trainable_weights) == 5_288_548
    assert model.output.shape.as_list() == [None, 1000]
    assert model.get_layer("head_dropout").rate == 0.2
    keras.backend.clear_session()
