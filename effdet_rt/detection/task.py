"""The detection task's parts that the stages look up by task name (`effdet_rt.tasks`): its spec (the one
`effdet_rt.spec` validates), what its model files need from the deployment stages, and its DeepStream and Triton
writers. Detection is the default task: a spec no other task claims, and a model file without effdet_rt.task
(every detector export before the key existed), are detection's. Light on purpose: spec loading and opening an
engine import this module, so the parts import their stage modules when called."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from effdet_rt.onnx.tasks import MODEL_PART, ModelTask
from effdet_rt.spec.loader import SPEC_PART, SpecShape
from effdet_rt.tasks import declare_default, register

TASK = "detection"  # the value of a model file's effdet_rt.task (files without the key are this task's too)


def default_spec_yaml() -> str:
    from effdet_rt.spec.loader import default_spec, spec_to_yaml

    return spec_to_yaml(default_spec())


def resolved_spec_yaml(path: Path | None, overrides: Sequence[str], log: Callable[[str], None]) -> str:
    """The spec after the overrides, then a comment with the preset values its unset model fields take."""
    from effdet_rt.spec.loader import load_task_spec, spec_to_yaml

    spec = load_task_spec(path, list(overrides), {}, log=log)
    return spec_to_yaml(spec) + preset_note(spec.model) + "\n"


def preset_note(model: Any) -> str:
    """A YAML comment with the values the unset (null) model fields take from the model's preset."""
    unset = [name for name in ("input_width", "input_height", "min_level", "max_level", "num_scales",
                               "aspect_ratios", "anchor_scale") if getattr(model, name) is None]
    if not unset:
        return "# every model field is set"
    values = ", ".join(f"{name} {model.resolved(name)}" for name in unset)
    return f"# {model.name} preset values for the null model fields: {values}"


def deepstream_config(model: Path, output_dir: Path, metadata: dict[str, Any], labels: str | None,
                      num_classes: int | None, threshold: float) -> tuple[Path, Path]:
    """The primary detector's Gst-nvinfer config and labels.txt."""
    from effdet_rt.integrations.deepstream import write_deepstream_config

    return write_deepstream_config(model, output_dir, labels, num_classes, threshold)


def deepstream_triton_config(model: Path, repository: Path, name: str | None, output_dir: Path,
                             metadata: dict[str, Any], labels_path: Path, threshold: float) -> Path:
    """The primary detector's Gst-nvinferserver config, its classes counted from the labels file written."""
    from effdet_rt.integrations.deepstream_triton import write_detector_triton_config

    classes = len(labels_path.read_text(encoding="utf-8").splitlines())
    return write_detector_triton_config(model, repository, name, output_dir, labels_path.name, classes, threshold)


def triton_repository(request: Any, labels: str | Path | None, min_score: float, top_k: int) -> Path:
    """Detections out of the ensemble (``top_k`` is for the tasks that rank classes)."""
    from effdet_rt.integrations.triton import write_detector_repository

    return write_detector_repository(request, labels, min_score)


# recognizes None: the default task's spec is any file no other task claims, so no command refuses it
SPEC = SpecShape(None, "", default_spec_yaml, resolved_spec_yaml)
# a detector keeps its post-processing in float (found from its head outputs) and lets ONNX Runtime quantize every
# op it can; it calibrates on the spec's TFRecords
MODEL = ModelTask(TASK, "detector", "effdet-rt", "--calib-tfrecords GLOB",
                  "set build.calibration.tfrecords (--calib-tfrecords)", float_nodes=None, quantized_ops=None,
                  ort_channel_scales=True, raw_heads=True, image_calibration=None,
                  deepstream_config=deepstream_config, deepstream_triton_config=deepstream_triton_config,
                  triton_repository=triton_repository)

declare_default(TASK)
register(SPEC_PART, TASK, SPEC)
register(MODEL_PART, TASK, MODEL)
