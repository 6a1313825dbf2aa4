"""What the deployment stages (calib/, engines/, prune/, integrations/, and the CLI's build, deepstream-config and
triton) need to know of a model's task, read from the model file's own metadata (``effdet_rt.task``; a file without
the key is the default task's, as every export before the key existed).

A stage asks `model_task(...)` and uses the answer's fields; it never compares task names itself. Every task
registers its own row from its package (`effdet_rt.tasks`), so adding a task is its own folder and no line here.
The stages' own flows (decoding outputs into Detections, pruning, measured builds, the primary DeepStream config)
are the default task's: they refuse another task's file with that task's command (`default_model_task`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effdet_rt.errors import ModelFileError
from effdet_rt.tasks import default_task, parts

MODEL_PART = "model"  # the kind under which a task registers its ModelTask


@dataclass(frozen=True)
class ModelTask:
    name: str  # the value of effdet_rt.task
    noun: str  # what people call such a model
    command: str  # the CLI words that run the task's verbs ("effdet-rt", or with the task's command group)
    calib_data: str  # the build option that gives INT8 calibration data, as a user types it
    calib_advice: str  # what to do when that data is missing
    # INT8 Q/DQ: node names kept in float (None: the detector's post-processing, found from its head outputs) and the
    # op types quantized (None: every op ONNX Runtime quantizes)
    float_nodes: Callable[[Any], list[str]] | None
    quantized_ops: tuple[str, ...] | None
    ort_channel_scales: bool  # whether ONNX Runtime's FP32 build rewrites BiFPN's weighted sums for its CPU layout
    raw_heads: bool  # whether the ONNX must carry the detector's outputs (checked before ONNX Runtime builds it)
    # `build`'s INT8 calibration batches from --calib-images: (the ONNX's metadata, the folder or None,
    # build.calibration, log) -> a callable giving fresh batches; None: the task calibrates on build.calibration's
    # TFRecords (the spec's)
    image_calibration: Callable[..., Any] | None
    # `deepstream-config`: (model, output folder, its metadata, --labels, --num-classes, --threshold) -> the
    # Gst-nvinfer config and labels file written
    deepstream_config: Callable[..., tuple[Path, Path]]
    # `deepstream-config --triton`: (model, repository, --triton-name, output folder, its metadata, the labels file
    # written, --threshold) -> the Gst-nvinferserver config written
    deepstream_triton_config: Callable[..., Path]
    # `triton`: (RepositoryRequest, --labels, --min-score, --top-k) -> the ensemble's folder written
    triton_repository: Callable[..., Path]


def model_tasks() -> dict[str, ModelTask]:
    """Every task's row, the default task's first."""
    return parts(MODEL_PART)


def default_model_task() -> ModelTask:
    """The row of the default task (`effdet_rt.tasks.default_task`)."""
    return model_tasks()[default_task()]


def task_named(name: str, source: str = "the model") -> ModelTask:
    tasks = model_tasks()
    if name not in tasks:
        raise ModelFileError(f"{source}: effdet_rt.task '{name}' is not a task of this effdet-rt "
                             f"({', '.join(tasks)}); use the effdet-rt version that wrote it")
    return tasks[name]


def task_of_metadata(metadata: dict[str, Any], source: str = "the model") -> ModelTask:
    return task_named(str(metadata.get("task", default_task())), source)


def model_task(model: Any) -> ModelTask:
    """The task of an ONNX model (a ModelProto)."""
    from effdet_rt.onnx.graph import read_metadata

    return task_of_metadata(read_metadata(model))
