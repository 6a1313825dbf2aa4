"""effdet_rt.prune: the min-weight selection rules, channel grouping, exactness of the smaller network, and a
pruned D0 on the whole flow (checkpoint round trip, retraining via train.pruned_model_path, ONNX, ORT engines)."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.errors import UserError
from effdet_rt.prune.criteria import PruneSettings, filter_norms, kept_channels, merge, normalize

# ---------------------------------------------------------------- selection rules (numpy only)


def test_filter_norms_are_per_output_filter_and_per_channel_for_depthwise():
    kernel = np.zeros((3, 3, 2, 4))
    kernel[0, 0, 0, 1], kernel[2, 1, 1, 1] = 3.0, 4.0  # filter 1: norm 5 over kh, kw and input channels
    kernel[1, 1, 1, 3] = -2.0
    np.testing.assert_allclose(filter_norms(kernel), [0.0, 5.0, 0.0, 2.0])
    depthwise = np.zeros((3, 3, 3, 1))
    depthwise[0, 0, 2, 0], depthwise[1, 2, 2, 0], depthwise[1, 1, 0, 0] = 6.0, 8.0, 1.0
    np.testing.assert_allclose(filter_norms(depthwise, depthwise=True), [1.0, 0.0, 10.0])


def test_normalizers():
    norms = np.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(normalize(norms, "max"), [0.75, 1.0, 0.0])
    np.testing.assert_allclose(normalize(norms, "L2"), [0.6, 0.8, 0.0])
    np.testing.assert_array_equal(normalize(np.zeros(3), "max"), np.zeros(3))


def test_granularity_and_min_num_filters_keep_the_strongest():
    scores = np.array([0.9, 0.1, 0.2, 0.95, 0.05, 0.6, 0.3, 0.15, 0.0, 0.25])
    # 3 above 0.5 (indices 0, 3, 5), rounded up to 4: the 4th strongest is index 6 (0.3), not the first index
    np.testing.assert_array_equal(kept_channels(scores, 0.5, 1, 4), [0, 3, 5, 6])
    np.testing.assert_array_equal(kept_channels(scores, 0.5, 1, 1), [0, 3, 5])
    # at least 6, rounded up to a multiple of 4 = 8 (the two weakest, 0.05 and 0.0, go)
    np.testing.assert_array_equal(kept_channels(scores, 0.5, 6, 4), [0, 1, 2, 3, 5, 6, 7, 9])
    assert len(kept_channels(scores, 0.99, 16, 8)) == 10  # never more than the layer has
    assert len(kept_channels(scores, 1.0, 1, 1)) == 1  # nothing above: min_num_filters


def test_equalization_criteria():
    a, b = np.array([1.0, 0.8, 0.1, 0.1]), np.array([0.1, 0.1, 1.0, 0.8])
    np.testing.assert_allclose(merge([a, b], "union"), [1.0, 0.8, 1.0, 0.8])
    np.testing.assert_allclose(merge([a, b], "intersection"), [0.1, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(merge([a, b], "arithmetic_mean"), [0.55, 0.45, 0.55, 0.45])
    np.testing.assert_allclose(merge([a, b], "geometric_mean"), np.sqrt(a * b))


@pytest.mark.parametrize("field, value, words", [
    ("threshold", 1.5, "between 0 and 1"), ("threshold", -0.1, "between 0 and 1"),
    ("normalizer", "l1", "unknown normalizer"), ("equalization_criterion", "mean", "unknown equalization"),
    ("granularity", 0, "granularity 0"), ("min_num_filters", 0, "min_num_filters 0"),
])
def test_bad_settings_are_refused(field, value, words):
    with pytest.raises(UserError, match=words):
        PruneSettings(**{field: value}).check()


# ---------------------------------------------------------------- hand-made networks


def residual_net(zero_first=(), zero_pair=(), seed=0):
    """input 16x16x3 -> a (3x3 conv 8, BN, swish) -> b, c (1x1 conv 8 + BN each) -> Add -> depthwise 3x3 + BN +
    swish -> out (1x1 conv 5, the model output). Channels ``zero_first`` of a and ``zero_pair`` of b/c/depthwise
    are zeroed, with everything that reads only them (their BatchNorms' scale and offset)."""
    import tf_keras as keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    x = keras.Input((16, 16, 3), name="images")
    a = L.Activation("swish", name="a_swish")(L.BatchNormalization(name="a_bn")(L.Conv2D(8, 3, padding="same", name="a")(x)))
    b = L.BatchNormalization(name="b_bn")(L.Conv2D(8, 1, name="b")(a))
    c = L.BatchNormalization(name="c_bn")(L.Conv2D(8, 1, name="c")(a))
    s = L.Add(name="add")([b, c])
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(s)
    d = L.Activation("swish", name="dw_swish")(L.BatchNormalization(name="dw_bn")(d))
    model = keras.Model(x, L.Conv2D(5, 1, name="out")(d))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):  # statistics that make the slicing of every BN array matter
            layer.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.5, 8), rng.normal(0, 0.5, 8),
                               rng.uniform(0.5, 2.0, 8)])
    _zero(model, ["a"], ["a_bn"], zero_first)
    _zero(model, ["b", "c", "dw"], ["b_bn", "c_bn", "dw_bn"], zero_pair)
    return model


