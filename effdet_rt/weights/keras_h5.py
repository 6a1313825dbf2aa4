"""keras.applications EfficientNetB0..B7 ``.h5`` weights (what ``EfficientNetB0(weights="imagenet")`` downloads).

The Keras model is the same network as our EfficientNet: its strided convolutions pad explicitly where ours use
``same`` padding, which is the same thing on even-sized feature maps (every stride-2 input of a network whose input
is a multiple of 32). Layer names map one to one (``block3b_expand_conv`` is our ``stage3_block1_expand_conv``).
Its ``normalization`` layer holds ImageNet's mean and std as preprocessing constants; ours has them built in, so
they are checked, not imported. The detector uses the backbone only; Keras' ``top_*`` / ``predictions`` layers
go, renamed, to a task that takes the whole network (`WholeNetworkImport`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from effdet_rt.errors import CheckpointError
from effdet_rt.model.configs import BACKBONES, DETECTORS, BackboneConfig, get_config
from effdet_rt.weights.imported import ImportedWeights, top_noun, whole_network_import

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
BLOCK = re.compile(r"^block(\d)([a-z])_(expand_conv|expand_bn|dwconv|bn|se_reduce|se_expand|project_conv|project_bn)$")
BLOCK_PART = {"bn": "dw_bn"}
HEAD_LAYERS = {"top_conv": "head_conv", "top_bn": "head_bn", "predictions": "logits"}
FIXED_LAYERS = {"stem_conv": "stem_conv", "stem_bn": "stem_bn"}

H5Layers = dict[str, dict[str, np.ndarray]]


def read_h5_layers(path: str | os.PathLike) -> H5Layers:
    """{layer name: {weight name: array}} from a Keras weights or whole-model .h5."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            root = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" not in root.attrs:
                raise CheckpointError(f"{path}: an HDF5 file but not Keras weights (no layer_names); pass a "
                                      "keras.applications EfficientNet .h5")
            layers: H5Layers = {}
            for layer in (_text(n) for n in root.attrs["layer_names"]):
                group = root[layer]
                names = [_text(n) for n in group.attrs.get("weight_names", [])]
                layers[layer] = {_short(layer, n): np.asarray(group[n]) for n in names}
            return layers
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the .h5 file ({exc})") from None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _short(layer: str, weight: str) -> str:
    """'block1a_bn/gamma:0' -> 'gamma'."""
    return weight.rsplit("/", 1)[-1].split(":")[0]


def our_layer_name(keras_layer: str) -> str | None:
    if keras_layer in FIXED_LAYERS:
        return FIXED_LAYERS[keras_layer]
    if keras_layer in HEAD_LAYERS:
        return HEAD_LAYERS[keras_layer]
    m = BLOCK.match(keras_layer)
    if not m:
        return None
    return f"stage{m.group(1)}_block{ord(m.group(2)) - ord('a')}_{BLOCK_PART.get(m.group(3), m.group(3))}"


def backbone_of(layers: H5Layers, source: str) -> BackboneConfig:
    """Which EfficientNet B-variant wrote the file, from its blocks and channel counts."""
    from effdet_rt.model.efficientnet import round_filters, scaled_blocks

    if "stem_conv" not in layers or not any(BLOCK.match(n) for n in layers):
        some = ", ".join(n for n in list(layers)[:4])
        raise CheckpointError(f"{source}: not a keras.applications EfficientNet .h5 (no stem_conv / block1a_* "
                              f"layers; it has {some}...); pass EfficientNetB0..B7 weights")
    blocks = sorted({f"{m.group(1)}{m.group(2)}" for n in layers if (m := BLOCK.match(n))})
    stem = layers["stem_conv"]["kernel"].shape[-1]
    for cfg in (c for c in BACKBONES.values() if c.use_se):  # keras.applications has B0..B7, no Lite
        expected = sorted(f"{b.stage}{chr(ord('a') + b.index)}" for b in scaled_blocks(cfg))
        if blocks == expected and stem == round_filters(32, cfg.width):
            return cfg
    raise CheckpointError(f"{source}: an EfficientNet-like .h5 with {len(blocks)} blocks and a {stem}-channel stem, "
                          "which is none of EfficientNetB0..B7")


