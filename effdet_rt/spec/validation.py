"""Validate raw spec data into an ExperimentSpec, turning pydantic errors into one-line SpecErrors."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from effdet_rt.errors import SpecError
from effdet_rt.spec.schema import ExperimentSpec


def validate_spec(data: Mapping[str, Any], source: str, root: type[BaseModel] = ExperimentSpec) -> Any:
    """Build a ``root`` spec (the detector's by default) from nested dicts; ``source`` prefixes errors."""
    try:
        return root.model_validate(dict(data))
    except ValidationError as exc:
        problems = [f"{source}: {describe_error(err, root)}" for err in exc.errors(include_url=False)]
        raise SpecError("; ".join(problems)) from None


def describe_error(err: Mapping[str, Any], root: type[BaseModel] = ExperimentSpec) -> str:
    loc = tuple(err["loc"])
    dotted = dotted_path(loc)
    if err["type"] == "extra_forbidden":
        return _unknown_field_message(loc, root)
    field = field_at(loc, root)
    if err["type"] == "value_error" and field is None:
        section = dotted or "the spec"
        return f"{section} is not valid: {err['ctx']['error']}"
    return f"{dotted} = {show_value(err.get('input'))} is not allowed: {_allowed(err, field)}"


def dotted_path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def section_model(loc: Sequence[str | int], root: type[BaseModel] = ExperimentSpec) -> type[BaseModel] | None:
    """The pydantic model of the section at ``loc`` (() is the whole spec), or None if ``loc`` is not a section."""
    model: type[BaseModel] = root
    for part in loc:
        info = _lookup(model, part)
        if info is None or not _is_section(info.annotation):
            return None
        model = info.annotation
    return model


def field_at(loc: Sequence[str | int], root: type[BaseModel] = ExperimentSpec) -> FieldInfo | None:
    """The FieldInfo of the leaf field at ``loc`` (list indices are skipped), or None for a section."""
    names = [part for part in loc if isinstance(part, str)]
    if not names:
        return None
    parent = section_model(names[:-1], root)
    if parent is None:
        return None
    info = _lookup(parent, names[-1])
    if info is None or _is_section(info.annotation):
        return None
    return info


def canonical_path(path: Sequence[str], root: type[BaseModel] = ExperimentSpec) -> list[str]:
    """Replace aliases (model.model_name) by field names (model.name); unknown parts are kept as given."""
    result: list[str] = []
    for part in path:
        model = section_model(result, root)
        info = _lookup(model, part) if model is not None else None
        name = next((n for n, i in model.model_fields.items() if i is info), part) if info is not None else part
        result.append(name)
    return result


def _lookup(model: type[BaseModel], name: str | int) -> FieldInfo | None:
    if not isinstance(name, str):
        return None
    if name in model.model_fields:
        return model.model_fields[name]
    for info in model.model_fields.values():
        alias = info.validation_alias
        if alias is not None and name in getattr(alias, "choices", [alias]):
            return info
    return None


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unknown_field_message(loc: tuple, root: type[BaseModel] = ExperimentSpec) -> str:
    section_loc, key = loc[:-1], str(loc[-1])
    model = section_model(section_loc, root)
    where = dotted_path(section_loc) or "the spec"
    message = f"{dotted_path(loc)} is not a field of {where}"
    if model is None:
        return message
    suggestion = suggest_field(model, key)
    if suggestion:
        return f"{message} (did you mean {suggestion}?)"
    return f"{message} (its fields: {', '.join(model.model_fields)})"


def suggest_field(model: type[BaseModel], key: str) -> str | None:
    """The closest field name in ``model``, else the closest 'subsection.field' one level down."""
    direct = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    if direct:
        return direct[0]
    nested = {}
    for name, info in model.model_fields.items():
        if _is_section(info.annotation):
            for leaf in info.annotation.model_fields:
                nested.setdefault(leaf, f"{name}.{leaf}")
    close = difflib.get_close_matches(key, list(nested), n=1, cutoff=0.6)
    return nested[close[0]] if close else None


_SIMPLE_REASONS = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be a whole number (an integer)",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string (quote it in YAML)",
    "list_type": "must be a list, e.g. [a, b]",
    "model_type": "must be a section of fields, not a single value",
    "model_attributes_type": "must be a section of fields, not a single value",
    "dict_type": "must be a section of fields, not a single value",
}


def _allowed(err: Mapping[str, Any], field: FieldInfo | None) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind in _SIMPLE_REASONS:
        return _SIMPLE_REASONS[kind]
    is_int = field is not None and _base_type(field.annotation) is int
    noun = "integer" if is_int else "number"
    if kind == "greater_than":
        return f"must be a positive {noun}" if ctx["gt"] == 0 else f"must be a {noun} > {ctx['gt']}"
    if kind == "greater_than_equal":
        return f"must be a non-negative {noun}" if ctx["ge"] == 0 else f"must be a {noun} >= {ctx['ge']}"
    if kind == "less_than":
        return f"must be a {noun} < {ctx['lt']}"
    if kind == "less_than_equal":
        return f"must be a {noun} <= {ctx['le']}"
    if kind == "literal_error":
        return "must be one of " + _literal_options(field, ctx)
    if kind == "value_error":
        return str(ctx["error"])
    return err["msg"][0].lower() + err["msg"][1:]


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is list:
        return _base_type(typing.get_args(annotation)[0])
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    return annotation


def _literal_options(field: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        return ", ".join(repr(option) for option in typing.get_args(field.annotation))
    return str(ctx.get("expected", ""))