def _zero(model, convs, norms, channels):
    channels = list(channels)
    for name in convs:
        layer = model.get_layer(name)
        weights = layer.get_weights()
        if name == "dw":
            weights[0][:, :, channels, :] = 0.0
        else:
            weights[0][..., channels] = 0.0
        layer.set_weights(weights)
    for name in norms:
        layer = model.get_layer(name)
        gamma, beta, mean, var = layer.get_weights()
        gamma[channels], beta[channels] = 0.0, 0.0
        layer.set_weights([gamma, beta, mean, var])


def hand_counted_parameters(a: int, g: int) -> int:
    """Trainable parameters of residual_net with ``a`` filters left in a and ``g`` in the b/c/depthwise group."""
    conv_a = 3 * 3 * 3 * a + a
    conv_bc = 2 * (a * g + g)
    depthwise = 3 * 3 * g + g
    out = g * 5 + 5
    batch_norms = 2 * a + 3 * 2 * g  # gamma + beta
    return conv_a + conv_bc + depthwise + out + batch_norms


EXACT = PruneSettings(threshold=1e-3, granularity=1, min_num_filters=1)


def test_pruning_zeroed_filters_keeps_the_outputs():
    from effdet_rt.prune.pruner import prune_model, trainable_parameters

    model = residual_net(zero_first=(1, 4), zero_pair=(2, 6, 7))
    result = prune_model(model, EXACT)
    assert result.filter_counts == {"a": 6, "b": 5, "c": 5}
    assert result.model.get_layer("dw").depthwise_kernel.shape == (3, 3, 5, 1)
    assert result.model.get_layer("out").kernel.shape == (1, 1, 5, 5)
    assert result.params_before == hand_counted_parameters(8, 8) == trainable_parameters(model)
    assert result.params_after == hand_counted_parameters(6, 5) == result.model.count_params() - 2 * (6 + 3 * 5)
    images = np.random.default_rng(1).uniform(-2, 2, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(result.model(images).numpy(), model(images).numpy(), atol=1e-5)
    kept = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(result.model.get_layer("b").kernel.numpy(),
                                  model.get_layer("b").kernel.numpy()[:, :, [0, 2, 3, 5, 6, 7]][..., kept])


def test_residual_branches_keep_the_same_channels():
    from effdet_rt.prune.pruner import analyse_channels, choose_channels

    model = residual_net(zero_pair=(2, 6, 7))
    _zero(model, ["b"], ["b_bn"], (0, 1))  # b alone is weak in 0, 1: c still needs them under union
    analysis = analyse_channels(model, "max")
    assert analysis.group_of("b") is analysis.group_of("c") is analysis.group_of("dw")
    assert analysis.group_of("a") is not analysis.group_of("b")
    assert sorted(analysis.group_of("add").owners) == ["b", "c"]
    counts = choose_channels(analysis, EXACT)
    np.testing.assert_array_equal(analysis.group_of("b").kept, [0, 1, 3, 4, 5])
    assert counts["b"] == counts["c"] == 5 and "out" not in counts  # the model output keeps its 5 channels


def two_branch_net(norms_b, norms_c, depthwise: bool = False):
    """input -> b, c (1x1 conv 4, given filter norms) -> Add -> out (1x1 conv 2, the model output)."""
    import tf_keras as keras

    L = keras.layers
    x = keras.Input((4, 4, 3))
    b, c = L.Conv2D(4, 1, name="b")(x), L.Conv2D(4, 1, name="c")(x)
    model = keras.Model(x, L.Conv2D(2, 1, name="out")(L.Add(name="add")([b, c])))
    for name, norms in (("b", norms_b), ("c", norms_c)):
        kernel = np.zeros((1, 1, 3, 4), np.float32)
        kernel[0, 0, 0] = norms
        model.get_layer(name).set_weights([kernel, np.zeros(4, np.float32)])
    return model


@pytest.mark.parametrize("criterion, expected", [
    ("union", [0, 1, 2, 3]), ("intersection", [0]), ("arithmetic_mean", [0, 2]), ("geometric_mean", [0]),
])
def test_union_vs_intersection_counts(criterion, expected):
    from effdet_rt.prune.pruner import analyse_channels, choose_channels

    model = two_branch_net([1.0, 0.8, 0.1, 0.1], [0.1, 0.1, 1.0, 0.8])
    analysis = analyse_channels(model, "max")
    counts = choose_channels(analysis, PruneSettings(0.5, "max", criterion, 1, 1))
    np.testing.assert_array_equal(analysis.group_of("b").kept, expected)
    assert counts.get("b", 4) == counts.get("c", 4) == len(expected)


def test_excluded_layer_keeps_its_group_and_unknown_names_are_refused():
    from effdet_rt.prune.pruner import prune_model

    model = residual_net(zero_first=(1, 4), zero_pair=(2, 6, 7))
    result = prune_model(model, PruneSettings(**{**EXACT.__dict__, "excluded_layers": ("c",)}))
    assert result.filter_counts == {"a": 6}  # b shares c's channels, so it keeps them too
    with pytest.raises(UserError, match="excluded layer 'nope' is not a layer"):
        prune_model(model, PruneSettings(**{**EXACT.__dict__, "excluded_layers": ("nope",)}))


def test_excluded_layer_spellings():
    from effdet_rt.prune.run import split_excluded

    assert split_excluded(["stem_conv,p6_from_p5_conv", "fpn_cell0_node0_conv"]) == [
        "stem_conv", "p6_from_p5_conv", "fpn_cell0_node0_conv"]
    assert split_excluded(None) is None


def test_a_stray_argument_without_excluded_layers_is_one_error(tmp_path, capsys):
    from effdet_rt.cli.main import run

    assert run(["prune", "-m", str(tmp_path / "m.edrt"), "-o", str(tmp_path / "out"), "stem_conv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unexpected argument 'stem_conv'")
    assert not (tmp_path / "out").exists()


def test_output_name_follows_tao():
    from pathlib import Path

    from effdet_rt.prune.run import output_file

    settings = PruneSettings(threshold=0.1, equalization_criterion="intersection")
    assert output_file(Path("out"), settings) == Path("out/model_th=0.1_eq=intersection.edrt")
    assert output_file(Path("out/mine.edrt"), settings) == Path("out/mine.edrt")
