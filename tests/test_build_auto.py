"""`build --precision auto`: every engine this machine builds from the backend table is built, checked against
FP32 and timed in turns; the fastest within the accuracy bound is written with the timings table in its metadata,
and nothing else is left behind. Bad input is one error line with exit 2 and no file written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from effdet_rt.cli.main import run
from tests.support.cli import one_error_line
from tests.support.infer import write_val_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def val_set(tmp_path_factory, bccd_root):
    record, json_path, _coco = write_val_set(tmp_path_factory.mktemp("auto_val"), bccd_root, 4)
    return record, json_path


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def auto_metadata(path: Path) -> dict:
    from effdet_rt.engines import load

    return load(path).metadata["auto_build"]


def openvino_installed() -> bool:
    from effdet_rt.backends import backend_named
    from effdet_rt.engines.registry import backend_status

    return backend_status(backend_named("openvino"))[0]


def test_auto_times_the_fp32_engines_of_every_cpu_backend_and_keeps_the_fastest(tiny_onnx_nms, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(out / "engine"), "--precision", "auto",
                "--timing-rounds", "2"]) == 0
    printed = capsys.readouterr().out
    files = written(out)
    assert files in (["engine.onnx"], ["engine.bin", "engine.xml"])  # the winner only: no temporary folder left
    summary = auto_metadata(out / files[-1])
    rows = {(r["backend"], r["precision"]): r for r in summary["candidates"]}
    timed = {key for key, r in rows.items() if r["status"] in ("chosen", "timed")}
    expected = {("onnxruntime", "fp32")} | ({("openvino", "fp32")} if openvino_installed() else set())
    assert timed == expected
    chosen = (summary["choice"]["backend"], summary["choice"]["precision"])
    assert chosen in timed and rows[chosen]["status"] == "chosen"
    assert files[-1].endswith({"onnxruntime": ".onnx", "openvino": ".xml"}[chosen[0]])

    def score(row):  # what the choice minimises: geometric mean of batch-1 ms and per-image ms at batch 8
        return math.sqrt(row["batch1_ms"] * 1000.0 / row["batch8_img_s"])

    assert min(timed, key=lambda key: score(rows[key])) == chosen
    assert all(rows[key]["rounds"] == 2 and rows[key]["batch1_ms"] > 0 and rows[key]["build_s"] > 0 for key in timed)
    assert summary["batch"] == 8 and summary["threads"] >= 1 and summary["cpu_class"]
    # without calibration images there is nothing to check bf16 / int8 against: skipped, with the fix
    assert rows[("onnxruntime", "int8")]["status"] == "skipped"
    assert "--calib-tfrecords" in rows[("onnxruntime", "int8")]["why"]
    assert rows[("litert", "fp32/int8")]["status"] == "skipped"  # converted from the checkpoint, not from an ONNX
    assert "build --precision auto:" in printed and "ONNX Runtime FP32" in printed and "batch 8 img/s" in printed


def test_auto_keeps_only_candidates_that_match_fp32(tiny_onnx_nms, val_set, tmp_path, capsys):
    """INT8 of the tiny random network matches ~70% of FP32's detections: below a 95% bound it is timed and shown
    but never chosen; FP32 matches itself. With a validation set each candidate's mAP is recorded too."""
    record, json_path = val_set
    out = tmp_path / "out"
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(out / "engine.onnx"), "--backend", "onnxruntime",
                "--precision", "auto", "--calib-tfrecords", str(record), "--calib-batches", "1",
                "--calib-batch-size", "4", "--timing-rounds", "2", "--min-match", "0.95",
                f"dataset.val_tfrecords={record}", f"dataset.val_json_file={json_path}"]) == 0
    assert written(out) == ["engine.onnx"]
    summary = auto_metadata(out / "engine.onnx")
    rows = {r["precision"]: r for r in summary["candidates"]}
    assert set(rows) == {"fp32", "int8"} and summary["choice"] == {"backend": "onnxruntime", "precision": "fp32"}
    assert rows["fp32"]["matched"] >= 0.95 and rows["fp32"]["status"] == "chosen"
    assert rows["int8"]["status"] == "below bound" and rows["int8"]["matched"] < 0.95
    assert "matched" in rows["int8"]["why"] and rows["int8"]["batch1_ms"] > 0
    assert summary["reference"]["images"] == 4
    assert summary["reference"]["mAP"] is not None and rows["fp32"]["mAP"] == pytest.approx(summary["reference"]["mAP"],
                                                                                          abs=0.005)


