"""The demo end to end on the synthetic set (tiny budget), and its bad-input errors."""

import importlib.util
import json

import pytest

from effdet_rt.cli.main import run

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "0"], "--minutes 0.0 is not allowed"),
        (["--image-size", "200"], "--image-size 200 is not allowed: must be a positive multiple of 128"),
        (["--batch-size", "0"], "--batch-size 0 is not allowed"),
        (["--data", "/nonexistent/folder"], "/nonexistent/folder: --data folder not found"),
    ],
)
def test_demo_bad_input(args, message, tmp_path, capsys):
    code = run(["demo", "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_demo_bad_data_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert run(["demo", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "out")]) == 2
    assert "not a dataset folder the demo knows" in capsys.readouterr().err


def test_demo_on_synthetic_data(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run(["demo", "-o", str(out), "--minutes", "0.05", "--image-size", "128", "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "demo_results.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in result["rows"]}
    openvino = importlib.util.find_spec("openvino") is not None  # the demo adds OpenVINO engines when installed
    assert list(rows) == [("checkpoint", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")] + (
        [("openvino", "fp32"), ("openvino", "int8")] if openvino else [])
    if openvino:
        assert abs(rows["openvino", "fp32"]["mAP"] - rows["checkpoint", "fp32"]["mAP"]) <= 0.01
    assert result["data"] == "synthetic shapes (96 train / 24 val images)"
    # the ONNX Runtime FP32 engine computes what the checkpoint computes
    assert abs(rows["onnxruntime", "fp32"]["mAP"] - rows["checkpoint", "fp32"]["mAP"]) <= 0.01
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in rows.values())
    assert "| onnxruntime | int8 |" in printed and "verify on 4 images" in printed
    for name in ("model.onnx", "model_ort_fp32.onnx", "model_ort_int8.onnx", "demo_results.md", "status.json"):
        assert (out / name).is_file(), name
    for engine in ("checkpoint_fp32", "onnxruntime_fp32", "onnxruntime_int8"):
        assert len(list((out / f"infer_{engine}" / "images_annotated").glob("*.jpg"))) == 8
    status = [json.loads(line) for line in (out / "status.json").read_text().splitlines()]
    assert status[0]["status"] == "STARTED" and status[-1]["status"] == "SUCCESS"
