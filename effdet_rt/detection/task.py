"""The detection task's parts that the stages look up by task name (`effdet_rt.tasks`): its spec (the one
`effdet_rt.spec` validates) and what its model files need from the deployment stages. Detection is the default task: a spec no other task claims, and a model file without effdet_rt.task
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


# recognizes None: the default task's spec is any file no other task claims, so no command refuses it
SPEC = SpecShape(None, "", default_spec_yaml, resolved_spec_yaml)
# a detector keeps its post-processing in float (found from its head outputs) and lets ONNX Runtime quantize every
# op it can; it calibrates on the spec's TFRecords
MODEL = ModelTask(TASK, "detector", "effdet-rt", "--calib-tfrecords GLOB",
                  "set build.calibration.tfrecords (--calib-tfrecords)", float_nodes=None, quantized_ops=None,
                  ort_channel_scales=True, raw_heads=True)

declare_default(TASK)
register(SPEC_PART, TASK, SPEC)
register(MODEL_PART, TASK, MODEL)
