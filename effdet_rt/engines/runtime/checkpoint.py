"""The checkpoint backend: a tf_keras EfficientDet plus in-graph post-processing, run as one tf.function.

`KerasEngine` wraps a model that is already in memory (the trainer evaluates with it); `load_engine` opens a
``.edrt`` checkpoint, rebuilds the network from the spec stored inside it and loads its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.checkpoint import assign_weights, load_checkpoint, resolve_key
from effdet_rt.detections import Detections, category_ids
from effdet_rt.engines.runtime.base import Engine
from effdet_rt.errors import CheckpointError
from effdet_rt.model.factory import DetectorSetup, build_model_from_spec, setup_from_spec
from effdet_rt.model.postprocess import NmsConfig, postprocess
from effdet_rt.model.pruned import filter_counts_from_metadata
from effdet_rt.spec.validation import validate_spec


class KerasEngine(Engine):
    """Engine over an in-memory Keras detector; `run` executes network, flattening and NMS in one graph."""

    backend = "checkpoint"

    def __init__(self, model: Any, setup: DetectorSetup, nms_config: NmsConfig = NmsConfig()):
        self.model = model
        self.setup = setup
        self.nms_config = nms_config
        self.input_size = tuple(setup.input_size)
        self._detect = _detection_function(model, setup, nms_config)

    def run(self, batch: np.ndarray) -> Detections:
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return _empty_detections(self.nms_config.max_detections)
        boxes, scores, classes, num = self._detect(batch)
        return Detections(boxes.numpy(), scores.numpy(), classes.numpy(), num.numpy())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.setup.name, "num_classes": self.setup.num_classes}


def _empty_detections(slots: int) -> Detections:
    return Detections(np.zeros((0, slots, 4)), np.zeros((0, slots)), np.zeros((0, slots)), np.zeros((0,)))


def _detection_function(model: Any, setup: DetectorSetup, nms_config: NmsConfig):
    """A tf.function (dynamic batch) from a preprocessed batch to (boxes, scores, category ids, counts)."""
    import tensorflow as tf

    from effdet_rt.model.efficientdet import flatten_outputs, split_outputs

    anchors = setup.anchors()
    height, width = setup.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)], reduce_retracing=True)
    def detect(batch):
        outputs = model(batch, training=False)
        class_list, box_list = split_outputs(outputs, setup.num_levels)
        class_logits, box_codes = flatten_outputs(class_list, box_list, setup.num_classes)
        boxes, scores, classes, num = postprocess(class_logits, box_codes, anchors, nms_config)
        return boxes, scores, category_ids(classes), num

    return detect


def nms_config_from_spec(spec: Any) -> NmsConfig:
    """NMS settings of the checkpoint backend: the spec's evaluate section (`infer` hands its inference settings
    in through it, `effdet_rt.infer.folder.with_inference_nms`)."""
    e = spec.evaluate
    return NmsConfig(score_threshold=float(e.min_score_thresh), iou_threshold=float(e.iou_thresh),
                     max_detections=int(e.max_detections_per_image), pre_nms_top_k=int(e.pre_nms_top_k))


def spec_from_yaml(text: str, source: str) -> Any:
    """Parse spec YAML text (as stored in a checkpoint) into an ExperimentSpec."""
    import yaml


    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{source}: the spec stored in the checkpoint is not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: the spec stored in the checkpoint is not a mapping")
    return validate_spec(data, source)


def load_engine(path: str | Path, key: str | None = None, spec: Any = None) -> KerasEngine:
    """Open a ``.edrt`` checkpoint: the architecture comes from its stored spec (``spec`` only when it has none)
    and, for a pruned model, the filter counts in its metadata;
    ``spec`` (from -e) supplies the key fallback and the inference settings such as max detections."""

    path = Path(path)
    checkpoint = load_checkpoint(path, resolve_key(key, getattr(spec, "encryption_key", None) or None))
    if checkpoint.spec_yaml.strip():
        model_spec = spec_from_yaml(checkpoint.spec_yaml, f"{path} (stored spec)")
    elif spec is not None:
        model_spec = spec
    else:
        raise CheckpointError(f"{path}: the checkpoint carries no spec; pass the training spec with -e")

    setup = setup_from_spec(model_spec)
    model = build_model_from_spec(model_spec, setup, filter_counts_from_metadata(checkpoint.metadata, str(path)))
    try:
        assign_weights(model, checkpoint.weights)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return KerasEngine(model, setup, nms_config_from_spec(spec if spec is not None else model_spec))
