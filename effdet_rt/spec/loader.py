"""Read a spec file (YAML, or a legacy TF1 prototxt), apply overrides, and write a spec back as YAML."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from effdet_rt.errors import SpecError
from effdet_rt.spec.overrides import apply_option_values, apply_overrides
from effdet_rt.spec.schema import ExperimentSpec
from effdet_rt.spec.text import read_spec_text
from effdet_rt.spec.validation import validate_spec
from effdet_rt.tasks import default_task, parts

YAML_SUFFIXES = {".yaml", ".yml"}
TF1_SUFFIXES = {".txt", ".prototxt", ".pbtxt"}
# A protobuf-text message opens with `name {` on its own line (YAML would need `name:`).
_PROTO_BLOCK = re.compile(r"^\s*[A-Za-z_]\w*\s*\{", re.MULTILINE)
SPEC_PART = "spec"  # the kind under which a task registers its SpecShape


def default_spec() -> ExperimentSpec:
    return ExperimentSpec()


def load_spec(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Load ``path`` (None gives the defaults), then apply ``overrides`` such as 'train.num_epochs=5'."""
    spec = default_spec() if path is None else _load_file(Path(path))[0]
    return apply_overrides(spec, list(overrides or ()))


def load_task_spec(
    spec_path: str | Path | None,
    overrides: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentSpec:
    """What task commands call: the ``-e`` file, then the trailing ``a.b=value`` overrides, then the values of the
    command-line options that set spec fields (``options``: {dotted path: value}), validated once.

    A TF1 prototxt given here is converted on the fly; ``log`` hears which of its fields have no TF2 equivalent."""
    if spec_path is None:
        spec, dropped = default_spec(), []
    else:
        spec, dropped = _load_file(Path(spec_path))
    if dropped and log is not None:
        log(f"{spec_path} is a TAO TF1 spec: converted to the TF2 fields; {len(dropped)} field(s) have no TF2 "
            f"equivalent and are ignored: {', '.join(dropped)} (`effdet-rt spec convert` writes the YAML once)")
    spec = apply_overrides(spec, list(overrides or ()))
    return apply_option_values(spec, options or {})


class _SpecDumper(yaml.SafeDumper):
    """Block style for sections, one-line flow style for lists of plain values (``gpu_ids: [0]``)."""


def _represent_list(dumper: _SpecDumper, items: list) -> yaml.Node:
    flat = all(not isinstance(item, dict | list) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_SpecDumper.add_representer(list, _represent_list)


def spec_to_yaml(spec: BaseModel) -> str:
    """The complete spec as YAML that load_spec reads back to an equal spec (unset optional fields left out)."""
    return yaml.dump(spec.model_dump(exclude_none=True), Dumper=_SpecDumper, sort_keys=False, default_flow_style=False, width=110)




def looks_like_tf1(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return False
    return suffix in TF1_SUFFIXES or bool(_PROTO_BLOCK.search(text))


def _load_file(path: Path) -> tuple[ExperimentSpec, list[str]]:
    """The spec in ``path`` and the TF1 fields that were dropped converting it (none for YAML)."""
    text = read_spec_text(path)
    if looks_like_tf1(path, text):
        from effdet_rt.spec.tf1 import convert_tf1_text

        return convert_tf1_text(text, str(path))
    data = parse_yaml(text, str(path))
    claim = claiming_task(data)
    if claim is not None:
        raise SpecError(f"{path}: {claim[1].refusal}")
    return validate_spec(data, str(path)), []


@dataclass(frozen=True)
class SpecShape:
    """How a task tells its spec file apart and prints it (registered from the task's package as its "spec" part,
    `effdet_rt.tasks`). The spec this module validates (`ExperimentSpec`, and the TF1 prototxt converted to it) is
    the default task's."""

    # the file's parsed YAML is this task's spec; None for the default task, whose spec is any no other task claims
    recognizes: Callable[[Mapping[str, Any]], bool] | None
    refusal: str  # what the default task's commands say when given such a file: which command runs it
    default_yaml: Callable[[], str]  # `spec default --task`: every field with its default
    # `spec show`: the file after the overrides; (path, overrides, log for notices such as a TF1 file's dropped fields)
    resolved_yaml: Callable[[Path | None, Sequence[str], Callable[[str], None]], str]


def task_names() -> list[str]:
    """Every task a spec can be written for, the default task first."""
    return list(parts(SPEC_PART))


def claiming_task(data: Mapping[str, Any]) -> tuple[str, SpecShape] | None:
    """The task (name, shape) whose spec ``data`` is, when that is not the default task's."""
    return next(((task, shape) for task, shape in parts(SPEC_PART).items()
                 if shape.recognizes is not None and shape.recognizes(data)), None)


def spec_file_task(path: str | Path) -> str:
    """The name of the task whose spec the file is, as its sections say (a TF1 prototxt is the default task's)."""
    source = Path(path)
    text = read_spec_text(source)
    if looks_like_tf1(source, text):
        return default_task()
    claim = claiming_task(parse_yaml(text, str(source)))
    return claim[0] if claim is not None else default_task()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first at line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(exc.problem).split())
        raise SpecError(f"{source}: YAML syntax error{where}: {problem}; fix the indentation or quoting there") from None
    except yaml.YAMLError as exc:  # e.g. a control character: PyYAML's message spans lines, the error is one
        raise SpecError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a spec must be a YAML mapping of sections (dataset:, model:, train: ...), "
            f"not a {type(data).__name__}"
        )
    return data
