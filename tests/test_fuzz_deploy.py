"""Fuzzing the readers of deployment files a user hands back to effdet-rt: `.tflite` models (engine-info, engine
load: the flatbuffer, its effdet_rt metadata, LiteRT's interpreter) and the Triton model repository
`effdet-rt triton` wrote (the effdet_rt.json records `deepstream-config --triton` reads; effdet-rt does not parse
config.pbtxt itself, Triton does). 1,000 damaged or generated files per reader (hypothesis, derandomized); each reader
returns a valid result or raises one UserError naming the file, never another exception; the CLI prints one
`error:` line, exits 2 and writes nothing."""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effdet_rt.cli.main import run
from effdet_rt.errors import UserError
from tests.support.fake_tensorrt import tiny_detector_onnx
from tests.support.fuzz import EXAMPLES, damaged

pytestmark = pytest.mark.slow  # 1,000-example properties

WORKDIR = Path(tempfile.mkdtemp(prefix="effdet-fuzz-deploy-"))
CLI_SAMPLE = 20  # damaged files that also go through the CLI (each a whole command)

# ---------------------------------------------------------------- .tflite

TFLITE_METADATA = {"task": "detection", "input_size": [64, 64], "num_classes": 2, "nms": "none", "precision": "fp32",
                   "anchors": {"min_level": 3, "max_level": 3, "num_scales": 1, "aspect_ratios": [[1.0, 1.0]],
                               "anchor_scale": 4.0}}


def tiny_raw_heads_tflite(metadata: dict) -> bytes:
    """A raw-heads detector .tflite as `effdet-rt export --nms none` lays it out (image input, class_logits and
    box_codes outputs in the serving signature, effdet_rt metadata), converted by our own exporter's functions from
    a one-pooling tf.function: what the readers see of an EfficientDet, at a millisecond per open."""
    import tensorflow as tf

    from effdet_rt.engines.build.litert import convert, with_metadata

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32, name="images")])
    def serve(images):
        cells = tf.reshape(tf.nn.avg_pool2d(images, 8, 8, "VALID"), [1, 64, 3])  # one anchor per 8x8 cell
        return {"class_logits": cells[..., :2] * 0.01, "box_codes": tf.concat([cells, cells[..., :1]], -1) * 1e-3}

    module.serve = serve
    data = convert(module, serve.get_concrete_function(), "fp32", "float32", False, None, "tiny")
    return with_metadata(data, metadata, None)


class Original(bytes):
    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing example: not 2,700 bytes of it
        return f"<the tiny .tflite, {len(self)} bytes>"


@pytest.fixture(scope="module")
def tflite() -> bytes:
    data = Original(tiny_raw_heads_tflite(TFLITE_METADATA))
    path = WORKDIR / "original.tflite"
    path.write_bytes(data)
    from effdet_rt.engines import load

    assert load(path).mode == "raw"  # the undamaged file opens as the detector it is
    return data


def metadata_range(data: bytes) -> range:
    start = data.index(b'{"anchors"')
    return range(start, data.index(b"}", data.index(b'"task"')) + 1)


def flipped_within(original: bytes, where: range):
    """``original`` with one byte inside ``where`` changed: the flatbuffer stays whole, the metadata JSON is not."""
    return st.tuples(st.sampled_from(where), st.integers(1, 255)).map(
        lambda p: original[:p[0]] + bytes([original[p[0]] ^ p[1]]) + original[p[0] + 1:])


def check_opens_or_names(path: Path) -> str:
    """engine-info's and the engine loader's readers on ``path``, and one inference: a working detector, or a
    UserError naming the file."""
    from effdet_rt.engines import load
    from effdet_rt.engines.registry import describe_file

    try:
        info = describe_file(path)
        engine = load(path)
        detections = engine.run(np.full((1, *engine.input_size, 3), 127.0, np.float32))
    except UserError as exc:
        assert str(path) in str(exc), exc
        return "error"
    assert info["task"] == "detection" and info["tensors"][0]["io"] == "input"
    assert 0 <= int(detections.num_detections[0]) <= detections.scores.shape[1]
    return "opened"


@functools.cache
def tflite_damage(original: bytes):
    return st.one_of(damaged(original), damaged(original), flipped_within(original, metadata_range(original)))


