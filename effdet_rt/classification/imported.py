"""An imported ImageNet classifier (`effdet-rt weights import ... -m efficientnet-...`): the weight readers of
`effdet_rt.weights` hand it the file's whole network, top layers included (`WholeNetworkImport`, registered in
task.py); here the class count is settled and every weight is checked to fit. Then what the classification
commands need to open the file like a trained one: a stored spec, class names, the image format, and every weight
of the classification network (its head dropout's call counter included)."""

from __future__ import annotations

from typing import Any

import numpy as np

from effdet_rt.checkpoint import assign_weights, model_weights
from effdet_rt.classification.images import ImageFormat
from effdet_rt.classification.spec import classification_spec_to_yaml, default_classification_spec
from effdet_rt.errors import CheckpointError
from effdet_rt.model.configs import BackboneConfig, canonical_name, get_backbone_config
from effdet_rt.weights.imported import ImportedWeights


def whole_classifier(kind: str, source: str, backbone: BackboneConfig, model_name: str, num_classes: int | None,
                     weights: dict[str, np.ndarray], notices: list[str]) -> ImportedWeights:
    """The import of a whole classifier from a ``kind`` ("keras-h5", "torch-lite") file's renamed weights (the task
    module adds the task's name to its metadata)."""
    return {"keras-h5": _keras_h5_classifier, "torch-lite": _torch_lite_classifier}[kind](
        source, backbone, model_name, num_classes, weights, notices)


def _keras_h5_classifier(source: str, backbone: BackboneConfig, model_name: str, num_classes: int | None,
                         weights: dict[str, np.ndarray], notices: list[str]) -> ImportedWeights:
    requested = get_backbone_config(model_name)
    if requested.name != backbone.name:
        raise CheckpointError(f"{source}: holds {backbone.name} weights, not {requested.name}; pass -m {backbone.name}")
    file_classes = int(weights["logits/bias"].shape[0]) if "logits/bias" in weights else None
    classes = num_classes or file_classes
    if classes is None:
        raise CheckpointError(f"{source}: has no classifier layer (include_top=False); pass --num-classes")
    skip = None
    if file_classes != classes:
        skip = "^logits/"
        notices.append(f"classifier: the file has {file_classes or 'no'} output classes, the model {classes}: the "
                       "logits layer starts from our initialisation")
    return ImportedWeights("keras-h5", backbone.name, classes, through_classifier(backbone.name, classes, weights, skip),
                           notices, (backbone.resolution, backbone.resolution),
                           extra_metadata={"backbone": backbone.name,
                                           "num_classes": classes, "logits_imported": file_classes == classes})


def _torch_lite_classifier(source: str, backbone: BackboneConfig, model_name: str, num_classes: int | None,
                           weights: dict[str, np.ndarray], notices: list[str]) -> ImportedWeights:
    canonical = canonical_name(model_name)
    if canonical != backbone.name:
        raise CheckpointError(f"{source}: holds {backbone.name} weights, not {canonical}; pass -m {backbone.name}")
    file_classes = int(weights["logits/bias"].shape[0])
    classes = num_classes or file_classes
    skip = None if classes == file_classes else "^logits/"
    if skip:
        notices.append(f"classifier: the file has {file_classes} classes, the model {classes}: the logits "
                       "layer starts from our initialisation")
    return ImportedWeights("torch-lite", backbone.name, classes,
                           through_classifier(backbone.name, classes, weights, skip), notices,
                           (backbone.resolution, backbone.resolution),
                           extra_metadata={"backbone": backbone.name,
                                           "num_classes": classes, "logits_imported": skip is None})


def through_classifier(name: str, classes: int, weights: dict[str, np.ndarray], skip: str | None) -> dict[str, np.ndarray]:
    """Load into our classifier (every weight must fit) and return all of its weights."""
    import tf_keras as keras

    from effdet_rt.model.efficientnet import build_efficientnet_classifier

    model = build_efficientnet_classifier(name, classes, (32, 32))
    try:
        report = assign_weights(model, weights, skip_pattern=skip, strict=True)
        del report
        return model_weights(model)
    finally:
        del model
        keras.backend.clear_session()


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
