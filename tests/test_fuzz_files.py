"""Fuzzing the readers of user files not covered by test_fuzz_inputs.py: VOC XML, label maps, TFRecord framing,
`.edrt` checkpoints and ONNX metadata. 1,000 generated or damaged files each (hypothesis, derandomized: the same
examples on every run); each reader returns a valid result or raises one UserError naming the file, never another
exception (which the CLI would print as a traceback); a damaged checkpoint never loads as different weights; the CLI
prints one `error:` line, exits 2 and writes nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from effdet_rt.errors import UserError
from tests.support.fake_tensorrt import tiny_onnx
from tests.support.fuzz import EXAMPLES, damaged

pytestmark = pytest.mark.slow  # 1,000-example properties

WORKDIR = Path(tempfile.mkdtemp(prefix="effdet-fuzz-files-"))

texts = st.one_of(st.text(max_size=8), st.sampled_from(["", " ", "12", "-3", "1e9", "nan", "inf", "0x1f", "4.5",
                                                       "<", "&amp;", "]]>", "\x00"]))


# ---------------------------------------------------------------- VOC XML


@st.composite
def voc_xml(draw) -> str:
    def element(tag: str, value: str) -> str:
        from xml.sax.saxutils import escape

        return f"<{tag}>{escape(value)}</{tag}>" if draw(st.booleans()) or tag in ("name",) else ""

    objects = []
    for _ in range(draw(st.integers(0, 3))):
        box = "".join(element(k, draw(texts)) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(f"<object>{element('name', draw(texts))}"
                       f"{'<bndbox>' + box + '</bndbox>' if draw(st.booleans()) else ''}</object>")
    size = f"<size>{element('width', draw(texts))}{element('height', draw(texts))}</size>"
    text = f"<annotation>{element('filename', draw(texts))}{size if draw(st.booleans()) else ''}{''.join(objects)}</annotation>"
    return text[:draw(st.integers(0, len(text)))] if draw(st.integers(0, 9)) == 0 else text  # sometimes cut short


@EXAMPLES
@given(voc_xml())
def test_voc_xml_parses_or_names_the_file(text):
    from effdet_rt.data.voc import parse_voc_xml

    path = WORKDIR / "fuzz.xml"
    path.write_text(text, encoding="utf-8")
    try:
        image = parse_voc_xml(path)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert image.width > 0 and image.height > 0
    for obj in image.objects:
        assert obj.name and all(isinstance(v, float) for v in (obj.xmin, obj.ymin, obj.xmax, obj.ymax))


# ---------------------------------------------------------------- label maps

label_lines = st.one_of(
    st.tuples(st.one_of(st.integers(-3, 300), texts), st.one_of(texts, st.integers(), st.none())).map(
        lambda kv: f"{kv[0]}: {kv[1]}"),
    texts, st.sampled_from(["- RBC", "{1: a, 1: b}", "1: [a, b]", "? x", "1: {a: 1}", "'1': RBC", "1.5: x"]))


@EXAMPLES
@given(st.lists(label_lines, max_size=5), st.sampled_from([".yaml", ".yml", ".txt"]), st.booleans())
def test_label_maps_load_or_name_the_file(lines, suffix, binary):
    from effdet_rt.data.labels import load_label_map

    path = WORKDIR / f"labels{suffix}"
    path.write_bytes(b"\xff\xfe\x00" if binary and not lines else "\n".join(lines).encode("utf-8", "surrogatepass"))
    try:
        mapping = load_label_map(path)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert mapping and all(isinstance(k, int) and k > 0 for k in mapping)
    assert all(isinstance(v, str) and v.strip() for v in mapping.values())


# ---------------------------------------------------------------- TFRecord framing


def _frames() -> bytes:
    from effdet_rt.data.tfrecord import encode_example, frame_record

    return b"".join(frame_record(encode_example({"image/height": [i], "image/source_id": [b"x" * i]}))
                    for i in range(1, 4))


FRAMES = _frames()


def _frame_lengths(data: bytes) -> bool:
    """Whether ``data`` is whole frames by length alone (the CRCs aside)."""
    import struct

    offset = 0
    while offset < len(data):
        if len(data) - offset < 12:
            return False
        offset += 16 + struct.unpack("<Q", data[offset:offset + 8])[0]
    return offset == len(data)


@EXAMPLES
@given(damaged(FRAMES))
def test_damaged_tfrecord_frames_are_named(data):
    from effdet_rt.data.tfrecord import frame_problem

    path = WORKDIR / "fuzz.tfrecord"
    path.write_bytes(data)
    problem = frame_problem(path)
    if data == FRAMES or (not data):
        assert problem is None
    elif FRAMES.startswith(data) and _frame_lengths(data):
        assert problem is None  # cut exactly between records: fewer records, all whole
    else:
        assert problem is not None and problem.split(":")[0] in ("truncated", "corrupt"), problem


# ---------------------------------------------------------------- .edrt checkpoints

KEY = "fuzz-key"


def _checkpoint() -> tuple[Path, dict]:
    from effdet_rt.checkpoint import save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost

    weights = {"conv/kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "conv/bias": np.ones(4, np.float32)}
    path = WORKDIR / "original.edrt"
    save_checkpoint(path, weights, key=KEY, spec_yaml="model: {}\n", metadata={"epoch": 1}, cost=ScryptCost(10, 1, 1))
    return path, weights


ORIGINAL, WEIGHTS = _checkpoint()
# bytes 10-12 hold scrypt's cost (log2 N, r, p), read before anything can be authenticated: damage there is bounded
# by the header check (log2 N <= 22) but may cost gigabytes of scrypt memory, so the fuzzing leaves them alone
COST_BYTES = range(10, 13)


@EXAMPLES
@given(damaged(ORIGINAL.read_bytes(), COST_BYTES))
def test_damaged_checkpoints_never_load_other_weights(data):
    from effdet_rt.checkpoint import load_checkpoint

    path = WORKDIR / "fuzz.edrt"
    path.write_bytes(data)
    try:
        checkpoint = load_checkpoint(path, KEY)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert data == ORIGINAL.read_bytes()  # only the undamaged file opens (AES-GCM authenticates every byte)
    assert all(np.array_equal(checkpoint.weights[k], WEIGHTS[k]) for k in WEIGHTS)


# ---------------------------------------------------------------- ONNX metadata

BASE_ONNX = Path(tiny_onnx(WORKDIR / "base.onnx", batch="N"))


@EXAMPLES
@given(st.dictionaries(st.one_of(st.sampled_from(["task", "classes", "image_format", "input_size", "num_classes"]),
                                 st.text(max_size=6)),
                       st.one_of(texts, st.sampled_from(['"classification"', "[1, 2]", '{"a": 1}', "null", "{",
                                                         '"detection"', "[[", "1e999"])), max_size=4))
def test_onnx_metadata_is_read_or_one_error_line(capsys, values):
    import onnx

    from effdet_rt.cli.main import run

    path = WORKDIR / "fuzz.onnx"
    model = onnx.load_from_string(BASE_ONNX.read_bytes())
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"effdet_rt.{key}", value
    onnx.save(model, str(path))
    capsys.readouterr()
    code = run(["engine-info", str(path), "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0], err