def test_an_output_suffix_names_the_backend_and_a_format_without_metadata_gets_a_sidecar(tiny_onnx_nms, tmp_path,
                                                                                        monkeypatch, capsys):
    """-o engine.xml: only OpenVINO competes, and the IR pair is rewritten with the table in its rt_info (loading it
    checks the .bin's digest). A format with no metadata of ours gets ENGINE.auto.json beside it."""
    import json

    from effdet_rt.infer import autotune

    monkeypatch.setattr(autotune, "AUTO_PRECISIONS", {"cpu": ("fp32",), "gpu": ("fp32",)})
    if openvino_installed():
        assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "ov" / "engine.xml"), "--precision",
                    "auto", "--timing-rounds", "1"]) == 0
        assert written(tmp_path / "ov") == ["engine.bin", "engine.xml"]
        summary = auto_metadata(tmp_path / "ov" / "engine.xml")
        assert [(r["backend"], r["status"]) for r in summary["candidates"]] == [("openvino", "chosen")]
        capsys.readouterr()
        assert run(["engine-info", str(tmp_path / "ov" / "engine.xml")]) == 0
        assert "chosen by build --precision auto: openvino fp32, the fastest of 1 timed" in capsys.readouterr().out
    monkeypatch.setattr(autotune, "write_engine_metadata", lambda *args: False)
    assert run(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "ort" / "engine"), "--backend",
                "onnxruntime", "--precision", "auto", "--timing-rounds", "1"]) == 0
    assert written(tmp_path / "ort") == ["engine.onnx", "engine.onnx.auto.json"]
    sidecar = json.loads((tmp_path / "ort" / "engine.onnx.auto.json").read_text())
    assert sidecar["choice"] == {"backend": "onnxruntime", "precision": "fp32"}
    assert sidecar["candidates"][0]["rounds"] == 1 and sidecar["candidates"][0]["batch1_ms"] > 0


def test_a_budget_too_small_is_one_error_and_writes_nothing(tiny_onnx_nms, tmp_path, capsys):
    one_error_line(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "engine"), "--precision", "auto",
                    "--budget", "0.001"], capsys, "--budget 0.001: too small", "give more seconds")
    assert written(tmp_path) == []


def test_auto_with_no_backend_usable_is_one_error(tiny_onnx_nms, tmp_path, capsys, monkeypatch):
    from effdet_rt.infer import autotune

    monkeypatch.setattr(autotune, "backend_status", lambda backend: (False, f"{backend.title} is not installed"))
    one_error_line(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "engine"), "--precision", "auto"],
                   capsys, "no engine can be built here", "ONNX Runtime FP32/INT8: ONNX Runtime is not installed",
                   "install a backend")
    assert written(tmp_path) == []


def test_bad_outputs_and_precisions_are_one_error(tiny_onnx_nms, tmp_path, capsys):
    model = str(tiny_onnx_nms)
    one_error_line(["build", "-m", model, "-o", str(tmp_path / "engine.bin"), "--precision", "auto"], capsys,
                   "'.bin' is no engine file type")
    one_error_line(["build", "-m", model, "-o", str(tmp_path / "engine.xml"), "--backend", "onnxruntime",
                    "--precision", "auto"], capsys, "--backend onnxruntime builds .onnx files")
    one_error_line(["build", "-m", model, "-o", str(tmp_path / "engine.onnx"), "--backend", "onnxruntime",
                    "--precision", "bf16"], capsys, "--precision bf16 is not available with ONNX Runtime")
    one_error_line(["build", "-m", model, "-o", str(tmp_path / "e"), "--precision", "auto", "--min-match", "2"],
                   capsys, "min_match")
    assert written(tmp_path) == []


def test_cpu_class_from_the_cpuinfo_flags():
    from effdet_rt.utils.cpu import cpu_class, has_bf16_arithmetic, model_and_flags

    model, flags = model_and_flags("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni "
                                   "avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert model == "AMD EPYC" and cpu_class(flags) == "AVX-512 VNNI" and has_bf16_arithmetic(flags)
    assert cpu_class({"avx2", "avx512f", "amx_tile", "amx_bf16", "amx_int8"}) == "AMX"
    assert cpu_class({"avx2", "avx512f"}) == "AVX-512"
    assert cpu_class({"avx2", "avx_vnni"}) == "AVX2 VNNI" and cpu_class({"avx2"}) == "AVX2"
    assert not has_bf16_arithmetic({"avx2", "avx512f", "avx512_vnni"})


def test_no_candidate_accurate_enough_is_one_error(tiny_onnx_nms, val_set, tmp_path, capsys, monkeypatch):
    """Every candidate below the bound (here: ONNX Runtime FP32 alone, its matching made to report half) is one
    error line naming the candidates and the fix, and nothing is written."""
    from effdet_rt.export.verify import MatchReport
    from effdet_rt.infer import autotune

    monkeypatch.setattr(autotune, "AUTO_PRECISIONS", {"cpu": ("fp32",), "gpu": ("fp32",)})
    monkeypatch.setattr(autotune, "match_detections", lambda *args, **kwargs: MatchReport(10, 5, 10))
    record, _json = val_set
    one_error_line(["build", "-m", str(tiny_onnx_nms), "-o", str(tmp_path / "engine.onnx"), "--precision", "auto",
                    "--calib-tfrecords", str(record), "--calib-batches", "1", "--calib-batch-size", "4"], capsys,
                   "no candidate is accurate enough", "ONNX Runtime FP32: matched 50.0%", "lower --min-match")
    assert written(tmp_path) == []
