"""What every weight importer returns: weights under our variable names and what the network they fit is.

Its own module so the format readers (automl, keras_h5, torch_lite) and the dispatcher that calls them
(importer.py) import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
