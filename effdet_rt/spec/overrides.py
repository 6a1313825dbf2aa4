"""``a.b=value`` overrides: the right-hand side is typed by the schema field it lands on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from effdet_rt.errors import SpecError
from effdet_rt.spec.schema import ExperimentSpec
from effdet_rt.spec.validation import canonical_path, field_at, validate_spec

OVERRIDE_SOURCE = "override"
OPTION_SOURCE = "command-line option"


def apply_overrides(spec: ExperimentSpec, overrides: Sequence[str]) -> ExperimentSpec:
    """Return a new spec with each ``dotted.path=value`` applied in order, validated as a whole."""
    if not overrides:
        return spec
    data = spec.model_dump()
    apply_to_data(data, overrides)
    return validate_spec(data, OVERRIDE_SOURCE)


def apply_option_values(spec: BaseModel, values: Mapping[str, Any], root: type[BaseModel] = ExperimentSpec) -> Any:
    """Return a new ``root`` spec with already-typed values (``{"inference.batch_size": 8}``) set, validated as a
    whole.

    This is how command-line options reach the spec: each option names the field it sets."""
    if not values:
        return spec
    data = spec.model_dump()
    for dotted, value in values.items():
        set_dotted(data, canonical_path(dotted.split("."), root), value)
    return validate_spec(data, OPTION_SOURCE, root)


def apply_to_data(data: dict[str, Any], overrides: Sequence[str], root: type[BaseModel] = ExperimentSpec) -> None:
    """Set each ``dotted.path=value`` in raw spec data, the value typed by the field of ``root`` it lands on."""
    for text in overrides:
        path, raw = split_override(text, root)
        set_dotted(data, path, parse_value(path, raw, root))


def split_override(text: str, root: type[BaseModel] = ExperimentSpec) -> tuple[list[str], str]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(
            f"{OVERRIDE_SOURCE}: {text!r} is not an override; write it as section.field=value "
            "(e.g. train.num_epochs=5)"
        )
    parts = key.split(".")
    if any(not part for part in parts):
        raise SpecError(f"{OVERRIDE_SOURCE}: {key!r} is not a dotted field name like train.batch_size")
    return canonical_path(parts, root), raw.strip()


def parse_value(path: Sequence[str], raw: str, root: type[BaseModel] = ExperimentSpec) -> Any:
    """Strings stay as typed (so ``encryption_key=123`` is '123'); everything else is read as YAML."""
    field = field_at(path, root)
    if field is not None and field.annotation in (str, str | None):
        return _unquote(raw)
    try:
        return yaml.safe_load(raw) if raw else None
    except yaml.YAMLError as exc:
        reason = " ".join((getattr(exc, "problem", None) or str(exc)).split())  # PyYAML's text spans lines
        raise SpecError(
            f"{OVERRIDE_SOURCE}: cannot read the value of {'.'.join(path)} ({raw!r}): {reason}; "
            "use YAML syntax such as 5, 0.1, true or [a, b]"
        ) from None


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def set_dotted(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            if part in node:
                raise SpecError(f"{OVERRIDE_SOURCE}: {where} is a value, not a section; cannot set {'.'.join(path)}")
            # Unknown section: let validation name it (with a suggestion).
            child = node[part] = {}
        node = child
    node[path[-1]] = value
