"""Filter pruning of a tf_keras functional network: channel groups, what to keep, and the smaller network.

Every tensor's channel axis belongs to a channel group. A Conv2D / SeparableConv2D starts a new group (its
filters); a Dense layer starts a new group that is never pruned (it only reads the kept channels, like a
logits layer); layers that keep channels (BatchNorm, activations, pooling, resizing, DepthwiseConv2D, and
the task's own channel-preserving layers passed as ``passthrough``) pass their input's group on; element-wise layers (residual Add, squeeze-excite Multiply, BiFPN fusion) merge the groups of their
inputs, so groups are joined transitively; a layer used on several inputs (the shared head convs) merges the
groups of all of them, since one set of weights reads them all. A group is pruned as one: the normalised filter
norms of every conv that writes it and of every depthwise conv that filters it are merged by the equalisation
criterion. Groups that reach the model input or a model output (the class and box predictions, logits), and groups of excluded layers, keep every channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effdet_rt.checkpoint.weights import assign_weights, variable_key
from effdet_rt.errors import UserError
from effdet_rt.model.pruned import apply_filter_counts
from effdet_rt.prune.criteria import PruneSettings, filter_norms, kept_channels, merge, normalize


@dataclass
class ChannelGroup:
    width: int
    owners: list[str] = field(default_factory=list)  # convs whose filters are these channels
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> normalised norms per channel
    fixed: list[str] = field(default_factory=list)  # why every channel is kept
    kept: np.ndarray | None = None


class _Groups:
    """Union-find of channel groups; a merged group holds the union of its parts' records."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.data: list[ChannelGroup] = []

    def new(self, width: int) -> int:
        self.parent.append(len(self.parent))
        self.data.append(ChannelGroup(int(width)))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, ids: Iterable[int], where: str) -> int:
        roots = sorted({self.find(i) for i in ids})
        root = roots[0]
        for other in roots[1:]:
            a, b = self.data[root], self.data[other]
            if a.width != b.width:
                raise UserError(f"layer {where} joins tensors of {a.width} and {b.width} channels; cannot prune it")
            a.owners += b.owners
            a.stats.update(b.stats)
            a.fixed += b.fixed
            self.parent[other] = root
        return root

    def get(self, i: int) -> ChannelGroup:
        return self.data[self.find(i)]


def _layer_types(passthrough: tuple[type, ...] = ()) -> dict[str, tuple[type, ...]]:
    import tf_keras as keras

    from effdet_rt.model.bifpn import FastNormalizedFusion
    from effdet_rt.model.efficientnet import ImageNormalization, StochasticDepth

    L = keras.layers
    return {
        "separable": (L.SeparableConv2D,),
        "depthwise": (L.DepthwiseConv2D,),
        "conv": (L.Conv2D,),
        "dense": (L.Dense,),
        "elementwise": (L.Add, L.Multiply, L.Subtract, L.Average, L.Maximum, L.Minimum, FastNormalizedFusion),
        "passthrough": (
            L.BatchNormalization, L.Activation, L.Dropout, L.MaxPooling2D, L.AveragePooling2D, L.UpSampling2D,
            L.GlobalAveragePooling2D, L.ZeroPadding2D, L.ReLU, L.Softmax, StochasticDepth, ImageNormalization,
            *passthrough,
        ),
    }


def _kind(layer: Any, types: dict[str, tuple[type, ...]]) -> str:
    import tf_keras as keras

    if isinstance(layer, keras.layers.InputLayer):
        return "input"
    for kind in ("separable", "depthwise", "conv", "dense", "elementwise", "passthrough"):  # subclasses first
        if isinstance(layer, types[kind]):
            return kind
    raise UserError(f"layer {layer.name!r} ({type(layer).__name__}) is not a layer type the pruner can follow "
                    "(convolutions, Dense, BatchNorm, activations, pooling, resizing, element-wise layers); "
                    "prune a float checkpoint written by effdet-rt")


def _tensor_key(tensor: Any) -> tuple[int, int, int]:
    layer, node_index, tensor_index = tensor._keras_history
    return id(layer), node_index, tensor_index


