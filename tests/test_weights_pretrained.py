"""train.checkpoint: an imported .edrt, or an automl checkpoint / Keras .h5 converted on the fly."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.errors import CheckpointError
from tests.support.paths import SHARED_DATA

CKPT = SHARED_DATA / "automl_d0" / "ckpt"
KEY = "pw"


@pytest.fixture(scope="module")
def automl_ckpt():
    if not (CKPT / "model.index").is_file():
        pytest.skip(f"automl fixture not found at {CKPT}")
    return CKPT


@pytest.fixture(scope="module")
def renamed(automl_ckpt):
    from effdet_rt.weights.automl import load_automl_weights

    return load_automl_weights(automl_ckpt).weights


@pytest.fixture(scope="module")
def d0_three_classes():
    from effdet_rt.model.efficientdet import build_efficientdet

    return build_efficientdet("efficientdet-d0", 3, (128, 128))


def _spec(checkpoint, name="efficientdet-d0"):
    from effdet_rt.spec.loader import default_spec

    spec = default_spec()
    spec.model.name = name
    spec.dataset.num_classes = 4
    spec.train.checkpoint = str(checkpoint)
    return spec


def _load(model, checkpoint, name="efficientdet-d0") -> str:
    from effdet_rt.trainer.loop import load_initial_weights

    lines: list[str] = []
    load_initial_weights(model, _spec(checkpoint, name), KEY, lines.append)
    assert len(lines) == 1
    return lines[0]


def _value(model, name):
    return next(v.numpy() for v in model.weights if v.name == name + ":0")


@pytest.mark.parametrize("form", ["automl folder", "edrt"])
def test_automl_weights_load_and_class_head_is_skipped(automl_ckpt, renamed, d0_three_classes, tmp_path, form):
    from effdet_rt.checkpoint import save_checkpoint

    source = automl_ckpt
    if form == "edrt":
        source = save_checkpoint(tmp_path / "d0.edrt", renamed, key=KEY)
    model = d0_three_classes
    class_kernel_before = _value(model, "class_net_predict/pointwise_kernel").copy()
    line = _load(model, source)
    assert line.endswith("loaded 674, skipped 2 (class count differs), left random 0")
    assert ("automl efficientdet-d0 checkpoint, EMA values" in line) == (form == "automl folder")
    for name in ("stage6_block3_se_expand/kernel", "fpn_cell2_node7_fuse/weights", "box_net_predict/bias",
                 "class_net_bn2_p7/moving_variance"):
        np.testing.assert_array_equal(_value(model, name), renamed[name])
    np.testing.assert_array_equal(_value(model, "class_net_predict/pointwise_kernel"), class_kernel_before)


def test_keras_h5_gives_the_backbone_and_leaves_the_rest_random(d0_three_classes, tmp_path):
    import tf_keras as keras

    keras.utils.set_random_seed(3)
    net = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(64, 64, 3))
    net.get_layer("normalization").set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]),
                                                np.array(0, np.int64)])
    net.save_weights(tmp_path / "b0_notop.h5")
    expected = net.get_layer("block6d_se_reduce").get_weights()[0]
    line = _load(d0_three_classes, tmp_path / "b0_notop.h5")
    assert "(Keras efficientnet-b0 .h5): loaded 304, skipped 0, left random 372 (" in line
    np.testing.assert_array_equal(_value(d0_three_classes, "stage6_block3_se_reduce/kernel"), expected)


def test_incomplete_backbone_is_an_error(renamed, d0_three_classes, tmp_path):
    from effdet_rt.checkpoint import save_checkpoint

    partial = {k: v for k, v in renamed.items() if not k.startswith("stage7_")}
    path = save_checkpoint(tmp_path / "partial.edrt", partial, key=KEY)
    with pytest.raises(CheckpointError, match=r"backbone weights are not in it, e\.g\. \['stage7_block0_"):
        _load(d0_three_classes, path)


def test_automl_checkpoint_of_another_size_is_an_error(automl_ckpt, d0_three_classes):
    # the spec's model name decides; the size check comes before any weight is assigned
    with pytest.raises(CheckpointError, match=r"an efficientdet-d0 checkpoint .* not efficientdet-d1"):
        _load(d0_three_classes, automl_ckpt, "efficientdet-d1")