@EXAMPLES
@given(st.data())
def test_damaged_tflite_opens_or_names_the_file(tflite, data):
    """Bytes flipped, cut or inserted anywhere; or one byte of the metadata JSON changed (a third of the examples:
    whole-file damage rarely reaches those 250 bytes)."""
    damaged_bytes = data.draw(tflite_damage(tflite))
    path = WORKDIR / "fuzz.tflite"
    path.write_bytes(damaged_bytes)
    check_opens_or_names(path)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                                     st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=6)
METADATA_PATHS = [("task",), ("input_size",), ("nms",), ("precision",), ("score_threshold",), ("max_detections",),
                  ("anchors",), *(("anchors", key) for key in TFLITE_METADATA["anchors"])]


@settings(EXAMPLES, max_examples=150)  # on top of the 1,000 above, which reach the metadata bytes too
@given(st.dictionaries(st.sampled_from(METADATA_PATHS), st.one_of(json_values, st.sampled_from(
    [[64, 64], [10**9, 64], [0, 64], [[1.0, 1.0]], [[0.0, 1.0]], 7, 2, -1, 13, "raw", float("nan")])), max_size=3))
def test_tflite_metadata_values_open_or_name_the_file(tflite_with_metadata, values):
    """The metadata written as an export writes it, with any value in its fields (anchors, input size, NMS)."""
    metadata = json.loads(json.dumps(TFLITE_METADATA))
    for field_path, value in values.items():
        node = metadata
        for part in field_path[:-1]:
            node = node[part] if isinstance(node.get(part), dict) else node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[field_path[-1]] = value
    path = WORKDIR / "fuzz-metadata.tflite"
    path.write_bytes(tflite_with_metadata(metadata))
    check_opens_or_names(path)


@pytest.fixture(scope="module")
def tflite_with_metadata(tflite):
    """Metadata -> the tiny file with that metadata instead of its own (written as the exporter writes it)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from effdet_rt.engines.build.litert import with_metadata
    from effdet_rt.engines.runtime.litert import METADATA_NAME

    bare = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    (entry,) = [m for m in bare.metadata if m.name.decode() == METADATA_NAME]
    assert entry.buffer == len(bare.buffers) - 1  # with_metadata appended it: dropping it renumbers nothing
    bare.buffers.pop()
    bare.metadata.remove(entry)
    bare_bytes = bytes(flatbuffer_utils.convert_object_to_bytearray(bare))
    return lambda metadata: with_metadata(bare_bytes, metadata, None)


def damaged_samples(original: bytes, count: int, seed: int = 0) -> list[bytes]:
    """``count`` damaged copies (a byte flipped, the file cut, bytes inserted), the same on every run."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        at = int(rng.integers(len(original)))
        if index % 3 == 0:
            samples.append(original[:at] + bytes([original[at] ^ int(rng.integers(1, 256))]) + original[at + 1:])
        elif index % 3 == 1:
            samples.append(original[:at])
        else:
            samples.append(original[:at] + rng.bytes(int(rng.integers(1, 9))) + original[at:])
    return samples


def cli_outcome(args: list[str], capsys, path: Path) -> int:
    """Runs the CLI as a user would: exit 0, or exit 2 with one `error:` line naming ``path`` and nothing else."""
    capsys.readouterr()
    code = run(args)
    captured = capsys.readouterr()
    if code == 0:
        return code
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0], (args, code, err)
    assert not captured.out.strip(), captured.out
    return code


def test_damaged_tflite_through_the_cli_is_one_error_line(tflite, capsys):
    """A sample of damaged files through `effdet-rt engine-info` and `effdet-rt infer`, as a user types them."""
    folder = WORKDIR / "cli-tflite"
    (folder / "images").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (64, 48), (127, 127, 127)).save(folder / "images" / "gray.png")
    refused = {"engine-info": 0, "infer": 0}
    for index, data in enumerate(damaged_samples(tflite, 2 * CLI_SAMPLE)):
        path = folder / f"bad{index}.tflite"
        path.write_bytes(data)
        before = sorted(folder.rglob("*"))
        refused["engine-info"] += cli_outcome(["engine-info", str(path), "--json"], capsys, path) == 2
        out = folder / "out"
        if cli_outcome(["infer", "-m", str(path), "-i", str(folder / "images"), "-o", str(out)], capsys, path) == 2:
            refused["infer"] += 1
            assert sorted(folder.rglob("*")) == before  # nothing written, not even an empty output folder
        shutil.rmtree(out, ignore_errors=True)
        path.unlink()
    assert min(refused.values()) >= CLI_SAMPLE // 2, refused