def _check_conv(layer: Any) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "groups", 1) != 1:
        raise UserError(f"layer {layer.name!r}: only channels_last convolutions without groups can be pruned")
    if getattr(layer, "depth_multiplier", 1) != 1:
        raise UserError(f"layer {layer.name!r}: only depth_multiplier 1 can be pruned")


@dataclass
class ChannelAnalysis:
    """Which group each layer reads (``inputs``) and writes (``outputs``), by layer name."""

    groups: _Groups
    inputs: dict[str, int]
    outputs: dict[str, int]
    kinds: dict[str, str]

    def group_of(self, layer_name: str) -> ChannelGroup:
        return self.groups.get(self.outputs[layer_name])

    def input_group_of(self, layer_name: str) -> ChannelGroup:
        return self.groups.get(self.inputs[layer_name])

    def prunable_groups(self) -> list[ChannelGroup]:
        roots = sorted({self.groups.find(i) for i in self.outputs.values()})
        return [self.groups.data[r] for r in roots if self.groups.data[r].owners]


def analyse_channels(model: Any, normalizer: str, excluded_layers: Iterable[str] = (),
                     passthrough: tuple[type, ...] = ()) -> ChannelAnalysis:
    """Group the channels of ``model`` (see the module docstring) and record each layer's normalised norms;
    ``passthrough``: further layer classes that keep their input's channels."""
    from tensorflow import nest

    types = _layer_types(passthrough)
    groups = _Groups()
    tensors: dict[tuple[int, int, int], int] = {}
    inputs: dict[str, int] = {}
    outputs: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            kind = kinds.setdefault(layer.name, _kind(layer, types))
            ins = [tensors[_tensor_key(t)] for t in nest.flatten(node.keras_inputs)]
            if kind == "input":
                out = groups.new(layer.output.shape[-1])
                groups.get(out).fixed.append(f"model input {layer.name}")
            elif kind in ("conv", "separable"):
                _check_conv(layer)
                inputs[layer.name] = groups.union([*ins, inputs.get(layer.name, ins[0])], layer.name)
                if layer.name not in outputs:
                    outputs[layer.name] = groups.new(layer.filters)
                    kernel = layer.pointwise_kernel if kind == "separable" else layer.kernel
                    group = groups.get(outputs[layer.name])
                    group.owners.append(layer.name)
                    group.stats[layer.name] = normalize(filter_norms(kernel.numpy()), normalizer)
                out = outputs[layer.name]
            elif kind == "dense":
                inputs[layer.name] = groups.union([*ins, inputs.get(layer.name, ins[0])], layer.name)
                if layer.name not in outputs:
                    outputs[layer.name] = groups.new(layer.units)
                out = outputs[layer.name]
            elif kind == "depthwise":
                _check_conv(layer)
                out = groups.union([*ins, inputs.get(layer.name, ins[0])], layer.name)
                groups.get(out).stats[layer.name] = normalize(
                    filter_norms(layer.depthwise_kernel.numpy(), depthwise=True), normalizer
                )
                inputs[layer.name] = outputs[layer.name] = out
            elif kind == "elementwise":
                wide = [i for i in ins if groups.get(i).width > 1]  # 1-channel inputs broadcast
                out = groups.union(wide or ins, layer.name)
                inputs[layer.name] = outputs[layer.name] = out
            else:
                out = groups.union([*ins, inputs.get(layer.name, ins[0])], layer.name) if layer.weights else ins[0]
                inputs[layer.name] = outputs[layer.name] = out
            for tensor in nest.flatten(node.outputs):
                tensors[_tensor_key(tensor)] = out
    for tensor in model.outputs:
        groups.get(tensors[_tensor_key(tensor)]).fixed.append(f"model output {tensor._keras_history[0].name}")
    _exclude(model, groups, outputs, excluded_layers)
    return ChannelAnalysis(groups, inputs, outputs, kinds)


def _exclude(model: Any, groups: _Groups, outputs: dict[str, int], names: Iterable[str]) -> None:
    known = {layer.name for layer in model.layers}
    for name in names:
        if name not in known:
            examples = ", ".join(sorted(n for n in outputs if n.endswith("conv"))[:4])
            raise UserError(f"excluded layer {name!r} is not a layer of this model (layer names look like "
                            f"{examples}); fix -el/--excluded-layers or prune.excluded_layers")
        if name in outputs:
            groups.get(outputs[name]).fixed.append(f"excluded layer {name}")


