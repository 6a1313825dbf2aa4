"""model_weights / assign_weights on tiny tf_keras models."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.checkpoint import assign_weights, load_checkpoint, model_weights, save_checkpoint
from effdet_rt.checkpoint.keys import ScryptCost
from effdet_rt.errors import CheckpointError

keras = pytest.importorskip("tf_keras")


def _tiny_detector(num_classes: int, seed: int):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    boxes = keras.layers.Dense(4, name="box_head")(x)
    classes = keras.layers.Dense(num_classes, name="class_head")(x)
    return keras.Model(inputs, [boxes, classes], name="tiny")


@pytest.fixture(scope="module")
def models():
    return _tiny_detector(3, seed=1), _tiny_detector(5, seed=2)


def test_model_weights_names_include_non_trainable_and_drop_the_suffix(models):
    source, _ = models
    weights = model_weights(source)
    assert sorted(weights) == [
        "box_head/bias", "box_head/kernel", "class_head/bias", "class_head/kernel",
        "stem_bn/beta", "stem_bn/gamma", "stem_bn/moving_mean", "stem_bn/moving_variance",
        "stem_conv/bias", "stem_conv/kernel",
    ]
    assert weights["class_head/kernel"].shape == (4, 3)
    assert weights["stem_conv/kernel"].shape == (3, 3, 3, 4)


def test_assign_by_name_skips_heads_whose_shape_differs(models, tmp_path):
    source, target = models
    source.get_layer("stem_bn").moving_mean.assign(np.arange(4, dtype=np.float32))
    path = save_checkpoint(tmp_path / "s.edrt", model_weights(source), key="k", cost=ScryptCost(log2_n=10))
    saved = load_checkpoint(path, "k").weights
    class_kernel_before = target.get_layer("class_head").kernel.numpy().copy()

    report = assign_weights(target, saved, skip_pattern=r"^class_head/")

    assert sorted(report.skipped) == ["class_head/bias", "class_head/kernel"]
    assert len(report.loaded) == 8 and report.missing == [] and report.unexpected == []
    after = model_weights(target)
    for name in report.loaded:
        assert after[name].tobytes() == saved[name].tobytes(), name
    assert after["stem_bn/moving_mean"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert np.array_equal(after["class_head/kernel"], class_kernel_before)


def test_shape_mismatch_without_skip_pattern_assigns_nothing(models):
    source, target = models
    before = model_weights(target)
    changed = {name: value + 1.0 for name, value in model_weights(source).items()}
    with pytest.raises(CheckpointError, match=r"2 weight\(s\) do not fit the model: class_head/(bias|kernel) is"):
        assign_weights(target, changed)
    after = model_weights(target)
    assert all(np.array_equal(after[name], before[name]) for name in before)


def test_strict_reports_missing_and_unknown_names(models):
    source, target = models
    weights = model_weights(source)
    weights.pop("stem_conv/bias")
    weights["extra/kernel"] = np.zeros(2, np.float32)
    with pytest.raises(CheckpointError, match=r"1 model weight\(s\) missing.*stem_conv/bias.*1 checkpoint weight"):
        assign_weights(target, weights, skip_pattern="class_head")
    report = assign_weights(target, weights, skip_pattern="class_head", strict=False)
    assert report.missing == ["stem_conv/bias"]
    assert report.unexpected == ["extra/kernel"]
    assert report.summary() == "loaded 7, skipped 2, missing 1, unused 1"