# ---------------------------------------------------------------- Triton model repositories
# What effdet-rt reads back from a repository: the folder layout and each folder's effdet_rt.json record when
# `effdet-rt triton -o REPO` writes into it (check_repository_folder), and the records when `deepstream-config
# --triton REPO` looks up the engine it serves (served_engine). config.pbtxt, labels.txt and the version folders are
# read by Triton, not by effdet-rt; here only whether a config.pbtxt is there counts.

NAME = "cells"


@pytest.fixture(scope="module")
def triton_repo() -> tuple[Path, Path, Path]:
    """(the model, its labels, the repository `effdet-rt triton` wrote from it)."""
    folder = WORKDIR / "triton"
    folder.mkdir()
    model = Path(tiny_detector_onnx(folder / "det.onnx", size=32))
    labels = folder / "labels.txt"
    labels.write_text("RBC\nWBC\nPlatelets\n")
    repo = folder / "repo"
    assert run(["triton", "-m", str(model), "-o", str(repo), "--name", NAME, "--labels", str(labels)]) == 0
    return model, labels, repo


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


records = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["role", "source", "name", "max_batch_size", "runtime", "backend"]),
                    st.one_of(json_values, st.sampled_from(["model", "ensemble", NAME, "SOURCE", 8, 0, -1, 2**40,
                                                            8.5, "8", True])), max_size=6),
)


def record_text(model: Path, value) -> str:
    """``value`` as a record's JSON, with "SOURCE" standing for the model's real path (so lookups can match)."""
    if isinstance(value, dict):
        value = {k: str(model.resolve()) if v == "SOURCE" else v for k, v in value.items()}
    return json.dumps(value)


RECORD_FOLDERS = st.sampled_from([f"{NAME}_model", f"{NAME}_model", NAME, f"{NAME}_postprocess"])
ENTRY_NAMES = st.sampled_from([None, NAME, "other"])


@functools.cache
def record_damage(original: bytes, model: Path):
    return st.one_of(damaged(original), records.map(lambda v: record_text(model, v).encode()))


@EXAMPLES
@given(st.data())
def test_damaged_triton_records_serve_or_name_the_file(triton_repo, data):
    """The engine folder's record (or another folder's) damaged or replaced; `served_engine` finds the one engine
    folder whose record says it serves the model, or raises one UserError naming the repository or the record."""
    from effdet_rt.integrations.triton import MARKER, served_engine

    model, _, repo = triton_repo
    folder = repo / data.draw(RECORD_FOLDERS)
    marker = folder / MARKER
    original = marker.read_bytes()
    text = data.draw(record_damage(original, model))
    marker.write_bytes(text)
    try:
        engine, max_batch = served_engine(repo, model, data.draw(ENTRY_NAMES))
    except UserError as exc:
        assert str(repo) in str(exc), exc
        return
    finally:
        marker.write_bytes(original)
    record = json.loads(text if engine == folder.name else (repo / engine / MARKER).read_bytes())
    assert record["role"] == "model" and record["source"] == str(model.resolve())
    assert type(max_batch) is int and max_batch == record["max_batch_size"] >= 1


def test_damaged_triton_records_through_the_cli_are_one_error_line(triton_repo, capsys):
    """`effdet-rt deepstream-config --triton REPO` on a sample of damaged engine records: its configs, or one
    `error:` line and nothing written."""
    from effdet_rt.integrations.triton import MARKER

    model, labels, repo = triton_repo
    marker = repo / f"{NAME}_model" / MARKER
    original = marker.read_bytes()
    outcomes = []
    try:
        for index, text in enumerate(damaged_samples(original, CLI_SAMPLE, seed=1)):
            marker.write_bytes(text)
            out = WORKDIR / f"deepstream{index}"
            outcomes.append(cli_outcome(["deepstream-config", "-m", str(model), "-o", str(out), "--labels",
                                         str(labels), "--triton", str(repo)], capsys, repo))
            assert out.is_dir() == (outcomes[-1] == 0)
    finally:
        marker.write_bytes(original)
    assert outcomes.count(2) >= CLI_SAMPLE // 2, outcomes


