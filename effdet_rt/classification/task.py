"""The classification task's parts that the stages look up by task name (`effdet_rt.tasks`): how its spec file
is told from a detector's, what its model files need from the deployment stages, and which imported weights make a
whole classifier. Light on purpose: spec loading, opening an engine and importing weights import this module."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from effdet_rt.model.configs import canonical_name
from effdet_rt.onnx.tasks import MODEL_PART, ModelTask
from effdet_rt.spec.loader import SPEC_PART, SpecShape
from effdet_rt.tasks import register
from effdet_rt.weights.imported import WEIGHTS_PART, ImportedWeights, WholeNetworkImport

TASK = "classification"  # the value of a model file's effdet_rt.task


def is_classification_data(data: Mapping[str, Any]) -> bool:
    """A classification spec's sections (data:, augment:) and no detector dataset: section."""
    return "dataset" not in data and bool({"data", "augment"} & set(data))


def softmax_float_nodes(model: Any) -> list[str]:
    from effdet_rt.onnx.graph import softmax_node_names

    return softmax_node_names(model)


def names_a_classifier(model_name: str) -> bool:
    """-m efficientnet-bN / efficientnet-liteN: the whole network, as a classifier (an EfficientDet takes the
    backbone only)."""
    return canonical_name(model_name).startswith("efficientnet-")


def whole_classifier(*args: Any) -> ImportedWeights:
    """The imported weights as a classifier's, marked as this task's (the checkpoint metadata's task)."""
    from effdet_rt.classification.imported import whole_classifier as finish

    imported = finish(*args)
    imported.extra_metadata = {"task": TASK, **imported.extra_metadata}
    return imported


def default_spec_yaml() -> str:
    from effdet_rt.classification.spec import classification_spec_to_yaml, default_classification_spec

    return classification_spec_to_yaml(default_classification_spec())


def resolved_spec_yaml(path: Path | None, overrides: Sequence[str], log: Callable[[str], None]) -> str:
    """The spec after the overrides (loading it has no notices for ``log``)."""
    from effdet_rt.classification.spec import classification_spec_to_yaml, load_classification_spec

    return classification_spec_to_yaml(load_classification_spec(path, list(overrides)))


SPEC = SpecShape(is_classification_data,
                 "this is a classification spec (data:, augment: sections); run it with "
                 "`effdet-rt classification train|evaluate|inference|export -e ...` (a detector spec names "
                 "its data section dataset:)",
                 default_spec_yaml, resolved_spec_yaml)
# a classifier keeps its Softmax in float (probabilities as fine-grained as FP32's), and quantizes only its
# convolutions and dense layer: quantizing swish / squeeze-excite too flips several times more top-1 answers
# (measured in docs/classification.md)
MODEL = ModelTask(TASK, "classifier", "effdet-rt classification", "--calib-images DIR",
                  "pass --calib-images DIR (a folder of images, e.g. the training images)",
                  float_nodes=softmax_float_nodes, quantized_ops=("Conv", "MatMul", "Gemm"), ort_channel_scales=False,
                  raw_heads=False)

WEIGHTS = WholeNetworkImport("classifier", names_a_classifier, whole_classifier)

register(SPEC_PART, TASK, SPEC)
register(MODEL_PART, TASK, MODEL)
register(WEIGHTS_PART, TASK, WEIGHTS)
