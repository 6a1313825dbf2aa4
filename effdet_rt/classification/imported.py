"""What an imported ImageNet classifier (`effdet-rt weights import ... -m efficientnet-...`) needs so that the
classification commands open it like a trained one: a stored spec, class names, the image format, and every
weight of the classification network (its head dropout's call counter included)."""

from __future__ import annotations

from typing import Any

import numpy as np

from effdet_rt.checkpoint import assign_weights, model_weights
from effdet_rt.classification.images import ImageFormat
from effdet_rt.classification.spec import classification_spec_to_yaml, default_classification_spec


def imported_classifier(arch: str, num_classes: int, input_size: tuple[int, int],
                        weights: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str, dict[str, Any]]:
    """(weights, spec YAML, metadata) of an imported classifier: its arch and native size, the ImageNet head
    (``retain_head``) and the 'tf' preprocess mode (x / 127.5 - 1: of the task's modes the one nearest to the
    (x - 127) / 128 the EfficientNet-Lite weights were trained with). The weight files carry no class names, so the
    classes are class_0 ... class_<N-1>; `classification inference --classmap` renames them."""
    from effdet_rt.classification.model import build_classifier

    spec = default_classification_spec()
    spec.model.arch = arch
    spec.model.input_image_size = [3, *input_size]
    spec.model.retain_head = True
    spec.data.preprocess_mode = "tf"
    model = build_classifier(spec, num_classes)
    assign_weights(model, weights, skip_pattern="^head_dropout/", strict=True)
    metadata = {"model_name": arch, "classes": [f"class_{i}" for i in range(num_classes)],
                "image_format": ImageFormat.from_spec(spec).as_metadata()}
    return model_weights(model), classification_spec_to_yaml(spec), metadata
