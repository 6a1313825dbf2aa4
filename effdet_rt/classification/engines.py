"""Classifier backends: a `.edrt` checkpoint (TensorFlow), an exported / built `.onnx` (ONNX Runtime FP32 or INT8)
or a TensorRT `.plan` / `.engine` built from the classifier ONNX.

Every backend takes batches made by `images.eval_image` with the model's own `ImageFormat` (stored in the checkpoint
metadata and in the ONNX metadata) and returns softmax probabilities (N, classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.checkpoint import assign_weights, load_checkpoint, resolve_key
from effdet_rt.classification.images import ImageFormat
from effdet_rt.classification.schema import ClassificationSpec
from effdet_rt.errors import CheckpointError, ModelFileError
from effdet_rt.model.pruned import filter_counts_from_metadata
from effdet_rt.onnx.graph import read_metadata
from effdet_rt.spec.validation import validate_spec

OUTPUT_NAME = "probabilities"
TASK = "classification"  # effdet_rt.task in the metadata of every classifier file (checkpoint, ONNX, plan)


class Classifier:
    backend = ""
    precision = "fp32"
    classes: list[str]
    fmt: ImageFormat
    max_batch: int | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - each backend defines it
        raise NotImplementedError

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 raw pixels -> (N, classes) probabilities; split into the engine's batch limit."""
        limit = self.max_batch or len(batch) or 1
        return np.concatenate([self.run(batch[i:i + limit]) for i in range(0, len(batch), limit)]) if len(batch) \
            else np.zeros((0, len(self.classes)), np.float32)

    def describe(self) -> str:
        return f"{self.backend} {self.precision}"


def spec_from_checkpoint(text: str, source: str):
    import yaml


    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{source}: the spec stored in the checkpoint is not valid YAML ({exc})") from exc
    return validate_spec(data, source, ClassificationSpec)


@dataclass
class ClassifierCheckpoint:
    checkpoint: Any  # the decrypted .edrt
    spec: ClassificationSpec  # the spec stored in it
    classes: list[str]
    filter_counts: dict[str, int]  # the pruned architecture ({} for the stock network)
    model: Any  # the logits network with the checkpoint's weights


def open_classifier_checkpoint(path: str | Path, key: str) -> ClassifierCheckpoint:
    """A classification .edrt and its logits network, rebuilt from the stored spec (and, for a pruned model, its
    filter counts) with every weight in place; a detector's or a damaged checkpoint raises CheckpointError."""
    from effdet_rt.classification.model import build_classifier

    path = Path(path)
    checkpoint = load_checkpoint(path, key)
    meta = checkpoint.metadata
    if meta.get("task") != TASK:
        raise CheckpointError(f"{path}: not a classification checkpoint (a detector's?); classification "
                              "commands take the .edrt written by `effdet-rt classification train`")
    spec = spec_from_checkpoint(checkpoint.spec_yaml, f"{path} (stored spec)")
    classes = list(meta["classes"])
    counts = filter_counts_from_metadata(meta, str(path))
    try:
        model = build_classifier(spec, len(classes), counts)
        assign_weights(model, checkpoint.weights)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return ClassifierCheckpoint(checkpoint, spec, classes, counts, model)


class KerasClassifier(Classifier):
    backend = "checkpoint"

    def __init__(self, path: str | Path, key: str):
        import tensorflow as tf

        from effdet_rt.classification.model import with_softmax

        self.path = Path(path)
        opened = open_classifier_checkpoint(self.path, key)
        self.spec, self.classes, self.metadata = opened.spec, opened.classes, opened.checkpoint.metadata
        self.fmt = ImageFormat.from_metadata(self.metadata["image_format"])
        self.logits_model = opened.model
        self.model = with_softmax(self.logits_model)
        self._forward = tf.function(lambda x: self.model(x, training=False))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(np.ascontiguousarray(batch, np.float32)))




class RunnerClassifier(Classifier):
    """A classifier on any backend's runner (effdet_rt/backends.py): its probabilities output, its metadata's classes
    and image format."""

    def __init__(self, runner: Any):
        self.runner, self.path, self.backend = runner, runner.path, runner.backend
        meta = runner.metadata
        if meta.get("task") != TASK:
            raise ModelFileError(f"{self.path}: not a classifier ({self.backend} model without effdet_rt.task = "
                                 f"{TASK} metadata); export it with `effdet-rt classification export`"
                                 + ("" if self.backend == "onnxruntime" else " and build it with `effdet-rt build`"))
        if OUTPUT_NAME not in runner.output_names:
            raise ModelFileError(f"{self.path}: the model has no '{OUTPUT_NAME}' output (outputs: "
                                 f"{', '.join(runner.output_names)}); rebuild it from the classifier ONNX")
        self.metadata = meta
        self.classes = list(meta["classes"])
        self.fmt = ImageFormat.from_metadata(meta["image_format"])
        self.precision = runner.precision
        self.max_batch = runner.static_batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.runner.run(batch)[OUTPUT_NAME]


class OnnxClassifier(RunnerClassifier):
    def __init__(self, path: str | Path, threads: int | None = None):
        from effdet_rt.engines.runtime.onnxruntime import OnnxRuntimeRunner

        super().__init__(OnnxRuntimeRunner(path, threads=threads, micro_batch=1 << 30))


class TensorRTClassifier(RunnerClassifier):
    """A plan built by `effdet-rt build` from a classifier ONNX; classes and image format come from the JSON the
    build writes beside the plan, the buffers and execution from the shared `PlanSession`."""

    def __init__(self, path: str | Path):
        from effdet_rt.engines.runtime.tensorrt import (
            PlanRunner,
            engine_info_path,
            plan_metadata,
            read_engine_info,
        )

        path = Path(path)
        legacy = read_engine_info(path).get("classifier")  # plans built before <plan>.json kept 'metadata'
        if plan_metadata(path).get("task") != TASK and not isinstance(legacy, dict):
            raise ModelFileError(
                f"{path}: not a classifier plan ({engine_info_path(path).name} beside it holds no classifier "
                "metadata: a detector's plan, or the JSON is missing); build it with `effdet-rt build -m "
                "classifier.onnx -o classifier.plan --backend tensorrt`")
        runner = PlanRunner(path)
        if isinstance(legacy, dict) and not runner.metadata:
            runner.metadata = legacy
        super().__init__(runner)
        self.plan = self.runner.plan
        self.max_batch = self.plan.max_batch

    def describe(self) -> str:
        return f"{self.backend} {self.precision} (TensorRT {self.plan.trt.__version__})"


def load_classifier(path: str | Path, key: str | None = None, spec_key: str | None = None) -> Classifier:
    """Open a classifier with the backend the table names for its suffix: a .edrt checkpoint runs in TensorFlow,
    every other file through its backend's runner."""
    from effdet_rt.backends import model_file_backend
    from effdet_rt.engines.registry import open_runner

    path = Path(path)
    backend = model_file_backend(path)
    if backend.name == "checkpoint":
        return KerasClassifier(path, resolve_key(key, spec_key or None))
    if backend.name == "tensorrt":
        return TensorRTClassifier(path)  # its own message for a plan without classifier metadata
    return RunnerClassifier(open_runner(path))


def classifier_metadata(model: Any) -> dict[str, Any] | None:
    """The effdet_rt metadata of a classifier ONNX model (a ModelProto), None for any other model."""
    meta = read_metadata(model)
    return meta if meta.get("task") == TASK else None