@st.composite
def repository_layouts(draw) -> dict[str, str | None]:
    """Relative path -> file text (None: a folder) of what a repository might hold before a write into it."""
    from effdet_rt.integrations.triton import MARKER

    layout: dict[str, str | None] = {}
    folders = draw(st.lists(st.sampled_from([NAME, f"{NAME}_model", f"{NAME}_preprocess", "other", "other_model",
                                             ".hidden"]), unique=True, max_size=4))
    for folder in folders:
        layout[folder] = None
        for file_name in draw(st.lists(st.sampled_from(["config.pbtxt", MARKER, "1", "labels.txt"]), unique=True,
                                       max_size=3)):
            layout[f"{folder}/{file_name}"] = None if file_name == "1" else draw(st.text(max_size=12))
    for stray in draw(st.lists(st.sampled_from(["README.md", "model.onnx", "config.pbtxt", ".DS_Store"]),
                               unique=True, max_size=2)):
        layout[stray] = draw(st.text(max_size=8))
    return layout


def make_layout(repo: Path, layout: dict[str, str | None]) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    for relative, text in layout.items():
        path = repo / relative
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", errors="surrogatepass")


def writable(repo: Path) -> bool:
    """Whether `effdet-rt triton --name cells` may write into ``repo``, by its layout (independently of the reader)."""
    from effdet_rt.integrations.triton import MARKER, model_folders

    entries = [p for p in repo.iterdir() if not p.name.startswith(".")]
    if any(not (p.is_dir() and (p / "config.pbtxt").is_file()) for p in entries):
        return False
    return all((repo / f / MARKER).is_file() for f in model_folders(NAME) if (repo / f).exists())


@EXAMPLES
@given(repository_layouts())
def test_repository_layouts_are_written_into_or_named(layout):
    """What `effdet-rt triton -o REPO` reads of an existing folder before writing: model folders only, and a
    model folder of the same name only if effdet-rt wrote it."""
    from effdet_rt.integrations.triton import check_repository_folder

    repo = WORKDIR / "layout"
    make_layout(repo, layout)
    try:
        check_repository_folder(repo, NAME)
    except UserError as exc:
        assert str(repo) in str(exc), exc
        assert not writable(repo), (layout, exc)
        return
    assert writable(repo), layout


LAYOUTS = {  # a sample of layouts, each case of the rule once: (layout, whether the write may go ahead)
    "empty": ({}, True),
    "another model": ({"other": None, "other/config.pbtxt": "name: 'other'", "other/1": None}, True),
    "a damaged config of another model": ({"other/config.pbtxt": "\x00{{{"}, True),
    "our damaged record": ({f"{NAME}_model/config.pbtxt": "", f"{NAME}_model/effdet_rt.json": "{"}, True),
    "hidden files": ({".DS_Store": "x", ".git/config": ""}, True),
    "a stray file": ({"README.md": "# models"}, False),
    "a folder without config.pbtxt": ({"other/1": None}, False),
    "a foreign model of our name": ({f"{NAME}_preprocess/config.pbtxt": "backend: 'python'"}, False),
}


@pytest.mark.parametrize("case", LAYOUTS)
def test_repository_layouts_through_the_cli(triton_repo, capsys, case):
    """`effdet-rt triton` into each layout: the four folders as a fresh write has them and everything else as it
    was, or one `error:` line naming the folder and the folder untouched."""
    from effdet_rt.integrations.triton import model_folders

    model, labels, written = triton_repo
    layout, allowed = LAYOUTS[case]
    repo = WORKDIR / "cli-layout"
    make_layout(repo, layout)
    before = tree(repo)
    code = cli_outcome(["triton", "-m", str(model), "-o", str(repo), "--name", NAME, "--labels", str(labels)],
                       capsys, repo)
    after = tree(repo)
    assert code == (0 if allowed else 2)
    if code == 2:
        assert after == before
        return
    ours = {k: v for k, v in after.items() if k.split("/")[0] in model_folders(NAME)}
    assert ours == tree(written)
    assert {k: v for k, v in after.items() if k not in ours} == {k: v for k, v in before.items()
                                                                  if k.split("/")[0] not in model_folders(NAME)}


# What runs inside Triton reads the repository too: the parameters `effdet-rt triton` wrote into config.pbtxt (Triton
# hands them over parsed) and labels.txt beside it. A hand-edited or damaged value stops the model's load with one
# error naming the file (Triton logs it), not a traceback.


@pytest.fixture(scope="module")
def python_steps(triton_repo):
    """The writer's own parameters for the detector's Python steps, and a stand-in for triton_python_backend_utils
    (it exists only inside Triton's Python stub; the steps use only its dtype table while they start)."""
    import sys
    import types

    from effdet_rt.integrations.triton import detector_parts, model_io

    model, labels, _ = triton_repo
    parameters = dict(detector_parts(model, model_io(model), labels, 0.4).parameters)
    raw_parameters = {**parameters, "effdet_rt_metadata": json.dumps(TFLITE_METADATA)}
    stub = types.ModuleType("triton_python_backend_utils")
    stub.triton_string_to_numpy = lambda name: np.dtype(name[len("TYPE_"):].lower().replace("fp", "float"))
    sys.modules.setdefault("triton_python_backend_utils", stub)
    yield parameters, raw_parameters
    if sys.modules.get("triton_python_backend_utils") is stub:
        del sys.modules["triton_python_backend_utils"]


