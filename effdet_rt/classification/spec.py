"""Load a classification spec (YAML + ``a.b=value`` overrides) and write one back as YAML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from effdet_rt.classification.schema import ClassificationSpec
from effdet_rt.spec.loader import parse_yaml, spec_to_yaml
from effdet_rt.spec.overrides import OVERRIDE_SOURCE, apply_option_values, apply_to_data
from effdet_rt.spec.text import read_spec_text
from effdet_rt.spec.validation import validate_spec


def default_classification_spec() -> ClassificationSpec:
    return ClassificationSpec()


def load_classification_spec(path: str | Path | None, overrides: Sequence[str] = (),
                             options: Mapping[str, Any] | None = None) -> ClassificationSpec:
    """The spec in ``path`` (None: the defaults) with ``overrides`` applied to its raw fields, then validated, then
    the values of command-line options that set spec fields (``options``: {dotted path: value}).

    Overrides land on the fields as written (not on the filled-in defaults), so switching
    ``train.optim_config.optimizer`` from the command line does not drag the old optimizer's fields along.
    """
    data = {} if path is None else parse_yaml(read_spec_text(Path(path)), str(path))
    source = str(path) if path is not None else "the default spec"
    spec = validate_spec(data, source, ClassificationSpec)  # errors in the file name the file
    if overrides:
        apply_to_data(data, list(overrides), ClassificationSpec)
        spec = validate_spec(data, OVERRIDE_SOURCE, ClassificationSpec)
    return apply_option_values(spec, options or {}, ClassificationSpec)


def classification_spec_to_yaml(spec: ClassificationSpec) -> str:
    """Every field that takes effect, as YAML that `load_classification_spec` reads back to an equal spec."""
    return spec_to_yaml(spec)
