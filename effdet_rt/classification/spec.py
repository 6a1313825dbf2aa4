"""Load a classification spec (YAML + ``a.b=value`` overrides) and write one back as YAML."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from effdet_rt.classification.schema import ClassificationSpec
from effdet_rt.spec.loader import parse_yaml, read_spec_text, spec_to_yaml
from effdet_rt.spec.overrides import OVERRIDE_SOURCE, apply_to_data
from effdet_rt.spec.validation import validate_spec


def default_classification_spec() -> ClassificationSpec:
    return ClassificationSpec()


def load_classification_spec(path: str | Path | None, overrides: Sequence[str] = ()) -> ClassificationSpec:
    """The spec in ``path`` (None: the defaults) with ``overrides`` applied to its raw fields, then validated.

    Overrides land on the fields as written (not on the filled-in defaults), so switching
    ``train.optim_config.optimizer`` from the command line does not drag the old optimizer's fields along.
    """
    data = {} if path is None else parse_yaml(read_spec_text(Path(path)), str(path))
    source = str(path) if path is not None else "the default spec"
    validate_spec(data, source, ClassificationSpec)  # errors in the file name the file
    if not overrides:
        return validate_spec(data, source, ClassificationSpec)
    apply_to_data(data, list(overrides), ClassificationSpec)
    return validate_spec(data, OVERRIDE_SOURCE, ClassificationSpec)


def classification_spec_to_yaml(spec: ClassificationSpec) -> str:
    """Every field that takes effect, as YAML that `load_classification_spec` reads back to an equal spec."""
    return spec_to_yaml(spec)
