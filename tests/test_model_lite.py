"""EfficientDet-Lite0..4 / Lite3x and EfficientNet-Lite0..4 as google/automl defines them.

The parameter counts are automl's own pins (efficientdet/efficientdet_arch_test.py for the detectors at 90 classes,
backbone/efficientnet_lite_builder_test.py for the 1000-class classifiers, google/automl at 6a54c87); our builder
reproduces every one exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from effdet_rt.cli.main import run
from effdet_rt.model.configs import get_backbone_config, get_config
from effdet_rt.model.efficientdet import build_efficientdet
from effdet_rt.model.efficientnet import build_efficientnet_classifier

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

AUTOML_LITE_DETECTORS = {  # (trainable params with 90 classes, multiply-adds at the native size)
    "efficientdet-lite0": (3_243_470, 977_617_221),
    "efficientdet-lite1": (4_248_318, 1_973_728_714),
    "efficientdet-lite2": (5_252_334, 3_383_232_590),
    "efficientdet-lite3": (8_350_862, 7_503_764_515),
    "efficientdet-lite3x": (9_280_862, 14_019_809_178),
    "efficientdet-lite4": (15_130_894, 20_221_443_966),
}
AUTOML_LITE_CLASSIFIERS = {
    "efficientnet-lite0": 4_652_008,
    "efficientnet-lite1": 5_416_680,
    "efficientnet-lite2": 6_092_072,
    "efficientnet-lite3": 8_197_096,
    "efficientnet-lite4": 13_006_568,
}
FAST = {"efficientdet-lite0", "efficientnet-lite0"}  # the others are marked slow (they still run in CI)


def count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def _heavy_slow(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _heavy_slow(AUTOML_LITE_DETECTORS))
def test_lite_detector_parameters_equal_automl(name):
    keras.backend.clear_session()
    model = build_efficientdet(name, 90, (128, 128))  # the count does not depend on the input size
    assert count(model.trainable_weights) == AUTOML_LITE_DETECTORS[name][0]
    keras.backend.clear_session()


@pytest.mark.parametrize("name", _heavy_slow(AUTOML_LITE_CLASSIFIERS))
def test_lite_classifier_parameters_equal_automl(name):
    keras.backend.clear_session()
    model = build_efficientnet_classifier(name, 1000, (64, 64))
    assert count(model.trainable_weights) == AUTOML_LITE_CLASSIFIERS[name]
    keras.backend.clear_session()


def test_lite_settings_are_automls():
    expected = {  # input size, BiFPN channels x cells, head layers, anchor scale
        "efficientdet-lite0": (320, 64, 3, 3, 3.0), "efficientdet-lite1": (384, 88, 4, 3, 3.0),
        "efficientdet-lite2": (448, 112, 5, 3, 3.0), "efficientdet-lite3": (512, 160, 6, 4, 4.0),
        "efficientdet-lite3x": (640, 200, 6, 4, 3.0), "efficientdet-lite4": (640, 224, 7, 4, 4.0),
    }
    for name, settings in expected.items():
        cfg = get_config(name)
        got = (cfg.image_size, cfg.fpn_num_filters, cfg.fpn_cell_repeats, cfg.box_class_repeats, cfg.anchor_scale)
        assert got == settings, name
        assert (cfg.weight_method, cfg.activation) == ("sum", "relu6")
    assert get_config("efficientdet-lite3x").backbone == "efficientnet-lite3"
    lite = get_backbone_config("efficientnet-lite2")
    assert (lite.width, lite.depth, lite.activation, lite.use_se, lite.fix_head_stem) == (1.1, 1.2, "relu6", False, True)
    assert lite.mean_rgb == (127.0,) * 3 and lite.stddev_rgb == (128.0,) * 3


@pytest.fixture(scope="module")
def lite0_320():
    keras.backend.clear_session()
    return build_efficientdet("efficientdet-lite0", 3, (320, 320))


def test_lite0_layers_relu6_no_squeeze_excite_and_odd_top_levels(lite0_320):
    from effdet_rt.model.anchors import AnchorConfig, generate_anchors
    from effdet_rt.model.efficientnet import ImageNormalization

    layers = lite0_320.layers
    relu6 = [la for la in layers if isinstance(la, keras.layers.ReLU)]
    assert relu6 and all(la.max_value == 6.0 for la in relu6)
    assert not [la for la in layers if isinstance(la, keras.layers.Activation) and "swish" in la.name]
    assert not [la for la in layers if "_se_" in la.name]
    assert not [la for la in layers if "fuse" in la.name and la.weights]  # plain-sum fusion has no weights
    assert lite0_320.get_layer("stem_conv").filters == 32  # the stem is not scaled
    normalize = next(la for la in layers if isinstance(la, ImageNormalization))
    assert normalize.mean == (127.0,) * 3 and normalize.std == (128.0,) * 3
    sides = [o.shape[1] for o in lite0_320.outputs[:5]]
    assert sides == [40, 20, 10, 5, 3]  # above P5 the maps halve rounding up, as automl's get_feat_sizes
    anchors = generate_anchors((320, 320), AnchorConfig(anchor_scale=3.0))
    assert anchors.shape == (9 * sum(s * s for s in sides), 4) == (19_206, 4)


@pytest.mark.parametrize("sides", [(3, 5), (4, 7), (5, 9)])
def test_fractional_nearest_resize_exports_as_tf_computes_it(sides):
    """TF's nearest resize of odd maps (3x3 -> 5x5 ...) and the exported ONNX Resize agree exactly."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    from effdet_rt.onnx.graph import keras_to_onnx, use_asymmetric_nearest_resize

    small, large = sides
    images = keras.Input((small, small, 3))
    model = keras.Model(images, keras.layers.Resizing(large, large, interpolation="nearest")(images))
    graph = gs.import_onnx(keras_to_onnx(model, (small, small), None, 17))
    assert use_asymmetric_nearest_resize(graph) == 1
    x = np.random.default_rng(small).normal(size=(2, small, small, 3)).astype(np.float32)
    session = ort.InferenceSession(gs.export_onnx(graph.cleanup()).SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(got, model(x).numpy())


def test_models_lists_lite0_with_automls_count(capsys):
    assert run(["models", "-m", "efficientdet-lite0", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "efficientdet-lite0" in out and "3,243,470" in out and "320x320" in out


@pytest.mark.slow
def test_lite0_multiply_adds_match_automl():
    from effdet_rt.model.flops import detector_cost

    keras.backend.clear_session()
    cost = detector_cost("efficientdet-lite0", 90)
    assert cost.trainable_params == 3_243_470 and cost.input_size == (320, 320)
    assert cost.multiply_adds == 976_542_211  # measured: traced at 320 itself (odd P6/P7 allow no linear fit)
    assert abs(cost.multiply_adds / AUTOML_LITE_DETECTORS["efficientdet-lite0"][1] - 1) < 0.005


@pytest.mark.slow
def test_lite0_exports_to_onnx_and_verifies(lite0_320, tmp_path, capsys):
    from effdet_rt.checkpoint import model_weights, save_checkpoint
    from effdet_rt.spec.loader import default_spec, spec_to_yaml

    rng = np.random.default_rng(5)
    for layer in lite0_320.layers:  # statistics far from the identity, so the outputs are not all near zero
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)])
    spec = default_spec()
    spec.model.name, spec.model.input_height, spec.model.input_width = "efficientdet-lite0", 320, 320
    spec.model.anchor_scale, spec.dataset.num_classes = 3.0, 4
    ckpt = save_checkpoint(tmp_path / "lite0.edrt", model_weights(lite0_320), key="pw", spec_yaml=spec_to_yaml(spec))
    out = tmp_path / "lite0.onnx"
    assert run(["export", "-m", str(ckpt), "-o", str(out), "-k", "pw", "--nms", "onnx", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "exporting efficientdet-lite0 320x320" in printed and "raw heads max |TF - ONNX|" in printed
    import onnx

    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops.count("Clip") == 86 and ops.count("Sigmoid") == 1  # ReLU6 as Clip; the one Sigmoid scores boxes
