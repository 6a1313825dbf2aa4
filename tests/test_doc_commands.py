"""Every command line README.md and docs/*.md show still parses (quick), and the ones that can run on the tests'
tiny models and data run as typed and do what the page says (slow). Commands that need a GPU or TensorRT must end
in their documented one-line error; the few that cannot run here are listed with the reason."""

from __future__ import annotations

import pytest

from tests.support.doc_commands import documented_commands, parse_check

COMMANDS = documented_commands()


def test_the_docs_show_commands_from_every_page():
    pages = {c.page for c in COMMANDS}
    assert {"README.md", "docs/export.md", "docs/prune.md", "docs/tensorrt.md", "docs/classification.md",
            "docs/int8-cpu.md", "docs/openvino.md", "docs/cli.md"} <= pages
    assert len(COMMANDS) >= 60


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command_parses(command):
    path = parse_check(command.argv)
    assert path.split(" ")[0] == command.argv[0]


def test_a_renamed_option_fails_the_parse_check():
    from typer._click.exceptions import UsageError

    with pytest.raises(UsageError, match="--no-such-option"):
        parse_check(("export", "-e", "spec.yaml", "--no-such-option", "1"))


# ---- running them (slow) ---------------------------------------------------------------------------------------

# Keys: (page, a piece of the command's text), so an edit elsewhere on the page does not move them.
NOT_RUN = {
    ("README.md", "demo --data"): "the demo trains for 10 minutes; tests/test_demo.py runs it with a shorter --minutes",
    ("docs/cli.md", '"index": 0'): "a worker of a two-host TF_CONFIG cluster; tests/test_train_multiworker.py runs "
                                   "two local workers",
    ("docs/cli.md", '"index": 1'): "the second worker of the same cluster",
}
# docs/classification.md: its overview synopsis and its prune/retrain recipe train and evaluate an EfficientNet-B0
# on hymenoptera at 224 (minutes on two cores each); tests/test_classification_e2e.py and
# tests/test_classification_prune.py run the same commands on a tiny spec. Its `spec default` line runs here.
NOT_RUN_PAGES = {"docs/classification.md": "spec default --task classification"}
# pages whose commands another test runs as typed
RUN_ELSEWHERE = {"docs/triton.md": "tests/test_triton.py runs every effdet-rt line of the page against a real server",
                 "docs/litert.md": "tests/test_litert_classifier.py runs the page's classifier lines as typed"}
NO_TENSORRT = "TensorRT is not installed"
EXPECTED_ERRORS = {  # commands that need TensorRT and a GPU: their documented one-line error here
    ("README.md", "-o model.plan --backend tensorrt"): NO_TENSORRT,
    ("README.md", "deepstream-config -m model.plan"): "model.plan: model file not found",  # the plan above
    ("docs/tensorrt.md", "-o model_fp16.plan --backend tensorrt"): NO_TENSORRT,
    ("docs/tensorrt.md", "--calib-cache results/calibration.cache"): NO_TENSORRT,
    ("docs/tensorrt.md", "engine-info model_int8.plan"): "model_int8.plan: engine file not found",
    ("docs/tensorrt.md", "-m model_qdq.onnx -o model_int8.plan"): NO_TENSORRT,
    ("docs/tensorrt.md", "deepstream-config -m model_int8.plan"): "model_int8.plan: model file not found",
}


def _listed(table: dict, command):
    found = [value for (page, piece), value in table.items() if page == command.page and piece in command.text]
    assert len(found) <= 1, command.id
    return found[0] if found else None


def _runs(command) -> bool:
    return command.page in RUN_PAGES and _listed(NOT_RUN, command) is None and (
        command.page not in NOT_RUN_PAGES or NOT_RUN_PAGES[command.page] in command.text)


RUN_PAGES = ["README.md", "docs/export.md", "docs/prune.md", "docs/tensorrt.md", "docs/int8-cpu.md",
             "docs/openvino.md", "docs/classification.md"]


def test_every_command_is_run_or_listed_with_a_reason():
    for command in COMMANDS:
        assert (_runs(command) or _listed(NOT_RUN, command) or command.page in NOT_RUN_PAGES
                or command.page in RUN_ELSEWHERE), command.id
    for table in (NOT_RUN, EXPECTED_ERRORS):  # an entry whose command left the docs must leave the table too
        for page, piece in table:
            assert any(c.page == page and piece in c.text for c in COMMANDS), (page, piece)


