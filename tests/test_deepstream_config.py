"""`effdet-rt deepstream-config` and `effdet-rt engine-info` through the CLI (no TensorRT needed)."""

from __future__ import annotations

import json

from effdet_rt.cli.main import run
from tests.support.fake_tensorrt import tiny_onnx


def test_config_for_onnx_with_label_map(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "model.onnx", batch=2, size=16)
    (tmp_path / "label_map.yaml").write_text("1: RBC\n2: WBC\n4: Platelets\n")
    out = tmp_path / "ds"
    assert run(["deepstream-config", "-m", model, "-o", str(out), "--labels", str(tmp_path / "label_map.yaml")]) == 0
    assert (out / "labels.txt").read_text() == "RBC\nWBC\nunused_3\nPlatelets\n"
    lines = (out / "config_infer_primary_effdet.txt").read_text().splitlines()
    assert lines == [
        "[property]", "gpu-id=0", "net-scale-factor=1.0", "offsets=0;0;0", "model-color-format=0",
        f"onnx-file={(tmp_path / 'model.onnx').resolve()}", "labelfile-path=labels.txt", "infer-dims=3;16;16",
        "network-input-order=1", "batch-size=2", "network-mode=0", "num-detected-classes=4", "network-type=0",
        "cluster-mode=4", "maintain-aspect-ratio=1", "symmetric-padding=0",
        "output-blob-names=num_detections;detection_boxes;detection_scores;detection_classes",
        "parse-bbox-func-name=NvDsInferParseCustomEfficientNMS",
        "custom-lib-path=/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so",
        "", "[class-attrs-all]", "pre-cluster-threshold=0.3",
    ]


def test_config_for_plan_reads_build_info(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"PLAN")
    (tmp_path / "m.plan.json").write_text(json.dumps(
        {"precision": "int8", "profile": {"min": [1, 384, 512, 3], "opt": [4, 384, 512, 3], "max": [8, 384, 512, 3]}}))
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    out = tmp_path / "ds"
    assert run(["deepstream-config", "-m", str(plan), "-o", str(out), "--labels", str(tmp_path / "labels.txt")]) == 0
    text = (out / "config_infer_primary_effdet.txt").read_text()
    for line in (f"model-engine-file={plan.resolve()}", "infer-dims=3;384;512", "batch-size=8", "network-mode=1",
                 "num-detected-classes=2"):
        assert f"\n{line}\n" in text


def test_missing_model_and_missing_labels_are_errors(tmp_path, capsys):
    assert run(["deepstream-config", "-m", str(tmp_path / "no.onnx"), "-o", str(tmp_path / "ds")]) == 2
    assert "no.onnx: model file not found" in capsys.readouterr().err
    model = tiny_onnx(tmp_path / "model.onnx")
    assert run(["deepstream-config", "-m", model, "-o", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: deepstream-config needs --labels") and "Traceback" not in err
    assert not (tmp_path / "ds").exists()


def test_engine_info_for_missing_file(tmp_path, capsys):
    assert run(["engine-info", str(tmp_path / "missing.plan")]) == 2
    err = capsys.readouterr().err
    assert "missing.plan: engine file not found" in err and err.count("\n") == 1
