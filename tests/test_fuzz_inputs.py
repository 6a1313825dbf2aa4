"""Property-based tests (hypothesis): whatever a user writes into a spec, an override, a TF1 prototxt, a COCO json or
a KITTI label file, the loaders return a valid result or raise one UserError that names the field; never another
exception (which the CLI would print as a traceback). No TensorFlow is imported here."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from effdet_rt.errors import UserError
from effdet_rt.spec.loader import load_spec
from effdet_rt.spec.overrides import apply_overrides
from effdet_rt.spec.schema import ExperimentSpec
from effdet_rt.spec.tf1 import TF1_MESSAGES, TF1_SECTIONS, convert_tf1_text

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

EXAMPLES = settings(max_examples=1000, deadline=None, derandomize=True,  # the same examples on every run (CI)
                    suppress_health_check=[HealthCheck.too_slow])
WORKDIR = Path(tempfile.mkdtemp(prefix="effdet-fuzz-"))


def leaf_paths(model: type[BaseModel] = ExperimentSpec, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf field of the spec schema as a dotted path."""
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(leaf_paths(annotation, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


FIELDS = leaf_paths()
SECTIONS = sorted({p[0] for p in FIELDS if len(p) > 1})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["", "efficientdet-d0", "cosine", "soft_anneal", "true", "1e-3", "-1",
                                           "256", "0x10", "[1, 2]", "{a: 1}", "~", "null", "nan"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
real_or_made_up_path = st.one_of(
    st.sampled_from(FIELDS),
    st.tuples(st.sampled_from(SECTIONS), identifiers),  # an unknown field in a real section
    st.lists(identifiers, min_size=1, max_size=3).map(tuple),
)


def set_path(data: dict, path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:  # absent, or set to null by an earlier entry: this entry makes it a section
            child = node[part] = {}
        node = child if isinstance(child, dict) else {}  # a value stays as it is
    node[path[-1]] = value


def one_line_user_error(error: UserError) -> str:
    message = str(error)
    assert message and "Traceback" not in message and "\n" not in message, message
    return message


def named(message: str, path: tuple[str, ...]) -> bool:
    """The message names the field, or the first part of its path that does not exist."""
    return any(".".join(path[: depth + 1]) in message for depth in range(len(path)))


@EXAMPLES
@given(st.lists(st.tuples(real_or_made_up_path, values), min_size=1, max_size=4))
def test_generated_yaml_specs_load_or_name_the_field(entries):
    data: dict = {}
    for path, value in entries:
        set_path(data, path, value)
    path = WORKDIR / "spec.yaml"
    try:
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    try:
        spec = load_spec(path)
    except UserError as exc:
        message = one_line_user_error(exc)
        assert str(path) in message
        assert any(named(message, p) for p, _ in entries), message
        return
    assert isinstance(spec, ExperimentSpec)


@EXAMPLES
@given(st.text(max_size=200))
def test_arbitrary_yaml_text_loads_or_is_one_spec_error(text):
    path = WORKDIR / "text.yaml"
    try:
        path.write_text(text, encoding="utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be written as UTF-8
        return
    try:
        assert isinstance(load_spec(path), ExperimentSpec)
    except UserError as exc:
        assert str(path) in one_line_user_error(exc)


override_values = st.one_of(
    st.text(max_size=20),
    values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.sampled_from(["5", "0.1", "true", "[a, b]", "{", "'quoted'", "\"x", "[", "- a", ": :", "*alias", "!!python/x"]),
)


@EXAMPLES
@given(st.lists(st.tuples(real_or_made_up_path.map(".".join), override_values), min_size=1, max_size=3),
       st.lists(st.text(max_size=15), max_size=1))
def test_generated_overrides_apply_or_name_the_field(pairs, raw_texts):
    overrides = [f"{path}={value}" for path, value in pairs] + raw_texts
    try:
        spec = load_spec(None, overrides)
    except UserError as exc:
        message = one_line_user_error(exc)
        fields = [tuple(path.split(".")) for path, _ in pairs]
        assert any(named(message, f) for f in fields) or any(repr(t) in message or t.partition("=")[0].strip() in message
                                                              for t in raw_texts), message
        return
    assert isinstance(spec, ExperimentSpec)
    assert apply_overrides(spec, []) is spec


def tf1_value(kind: str) -> st.SearchStrategy[str]:
    good = {
        "uint32": st.integers(0, 2**32 - 1).map(str),
        "double": st.floats(allow_nan=False, width=64).map(repr),
        "bool": st.sampled_from(["true", "false"]),
        "string": st.text(max_size=12).map(json.dumps),
    }[kind]
    bad = st.one_of(st.integers(-10**20, 10**20).map(str), st.floats().map(repr), st.text(max_size=8),
                    st.text(max_size=8).map(json.dumps), st.sampled_from(["true", "[1]", "{", "\"640x512\"",
                                                                            "\"1,2\"", "\"(1.0, 2.0)\""]))
    return st.one_of(good, good, bad)


@st.composite
def tf1_specs(draw) -> str:
    lines = []
    for section, message in draw(st.lists(st.sampled_from(TF1_SECTIONS), max_size=4)):
        fields = draw(st.lists(st.sampled_from(TF1_MESSAGES[message]), max_size=5))
        body = [f"  {name}: {draw(tf1_value(kind))}" for name, kind in fields]
        if draw(st.booleans()):
            unknown_value = draw(st.sampled_from(["1", "true", '"x"']))
            body.append(f"  {draw(identifiers)}: {unknown_value}")
        lines += [f"{section} {{", *body, "}"]
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.text(max_size=20)))
    return "\n".join(lines)


@EXAMPLES
@given(tf1_specs())
def test_generated_tf1_specs_convert_or_name_the_field(text):
    try:
        spec, unmapped = convert_tf1_text(text, "legacy.txt")
    except UserError as exc:
        assert one_line_user_error(exc).startswith("legacy.txt: ")
        return
    assert isinstance(spec, ExperimentSpec) and all(isinstance(name, str) for name in unmapped)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def coco_like(draw) -> Any:
    """A COCO detection dict with some of its entries and fields replaced by arbitrary JSON values."""
    def maybe(value):
        return draw(json_values) if draw(st.integers(0, 11)) == 0 else value

    images = [{"id": maybe(i + 1), "file_name": maybe(f"{i}.jpg"), "width": maybe(640), "height": maybe(480)}
              for i in range(draw(st.integers(0, 3)))]
    categories = [{"id": maybe(c + 1), "name": maybe(f"class{c}")} for c in range(draw(st.integers(0, 3)))]
    annotations = [{"id": maybe(a + 1), "image_id": maybe(draw(st.integers(0, 4))),
                    "category_id": maybe(draw(st.integers(0, 4))),
                    "bbox": maybe([draw(st.floats(-10, 700)) for _ in range(draw(st.integers(3, 5)))]),
                    "area": maybe(100.0), "iscrowd": maybe(draw(st.integers(0, 1)))}
                   for a in range(draw(st.integers(0, 4)))]
    data = {"images": maybe(images), "annotations": maybe(annotations), "categories": maybe(categories)}
    if draw(st.integers(0, 9)) == 0:
        del data[draw(st.sampled_from(sorted(data)))]
    return maybe(data)


@EXAMPLES
@given(coco_like())
def test_coco_json_is_checked_or_one_data_error(data):
    from effdet_rt.data.coco import load_coco, load_ground_truth

    path = WORKDIR / "ann.json"
    path.write_text(json.dumps(data))
    try:  # dataset-convert's reader
        parsed = load_coco(path)
    except UserError as exc:
        assert one_line_user_error(exc).startswith(f"{path}: ")
    else:
        assert len(parsed.images) == len(data["images"])
    try:  # evaluate's reader
        checked, _ = load_ground_truth(path)
    except UserError as exc:
        assert one_line_user_error(exc).startswith(f"{path}: ")
    else:
        assert len(checked["annotations"]) == len(data["annotations"])


kitti_fields = st.one_of(st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,3})?", fullmatch=True),
                         st.sampled_from(["Car", "RBC", "nan", "inf", "-0", "1e5", "x", "0.5"]),
                         st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp")),
                                 min_size=1, max_size=6))


@EXAMPLES
@given(st.lists(st.one_of(st.lists(kitti_fields, min_size=14, max_size=17).map(" ".join), st.text(max_size=40)),
                max_size=4))
def test_kitti_label_lines_parse_or_name_file_and_line(lines):
    from tests.support.kitti import parse_kitti_file

    path = WORKDIR / "000001.txt"
    try:
        path.write_text("\n".join(lines), encoding="utf-8")
    except UnicodeEncodeError:
        return
    try:
        parsed = parse_kitti_file(path)
    except UserError as exc:
        assert one_line_user_error(exc).startswith(f"{path}:")
        return
    for name, box, score in parsed:
        assert isinstance(name, str) and len(box) == 4 and (score is None or isinstance(score, float))
