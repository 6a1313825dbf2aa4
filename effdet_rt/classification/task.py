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


def imported_checkpoint(*args: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The imported classifier's weights, spec and metadata (classes, image format) for its .edrt."""
    from effdet_rt.classification.imported import imported_classifier

    return imported_classifier(*args)


def default_spec_yaml() -> str:
    from effdet_rt.classification.spec import classification_spec_to_yaml, default_classification_spec

    return classification_spec_to_yaml(default_classification_spec())


def resolved_spec_yaml(path: Path | None, overrides: Sequence[str], log: Callable[[str], None]) -> str:
    """The spec after the overrides (loading it has no notices for ``log``)."""
    from effdet_rt.classification.spec import classification_spec_to_yaml, load_classification_spec

    return classification_spec_to_yaml(load_classification_spec(path, list(overrides)))


def build_calibration(metadata: dict[str, Any], images: Path | None, calibration: Any,
                      log: Callable[[str], None]) -> Any:
    from effdet_rt.classification.deploy import build_calibration as from_images

    return from_images(metadata, images, calibration, log)


def deepstream_config(model: Path, output_dir: Path, metadata: dict[str, Any], labels: str | None,
                      num_classes: int | None, threshold: float) -> tuple[Path, Path]:
    """A secondary classifier's Gst-nvinfer config, its classes the model's own (``num_classes`` is the detector's
    option: a classifier's count is in its metadata)."""
    from effdet_rt.classification.deepstream import write_classifier_deepstream_config

    return write_classifier_deepstream_config(model, output_dir, metadata, labels, threshold)


def deepstream_triton_config(model: Path, repository: Path, name: str | None, output_dir: Path,
                             metadata: dict[str, Any], labels_path: Path, threshold: float) -> Path:
    from effdet_rt.classification.deepstream import write_classifier_triton_config

    return write_classifier_triton_config(model, repository, name, output_dir, metadata, labels_path.name, threshold)


def triton_repository(request: Any, labels: str | Path | None, min_score: float, top_k: int) -> Path:
    """The top-k classes out of the ensemble (``min_score`` filters a detector's boxes)."""
    from effdet_rt.classification.triton import write_classifier_repository

    return write_classifier_repository(request, labels, top_k)


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
                  raw_heads=False, image_calibration=build_calibration, deepstream_config=deepstream_config,
                  deepstream_triton_config=deepstream_triton_config, triton_repository=triton_repository)

WEIGHTS = WholeNetworkImport("classifier", names_a_classifier, whole_classifier, imported_checkpoint)

register(SPEC_PART, TASK, SPEC)
register(MODEL_PART, TASK, MODEL)
register(WEIGHTS_PART, TASK, WEIGHTS)