PARAMETER_KEYS = ("effdet_rt_input_size", "effdet_rt_min_score", "effdet_rt_metadata")


@functools.cache
def parameter_values(written: str | bytes):
    """The value as written, none, any text, or the written value damaged (strategies built once: hypothesis
    spends more on building them than on drawing)."""
    if isinstance(written, bytes):
        return st.one_of(st.just(written), st.none(), damaged(written))
    return st.one_of(st.just(written), st.none(), st.text(max_size=10),
                     damaged(written.encode()).map(lambda b: b.decode("utf-8", "replace")))


@EXAMPLES
@given(st.data())
def test_python_step_parameters_start_or_name_the_file(python_steps, data):
    from effdet_rt.integrations.triton_python import DetectorPostprocess, DetectorPreprocess

    raw = data.draw(st.booleans())
    base = python_steps[1 if raw else 0]
    parameters = {}
    for key in PARAMETER_KEYS:
        value = data.draw(parameter_values(base[key]))
        if value is not None:
            parameters[key] = value
    folder = WORKDIR / "python-step"
    folder.mkdir(exist_ok=True)
    labels = folder / "labels.txt"
    labels.unlink(missing_ok=True)
    text = data.draw(parameter_values(b"RBC\nWBC\nPlatelets\n"))
    if text is not None:
        labels.write_bytes(text)
    inputs = (["raw_class_logits", "raw_box_codes"] if raw else ["raw_num_detections"]) + ["scale", "image_size"]
    config = {"input": [{"name": name} for name in inputs], "output": [{"name": "num_detections",
                                                                       "data_type": "TYPE_INT32"}]}
    args = {"model_repository": str(folder), "model_version": "1"}
    try:
        pre = DetectorPreprocess(args, config, parameters)
        post = DetectorPostprocess(args, config, parameters)
    except UserError as exc:
        assert str(folder / "config.pbtxt") in str(exc) or str(labels) in str(exc), exc
        return
    assert len(pre.input_size) == 2 and all(type(v) is int and v > 0 for v in pre.input_size)
    assert 0 <= post.min_score < 1 and all(isinstance(name, str) for name in post.labels)
    if raw:
        assert post.anchors.ndim == 2 and post.anchors.shape[1] == 4 and np.isfinite(post.anchors).all()


def test_an_op_code_damaged_into_split_is_refused_not_a_crash(tflite, tmp_path):
    """What the fuzzing found: one byte of an operator code (AVERAGE_POOL_2D's deprecated copy made SPLIT, which
    LiteRT runs as the larger of the two) gave a SPLIT kernel the pooling's single input, and LiteRT's SPLIT reads
    past its inputs: a segmentation fault in allocate_tensors. In a child process, so a regression fails this test
    instead of ending the test run."""
    import subprocess
    import sys

    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    (pool,) = [c for c in model.operatorCodes if c.builtinCode == 1]  # AVERAGE_POOL_2D
    pool.deprecatedBuiltinCode = 49  # SPLIT
    path = tmp_path / "split.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    child = subprocess.run([sys.executable, "-c", "import sys; from effdet_rt.cli.main import run; "
                            "sys.exit(run(sys.argv[1:]))", "engine-info", str(path)],
                           capture_output=True, text=True, timeout=120)
    err = [line for line in child.stderr.splitlines() if line.startswith("error: ")]
    assert child.returncode == 2, (child.returncode, child.stderr[-2000:])
    assert len(err) == 1 and str(path) in err[0] and "operator code 1 recorded as 49" in err[0], child.stderr


def test_a_damaged_tensor_shape_is_refused_before_litert_allocates_it(tflite, tmp_path, capsys):
    """A dimension damaged to a huge value would make LiteRT allocate it as written (the OOM killer ended a test
    worker that way): the reader refuses it with one error line first."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(tflite, 0)
    model.subgraphs[0].tensors[0].shape = [1, 1 << 20, 1 << 12, 3]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "huge.tflite"
    path.write_bytes(bytes(builder.Output()))
    assert run(["engine-info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "would need" in err[0], err