def check_normalization(layers: H5Layers, source: str) -> str:
    """The file's input Normalization must be ImageNet's (ours is built in); returns the notice."""
    norm = next((w for n, w in layers.items() if n.startswith("normalization") and "mean" in w), None)
    if norm is None:
        return "no input Normalization layer in the .h5: our model normalises with ImageNet's mean and std"
    mean, variance = norm["mean"].reshape(-1), norm["variance"].reshape(-1)
    # keras.applications' own ImageNet file stores the std as the variance (and rescales once more after it)
    for std in (np.sqrt(variance), variance):
        if np.allclose(mean, IMAGENET_MEAN, atol=1e-3) and np.allclose(std, IMAGENET_STD, atol=1e-3):
            return "input normalisation: the .h5's is ImageNet's mean and std, as ours"
    raise CheckpointError(f"{source}: its input Normalization (mean {np.round(mean, 4).tolist()}, variance "
                          f"{np.round(variance, 4).tolist()}) is not ImageNet's, which our EfficientNet has built in; "
                          "these weights expect other inputs")


def keras_to_ours(layers: H5Layers, with_head: bool, source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rename the file's weights; the top layers only when ``with_head``."""
    weights: dict[str, np.ndarray] = {}
    unused: list[str] = []
    unknown: list[str] = []
    for layer, arrays in layers.items():
        if not arrays or layer.startswith("normalization"):
            continue
        ours = our_layer_name(layer)
        if ours is None:
            unknown.append(layer)
            continue
        if layer in HEAD_LAYERS and not with_head:
            unused.append(layer)
            continue
        weights.update({f"{ours}/{name}": value for name, value in arrays.items()})
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} layer(s) with weights have no place in our EfficientNet: "
                              f"{', '.join(sorted(unknown)[:8])}")
    notices = [f"not used by the detector: the {top_noun()} head {', '.join(unused)}"] if unused else []
    return weights, notices


def detector_for_backbone(backbone: str, requested: str | None, source: str) -> str:
    users = [cfg.name for cfg in DETECTORS.values() if cfg.backbone == backbone]
    if requested is not None:
        cfg = get_config(requested)
        if cfg.backbone != backbone:
            raise CheckpointError(f"{source}: holds {backbone} weights, but {cfg.name} uses {cfg.backbone}; pass "
                                  f"-m {' or '.join(users) or 'a model with that backbone'}")
        return cfg.name
    if len(users) != 1:
        raise CheckpointError(f"{source}: {backbone} weights fit {' / '.join(users)}; choose one with -m/--model")
    return users[0]


def import_keras_h5(source: str | os.PathLike, model_name: str | None = None,
                    num_classes: int | None = None) -> ImportedWeights:
    """Backbone weights for an EfficientDet (``-m efficientdet-dN``), or the whole network for the task that takes
    one (``-m efficientnet-bN``: `WholeNetworkImport`).

    For a detector only the backbone is written (BiFPN and heads have no ImageNet weights; train.checkpoint leaves
    them at their initialisation and says so).
    """
    source = str(source)
    layers = read_h5_layers(source)
    backbone = backbone_of(layers, source)
    notices = [f"{Path(source).name}: keras.applications {backbone.name} weights", check_normalization(layers, source)]
    whole = whole_network_import(model_name)
    if whole is not None:
        weights, _ = keras_to_ours(layers, with_head=True, source=source)
        return whole.finish("keras-h5", source, backbone, model_name, num_classes, weights, notices)
    if num_classes is not None:
        raise CheckpointError(f"--num-classes applies to a {top_noun()} (-m efficientnet-bN) only: an .h5 gives a "
                              "detector its backbone, and the class head is set by the training spec")
    name = detector_for_backbone(backbone.name, model_name, source)
    weights, more = keras_to_ours(layers, with_head=False, source=source)
    notices += more + ["BiFPN and prediction heads are not in the file: they start from our initialisation"]
    return ImportedWeights("keras-h5", name, 0, weights, notices, extra_metadata={"backbone_only": True,
                                                                                 "backbone": backbone.name})

