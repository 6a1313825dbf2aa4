"""Pruning the real D0 is exact: zero the filters of a BiFPN channel group (64 channels written by 30 convs across
every level and cell) and of a head group (class_net_conv1), prune, and the smaller network's raw heads equal the
masked original's. test_prune.py holds the same for a hand-made network, test_classification_prune.py for B0."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.prune.criteria import PruneSettings

pytestmark = pytest.mark.slow  # builds a D0

EXACT = PruneSettings(threshold=1e-3, granularity=1, min_num_filters=1)
BIFPN_LAYER, BIFPN_ZEROED = "fpn_cell0_node0_conv", [3, 17, 40, 41, 63]
HEAD_LAYER, HEAD_ZEROED = "class_net_conv1", [0, 9, 30]


def writers_of(analysis, group) -> list[str]:
    """Every layer whose output channels are ``group``'s: the convs that own it, BatchNorms and depthwise convs."""
    return [name for name, index in analysis.outputs.items() if analysis.groups.get(index) is group]


def zero_channels(model, layer_names: list[str], channels: list[int]) -> None:
    """Zero ``channels`` of every filter, bias and BatchNorm scale/offset the named layers write them with, so those
    channels are 0 wherever the group is read (swish(0) = 0; the BiFPN's fusions are weighted sums)."""
    import tf_keras as keras

    L = keras.layers
    for name in layer_names:
        layer = model.get_layer(name)
        if isinstance(layer, L.BatchNormalization):
            layer.gamma.assign(_zeroed(layer.gamma.numpy(), channels))
            layer.beta.assign(_zeroed(layer.beta.numpy(), channels))
            continue
        if isinstance(layer, L.SeparableConv2D):
            layer.pointwise_kernel.assign(_zeroed(layer.pointwise_kernel.numpy(), channels))
        elif isinstance(layer, L.DepthwiseConv2D):
            kernel = layer.depthwise_kernel.numpy()
            kernel[:, :, channels, :] = 0.0
            layer.depthwise_kernel.assign(kernel)
        elif isinstance(layer, L.Conv2D):
            layer.kernel.assign(_zeroed(layer.kernel.numpy(), channels))
        else:
            # the BiFPN's fusion nodes hold one scalar weight per input, no channel axis
            assert all(w.shape.rank == 1 and w.shape[0] <= 3 for w in layer.weights), f"{name}: unexpected weights"
            continue
        if layer.bias is not None:
            layer.bias.assign(_zeroed(layer.bias.numpy(), channels))


def _zeroed(value: np.ndarray, channels: list[int]) -> np.ndarray:
    value = value.copy()
    value[..., channels] = 0.0
    return value


def test_zeroed_bifpn_and_head_filters_prune_away_with_the_same_heads():
    from effdet_rt.prune.pruner import analyse_channels, prune_model, trainable_parameters
    from tests.support.infer import build_tiny_model

    model = build_tiny_model()  # its own copy: the session's tiny_model must stay as it is
    analysis = analyse_channels(model, EXACT.normalizer)
    bifpn, head = analysis.group_of(BIFPN_LAYER), analysis.group_of(HEAD_LAYER)
    assert bifpn.width == head.width == 64 and not bifpn.fixed and not head.fixed
    assert len(bifpn.owners) == 30 and head.owners == [HEAD_LAYER]
    bifpn_writers, head_writers = writers_of(analysis, bifpn), writers_of(analysis, head)
    assert any(name.startswith("fpn_cell2") for name in bifpn_writers)  # the group spans all three BiFPN cells
    assert len([n for n in head_writers if "bn" in n]) == 5  # the shared conv has one BatchNorm per level
    zero_channels(model, bifpn_writers, BIFPN_ZEROED)
    zero_channels(model, head_writers, HEAD_ZEROED)

    result = prune_model(model, EXACT)
    expected = {**{owner: 64 - len(BIFPN_ZEROED) for owner in bifpn.owners}, HEAD_LAYER: 64 - len(HEAD_ZEROED)}
    assert result.filter_counts == expected
    per_bifpn_channel = (trainable_parameters(model) - result.params_after
                         - len(HEAD_ZEROED) * _head_parameters_per_channel(model))
    assert per_bifpn_channel % len(BIFPN_ZEROED) == 0 and per_bifpn_channel > 0
    assert result.model.get_layer(HEAD_LAYER).pointwise_kernel.shape == (1, 1, 64, 64 - len(HEAD_ZEROED))
    assert result.model.get_layer("class_net_conv2").pointwise_kernel.shape == (1, 1, 64 - len(HEAD_ZEROED), 64)

    images = np.random.default_rng(3).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    masked = np.concatenate([o.numpy().ravel() for o in model(images, training=False)])
    pruned = np.concatenate([o.numpy().ravel() for o in result.model(images, training=False)])
    assert np.abs(masked).max() > 0.1  # not a comparison of two near-zero outputs
    np.testing.assert_allclose(pruned, masked, rtol=0, atol=1e-5 * np.abs(masked).max())


def _head_parameters_per_channel(model) -> int:
    """Trainable parameters one output channel of class_net_conv1 carries: its pointwise column and bias, five
    BatchNorm scales and offsets, and the depthwise filter and pointwise row of class_net_conv2 that read it."""
    conv1, conv2 = model.get_layer(HEAD_LAYER), model.get_layer("class_net_conv2")
    k = conv2.depthwise_kernel.shape[0] * conv2.depthwise_kernel.shape[1]
    return conv1.pointwise_kernel.shape[2] + 1 + 5 * 2 + k + conv2.pointwise_kernel.shape[3]
