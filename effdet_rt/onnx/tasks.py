"""What the deployment stages (calib/, engines/, prune/, integrations/) need to know of a model's task, read from
the model file's own metadata (``effdet_rt.task``; a file without the key is a detector's, as every detector export
before the key existed).

A stage asks `model_task(...)` and uses the answer's fields; it never compares task names itself. The detector's row
is the default here; every other task registers its own row from its package (`effdet_rt.tasks`), so adding a task
is its own folder and no line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from effdet_rt.errors import ModelFileError
from effdet_rt.tasks import parts

MODEL_PART = "model"  # the kind under which a task registers its ModelTask


@dataclass(frozen=True)
class ModelTask:
    name: str  # the value of effdet_rt.task
    noun: str  # what people call such a model
    command: str  # the CLI words that run the task's verbs ("effdet-rt" for detection)
    calib_data: str  # the build option that gives INT8 calibration data, as a user types it
    calib_advice: str  # what to do when that data is missing
    # INT8 Q/DQ: node names kept in float (None: the detector's post-processing, found from its head outputs) and the
    # op types quantized (None: every op ONNX Runtime quantizes)
    float_nodes: Callable[[Any], list[str]] | None
    quantized_ops: tuple[str, ...] | None
    ort_channel_scales: bool  # whether ONNX Runtime's FP32 build rewrites BiFPN's weighted sums for its CPU layout
    raw_heads: bool  # whether the ONNX must carry the detector's outputs (checked before ONNX Runtime builds it)


DETECTION = ModelTask("detection", "detector", "effdet-rt", "--calib-tfrecords GLOB",
                      "set build.calibration.tfrecords (--calib-tfrecords)", None, None, True, True)


def model_tasks() -> dict[str, ModelTask]:
    """Every task's row, the detector's first."""
    return {DETECTION.name: DETECTION, **parts(MODEL_PART)}


def task_named(name: str, source: str = "the model") -> ModelTask:
    tasks = model_tasks()
    if name not in tasks:
        raise ModelFileError(f"{source}: effdet_rt.task '{name}' is not a task of this effdet-rt "
                             f"({', '.join(tasks)}); use the effdet-rt version that wrote it")
    return tasks[name]


def task_of_metadata(metadata: dict[str, Any], source: str = "the model") -> ModelTask:
    return task_named(str(metadata.get("task", DETECTION.name)), source)


def model_task(model: Any) -> ModelTask:
    """The task of an ONNX model (a ModelProto)."""
    from effdet_rt.onnx.graph import read_metadata

    return task_of_metadata(read_metadata(model))