@pytest.fixture(scope="module")
def doc_base(tmp_path_factory, bccd_root):
    """What the pages take as given: mydata/ (a VOC folder, its COCO jsons and image folders), data/tfrecords
    (+ data/train-*.tfrecord), and a tiny D0 checkpoint whose BatchNorm statistics come from BCCD images (so
    `export --verify` holds on real images as it does on a trained model)."""
    import shutil

    import numpy as np

    from effdet_rt.cli.main import run
    from effdet_rt.data.preprocess import preprocess_image, read_image
    from tests.support.doc_commands import mini_voc
    from tests.support.infer import bccd_images, build_tiny_model, save_tiny_checkpoint

    base = tmp_path_factory.mktemp("doc_base")
    voc = mini_voc(bccd_root, base / "mydata" / "VOC")
    for split in ("train", "val"):
        assert run(["dataset", "import-voc", str(voc), "--split", split, "-o", str(base / "mydata" / f"{split}.json")]) == 0
        (base / "mydata" / f"{split}_images").symlink_to(voc / "JPEGImages")
        assert run(["dataset-convert", "--voc", str(voc), "--split", split, "-o", str(base / "data" / "tfrecords"),
                    "-s", "1"]) == 0
    for shard in (base / "data" / "tfrecords").glob("train-*"):
        shutil.copy(shard, base / "data" / shard.name)
    images = np.stack([preprocess_image(read_image(p), (128, 128))[0] for p in bccd_images(bccd_root, 8)])
    model = build_tiny_model(calibration=images.astype(np.float32))
    save_tiny_checkpoint(model, base)
    return base


def _spec_yaml(base_yaml: str, tfrecords: str, val_json: str) -> str:
    import yaml

    from tests.support.doc_commands import merged, tiny_spec_edits
    from tests.support.infer import KEY

    return yaml.safe_dump(merged(yaml.safe_load(base_yaml), tiny_spec_edits(tfrecords, val_json, KEY)))


def _run_documented(command, workspace, capsys):
    from effdet_rt.cli.main import run
    from tests.support.data import steps_run_eagerly

    capsys.readouterr()
    if command.argv[0] == "train":  # a few steps: tracing the step costs more than running it
        with steps_run_eagerly():
            code = run(list(command.argv))
    else:
        code = run(list(command.argv))
    return code, capsys.readouterr()


_STAND_INS: dict[str, object] = {}  # files a page takes as given, made once per session (see export below)


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_documented_commands_run_as_typed(page, doc_base, tmp_path, monkeypatch, capsys):
    import shutil

    from effdet_rt.cli.main import run
    from tests.support.doc_commands import stand_ins
    from tests.support.infer import KEY

    workspace = tmp_path / "ws"
    shutil.copytree(doc_base, workspace, symlinks=True)
    monkeypatch.chdir(workspace)
    checkpoint = workspace / "tiny.edrt"
    capsys.readouterr()
    assert run(["spec", "default"]) == 0
    (workspace / "spec.yaml").write_text(_spec_yaml(capsys.readouterr().out, "data/tfrecords",
                                                    "data/tfrecords/val.json"))

    def export(path):  # the model.onnx a page starts from: the same export for every page, so made once
        if "model.onnx" not in _STAND_INS:
            made = doc_base.parent / "stand_in_model.onnx"
            assert run(["export", "-e", "spec.yaml", "-m", str(checkpoint), "-o", str(made), "--nms", "onnx"]) == 0
            _STAND_INS["model.onnx"] = made
        shutil.copy(_STAND_INS["model.onnx"], path)

    commands = [c for c in documented_commands(KEY) if c.page == page and _runs(c)]
    assert commands
    for command in commands:
        stand_ins(command, workspace, checkpoint, export)
        code, printed = _run_documented(command, workspace, capsys)
        where = f"{command.id}: {command.text}\n{printed.err[-2000:]}"
        expected = _listed(EXPECTED_ERRORS, command)
        if expected:
            lines = printed.err.strip().splitlines()
            assert code == 2 and len(lines) == 1 and expected in lines[0], where
            continue
        assert code == 0, where
        if command.stdout:
            (workspace / command.stdout).write_text(printed.out)
            if command.stdout == "spec.yaml":  # README step 2: "edit the fields listed below"
                (workspace / "spec.yaml").write_text(_spec_yaml(printed.out, "mydata/tfrecords", "mydata/val.json"))
            assert (workspace / command.stdout).stat().st_size > 100, where
        if "-o" in command.argv:
            output = workspace / command.argv[command.argv.index("-o") + 1]
            # `build --precision auto -o engine` writes engine.xml or engine.onnx, whichever backend won
            assert output.exists() or list(output.parent.glob(f"{output.name}.*")), where
