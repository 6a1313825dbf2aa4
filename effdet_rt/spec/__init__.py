"""The experiment spec: schema, loading (YAML or legacy TF1 prototxt), overrides and YAML output."""

from effdet_rt.spec.loader import default_spec, load_spec, load_task_spec, spec_to_yaml
from effdet_rt.spec.overrides import apply_overrides
from effdet_rt.spec.schema import ExperimentSpec
from effdet_rt.spec.tf1 import convert_tf1

__all__ = [
    "ExperimentSpec",
    "apply_overrides",
    "convert_tf1",
    "default_spec",
    "load_spec",
    "load_task_spec",
    "spec_to_yaml",
]
