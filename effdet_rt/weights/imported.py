"""What every weight importer returns: weights under our variable names and what the network they fit is.

Its own module so the format readers (automl, keras_h5, torch_lite) and the dispatcher that calls them
(importer.py) import it without importing each other. A task that takes a whole EfficientNet (top layers
included) registers a `WholeNetworkImport`, which the readers hand the renamed weights to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from effdet_rt.tasks import parts

CLASS_PREDICT = "class_net_predict"


@dataclass
class ImportedWeights:
    """Weights under our variable names, for ``model_name`` with ``num_classes`` real classes."""

    kind: str  # "automl", "keras-h5", ...
    model_name: str
    num_classes: int
    weights: dict[str, np.ndarray]
    notices: list[str] = field(default_factory=list)
    input_size: tuple[int, int] | None = None
    num_anchors: int = 9
    extra_metadata: dict[str, Any] = field(default_factory=dict)


WEIGHTS_PART = "weights"  # the kind under which a task registers its WholeNetworkImport (`effdet_rt.tasks`)


@dataclass(frozen=True)
class WholeNetworkImport:
    """A task whose model is a whole EfficientNet, the weight file's top layers included (a detector takes the
    backbone only). The task registers it from its own package; the format readers hand it the renamed weights."""

    noun: str  # what the file's top layers make of the network, for notices about them
    claims: Callable[[str], bool]  # -m/--model names one of the task's models
    # (format, source, the file's backbone, -m, --num-classes, every weight renamed, notices so far) -> the import
    finish: Callable[..., ImportedWeights]
    # (-m, classes, input size, the imported weights) -> (the weights, spec YAML, metadata) the task's checkpoint
    # holds, so the task's own commands take the written .edrt
    checkpoint_fields: Callable[..., tuple[dict[str, np.ndarray], str, dict[str, Any]]]


def whole_network_import(model_name: str | None) -> WholeNetworkImport | None:
    """The task that takes a whole EfficientNet for ``-m model_name``, if one does."""
    if model_name is None:
        return None
    return next((part for part in parts(WEIGHTS_PART).values() if part.claims(model_name)), None)


def importing_task(imported: ImportedWeights) -> WholeNetworkImport | None:
    """The task the weights were imported as a whole network of (the task its metadata names), if any."""
    return parts(WEIGHTS_PART).get(imported.extra_metadata.get("task"))


def top_noun() -> str:
    """What the weight files' top layers are (the head of the tasks that take them)."""
    return " / ".join(part.noun for part in parts(WEIGHTS_PART).values()) or "top"
