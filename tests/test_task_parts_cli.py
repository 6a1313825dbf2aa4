"""The CLI commands that deploy a model (build, deepstream-config, triton) reach its task only through the task's
registered ModelTask row: a task registered here, and named by a model file's metadata, gets the calls."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest

from effdet_rt.cli.main import run
from tests.support.fake_tensorrt import tiny_onnx


@pytest.fixture
def segmentation(monkeypatch, tmp_path):
    """A third task's row (the default's with its own name and deployment parts) and an ONNX file naming it."""
    from effdet_rt import tasks
    from effdet_rt.errors import UserError
    from effdet_rt.onnx.tasks import MODEL_PART, default_model_task

    calls: list = []

    def deepstream_config(*args):
        calls.append(("deepstream", args))
        return args[1] / "seg.txt", args[1] / "seg_labels.txt"

    def deepstream_triton_config(*args):
        calls.append(("deepstream-triton", args))
        return args[3] / "seg_triton.txt"

    def triton_repository(*args):
        calls.append(("triton", args))
        return args[0].repository / args[0].name

    def image_calibration(*args):
        calls.append(("calibration", args))
        raise UserError("segmentation calibration reached")

    row = dataclasses.replace(default_model_task(), name="segmentation", noun="segmenter",
                              image_calibration=image_calibration, deepstream_config=deepstream_config,
                              deepstream_triton_config=deepstream_triton_config, triton_repository=triton_repository)
    tasks.find_task_modules()
    monkeypatch.setitem(tasks._parts[MODEL_PART], "segmentation", row)
    model = onnx.load(tiny_onnx(tmp_path / "seg.onnx", batch=1, size=8))
    model.metadata_props.add(key="effdet_rt.task", value='"segmentation"')
    onnx.save(model, tmp_path / "seg.onnx")
    return tmp_path / "seg.onnx", calls


def test_deepstream_config_calls_the_task_part(segmentation, tmp_path, capsys):
    model, calls = segmentation
    out = tmp_path / "ds"
    assert run(["deepstream-config", "-m", str(model), "-o", str(out), "--num-classes", "3", "--threshold",
                "0.5"]) == 0
    assert capsys.readouterr().out == f"wrote {out / 'seg.txt'} and {out / 'seg_labels.txt'}\n"
    assert calls == [("deepstream", (model, out, {"task": "segmentation"}, None, 3, 0.5))]


def test_triton_calls_the_task_part(segmentation, tmp_path, capsys):
    model, calls = segmentation
    repository = tmp_path / "repo"
    assert run(["triton", "-m", str(model), "-o", str(repository), "--name", "seg", "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {repository / 'seg'} (ensemble 'seg')")
    [(kind, (request, labels, min_score, top_k))] = calls
    assert (kind, request.model, request.name, labels, min_score, top_k) == ("triton", model, "seg", None, 0.4, 2)


def test_build_calibrates_through_the_task_part(segmentation, tmp_path, capsys):
    model, calls = segmentation
    images = tmp_path / "images"
    images.mkdir()
    assert run(["build", "-m", str(model), "-o", str(tmp_path / "seg_int8.onnx"), "--precision", "int8",
                "--calib-images", str(images)]) == 2
    assert capsys.readouterr().err == "error: segmentation calibration reached\n"
    [(kind, (metadata, folder, calibration, _log))] = calls
    assert (kind, metadata, Path(folder), calibration.batch_size) == ("calibration", {"task": "segmentation"},
                                                                       images, 8)