def choose_channels(analysis: ChannelAnalysis, settings: PruneSettings) -> dict[str, int]:
    """Decide the kept channels of every group; returns the new filter count of each conv that shrinks."""
    counts: dict[str, int] = {}
    for group in analysis.prunable_groups():
        if group.fixed:
            group.kept = np.arange(group.width)
            continue
        scores = merge(list(group.stats.values()), settings.equalization_criterion)
        group.kept = kept_channels(scores, settings.threshold, settings.min_num_filters, settings.granularity)
        if len(group.kept) < group.width:
            counts.update({owner: len(group.kept) for owner in group.owners})
    return counts


def _kept(group: ChannelGroup) -> np.ndarray:
    return group.kept if group.kept is not None else np.arange(group.width)


def sliced_weights(model: Any, analysis: ChannelAnalysis) -> dict[str, np.ndarray]:
    """Every variable of ``model`` with the dropped channels cut out, by variable name."""

    result: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = analysis.kinds.get(layer.name)
        cin = _kept(analysis.input_group_of(layer.name)) if layer.name in analysis.inputs else None
        cout = _kept(analysis.group_of(layer.name)) if layer.name in analysis.outputs else None
        roles = _roles(layer, kind)
        for variable in layer.weights:
            value = variable.numpy()
            role = roles.get(id(variable))
            if role == "kernel":
                value = value[:, :, cin][..., cout]
            elif role == "dense":
                value = value[cin][:, cout]
            elif role == "depthwise":
                value = value[:, :, cin]
            elif role == "channel":
                value = value[cout]
            result[variable_key(variable)] = value
    return result


def _roles(layer: Any, kind: str | None) -> dict[int, str]:
    import tf_keras as keras

    pairs: list[tuple[Any, str]] = []
    if kind == "conv":
        pairs = [(layer.kernel, "kernel"), (layer.bias, "channel")]
    elif kind == "separable":
        pairs = [(layer.depthwise_kernel, "depthwise"), (layer.pointwise_kernel, "kernel"), (layer.bias, "channel")]
    elif kind == "depthwise":
        pairs = [(layer.depthwise_kernel, "depthwise"), (layer.bias, "channel")]
    elif kind == "dense":
        pairs = [(layer.kernel, "dense"), (layer.bias, "channel")]
    elif isinstance(layer, keras.layers.BatchNormalization):
        pairs = [(layer.gamma, "channel"), (layer.beta, "channel"), (layer.moving_mean, "channel"),
                 (layer.moving_variance, "channel")]
    return {id(v): role for v, role in pairs if v is not None}


@dataclass
class PruneResult:
    model: Any  # the smaller network, kept weights copied in
    filter_counts: dict[str, int]  # conv layer -> filters, for every conv that shrank
    params_before: int
    params_after: int

    @property
    def ratio(self) -> float:
        """Parameters of the pruned model over the original's (TAO's "pruning ratio")."""
        return self.params_after / self.params_before if self.params_before else 1.0


def trainable_parameters(model: Any) -> int:
    return int(sum(int(np.prod(v.shape)) for v in model.trainable_weights))


def prune_model(model: Any, settings: PruneSettings, base_counts: dict[str, int] | None = None,
                passthrough: tuple[type, ...] = ()) -> PruneResult:
    """The pruned copy of ``model``; ``base_counts`` are the counts ``model`` was already pruned to (if any);
    ``passthrough`` as in `analyse_channels`."""

    settings.check()
    analysis = analyse_channels(model, settings.normalizer, settings.excluded_layers, passthrough)
    counts = choose_channels(analysis, settings)
    smaller = apply_filter_counts(model, counts) if counts else _copy(model)
    assign_weights(smaller, sliced_weights(model, analysis), strict=True)
    return PruneResult(smaller, {**(base_counts or {}), **counts}, trainable_parameters(model),
                       trainable_parameters(smaller))


def _copy(model: Any) -> Any:
    import tf_keras as keras

    return keras.models.clone_model(model)
