"""Command lines users typed that once failed or misled (issue #32), run as typed on the tiny detector and real
BCCD images: fixed-batch INT8 calibration, the NMS threshold an export bakes in, `--verify` on weak models, and
the NMS / schedule spec fields."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import yaml

from effdet_rt.cli.main import run
from tests.support.cli import one_error_line
from tests.support.infer import KEY, TINY_SPEC, write_val_set
from tests.support.paths import REPO

TF1_SAMPLE = REPO / "tests" / "data" / "spec_tf1_sample.txt"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, bccd_root, tiny_checkpoint):
    """A folder with spec.yaml (the tiny detector's, 8 BCCD val images as train and val set) and its data."""
    folder = tmp_path_factory.mktemp("user_commands")
    record, annotations, _ = write_val_set(folder, bccd_root, 8)
    spec = {**TINY_SPEC, "dataset": {"num_classes": 4, "train_tfrecords": [str(record)],
                                     "val_tfrecords": [str(record)], "val_json_file": str(annotations)},
            "evaluate": {"max_detections_per_image": 100, "num_samples": 8, "batch_size": 4},
            "encryption_key": KEY, "results_dir": str(folder / "results")}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder


def _metadata(path) -> dict:
    return {p.key.removeprefix("effdet_rt."): json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


@pytest.mark.slow
def test_int8_build_of_a_fixed_batch_export_calibrates_at_another_batch_size(workspace, tiny_checkpoint, monkeypatch):
    """`export --nms onnx --batch-size 2` then `build --precision int8 --calib-batch-size 4`: the 4-image batches
    are fed as the export's 2-image batches (it used to stop with onnxruntime's "Got: 4 Expected: 2")."""
    monkeypatch.chdir(workspace)
    assert run(["export", "-e", "spec.yaml", "-m", str(tiny_checkpoint), "-o", "b2.onnx", "--nms", "onnx",
                "--batch-size", "2"]) == 0
    assert run(["build", "-e", "spec.yaml", "-m", "b2.onnx", "-o", "b2_int8.onnx", "--backend", "onnxruntime",
                "--precision", "int8", "--calib-batch-size", "4", "--calib-tfrecords", "val-*.tfrecord"]) == 0
    meta = _metadata(workspace / "b2_int8.onnx")
    assert meta["precision"] == "int8" and meta["calibration_batches"] == 4  # 8 images: 2 x 4 fed as 4 x 2
    dims = onnx.load(str(workspace / "b2_int8.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2


def test_rebatched_feeds_every_image_in_the_fixed_batch():
    from effdet_rt.calib.quantize import rebatched

    lines = []
    batches = [np.full((4, 1), i, np.float32) for i in range(3)]
    out = list(rebatched(batches, 5, lines.append))
    assert [b[:, 0].tolist() for b in out] == [[0, 0, 0, 0, 1], [1, 1, 1, 2, 2]]
    assert lines == ["calibration: the model's batch is fixed at 5: the last 2 of 12 images are left out"]


def _evaluated(workspace, capsys, model: str) -> tuple[dict, str]:
    capsys.readouterr()
    assert run(["evaluate", "-e", "spec.yaml", "-m", model, "-r", f"eval_{model}"]) == 0
    err = capsys.readouterr().err
    return json.loads((workspace / f"eval_{model}" / "eval_results.json").read_text()), err


@pytest.mark.slow
def test_default_export_says_its_threshold_and_evaluate_warns_then_low_threshold_gives_the_checkpoints_map(
        workspace, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    (workspace / "tiny.edrt").write_bytes(tiny_checkpoint.read_bytes())
    capsys.readouterr()
    assert run(["export", "-e", "spec.yaml", "-m", "tiny.edrt", "-o", "model.onnx", "--nms", "onnx"]) == 0
    printed = capsys.readouterr().out
    assert "NMS baked in: scores >= 0.4 (export.min_score_thresh)" in printed and "--min-score 0.001" in printed
    assert _metadata(workspace / "model.onnx")["score_threshold"] == 0.4
    _, err = _evaluated(workspace, capsys, "model.onnx")
    assert "warning: this model's NMS keeps only scores >= 0.4" in err and "export with --min-score 0.001" in err

    assert run(["export", "-e", "spec.yaml", "-m", "tiny.edrt", "-o", "model_eval.onnx", "--nms", "onnx",
                "--min-score", "0.001"]) == 0
    engine, err = _evaluated(workspace, capsys, "model_eval.onnx")
    assert "warning" not in err
    checkpoint, _ = _evaluated(workspace, capsys, "tiny.edrt")
    metrics = [k for k in checkpoint if k.startswith(("AP", "AR"))]
    assert len(metrics) >= 12 and any(checkpoint[k] > 0 for k in metrics)
    for name in metrics:
        assert engine[name] == pytest.approx(checkpoint[name], abs=2e-3), name


def test_score_floor_warning_only_when_the_engine_cuts_what_evaluation_scores():
    from types import SimpleNamespace

    from effdet_rt.infer.evaluate import score_floor_warning

    assert score_floor_warning(SimpleNamespace(metadata={"score_threshold": 0.001}), 0.001) is None
    assert score_floor_warning(SimpleNamespace(), 0.001) is None  # a checkpoint: its NMS follows the spec
    assert "scores >= 0.4" in score_floor_warning(SimpleNamespace(metadata={"score_threshold": 0.4}), 0.001)


def test_verify_compares_the_best_detections_of_a_model_scoring_under_the_floor():
    """Scores that never reach COMPARE_MIN_SCORE (0.05) used to leave "0/0 detections matched", a pass."""
    from effdet_rt.detections import Detections
    from effdet_rt.export.verify import MatchReport, match_detections
    from effdet_rt.export.verify_run import COMPARE_TOP_K, comparable, onnx_report

    scores = np.linspace(0.03, 0.001, 30, dtype=np.float32)[None]
    boxes = np.tile(np.arange(30, dtype=np.float32)[None, :, None] * 10 + [0, 0, 8, 8], (1, 1, 1))
    dets = Detections(boxes, scores, np.ones((1, 30), np.int32), np.array([30]))
    reference, candidate = comparable(dets, dets, cap=100)
    assert reference.num_detections.tolist() == [COMPARE_TOP_K]
    assert match_detections(reference, candidate) == MatchReport(10, 10, 10)
    nothing = onnx_report(0.0, MatchReport(0, 0, 0), 4)
    assert not nothing.passed() and "no detections to compare: the check fails" in nothing.summary()
    # a collapsed model: 100 detections per image whose scores are all near-ties, so none has a rank to compare
    tied = np.full((1, 100), 0.0099, np.float32)
    collapsed = Detections(np.tile(boxes[:, :1], (1, 100, 1)), tied, np.ones((1, 100), np.int32), np.array([100]))
    reference, _ = comparable(collapsed, collapsed, cap=100)
    assert reference.num_detections.tolist() == [0]
    decided_by_heads = onnx_report(1e-7, MatchReport(0, 0, 0), 4, all_tied=True)
    assert decided_by_heads.passed() and "the raw heads alone decide" in decided_by_heads.summary()
    assert not onnx_report(2e-4, MatchReport(0, 0, 0), 4, all_tied=True).passed()  # the heads must still agree


@pytest.mark.slow
def test_export_verify_of_a_weak_model_compares_detections(tiny_checkpoint, tmp_path, capsys):
    """At the default --min-score 0.4 the tiny model keeps almost nothing; verify compares at a low floor."""
    capsys.readouterr()
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(tmp_path / "m.onnx"), "--nms", "onnx",
                "--batch-size", "2", "--verify"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("verify on"))
    matched, total = (int(n) for n in line.split("detections matched ")[1].split(" ")[0].split("/"))
    assert total >= 2 * 10 and matched >= 0.99 * total


def test_soft_anneal_with_warmup_init_zero_is_refused_naming_the_field(capsys):
    one_error_line(["spec", "show", "train.lr_schedule.name=soft_anneal", "train.lr_schedule.warmup_init=0"],
                   capsys, "train.lr_schedule", "warmup_init must be above 0")


def _tf1(tmp_path, text: str):
    path = tmp_path / "tf1.txt"
    path.write_text(TF1_SAMPLE.read_text() + text)
    return path


def test_tf1_fractional_warmup_epoch_and_conflicting_fields_are_refused(tmp_path, capsys):
    fractional = TF1_SAMPLE.read_text().replace("lr_warmup_epoch: 5", "lr_warmup_epoch: 1.4")
    (tmp_path / "a.txt").write_text(fractional)
    one_error_line(["spec", "convert", str(tmp_path / "a.txt"), "-o", str(tmp_path / "a.yaml")], capsys,
                   "training_config.lr_warmup_epoch", "write 1 or 2")
    conflicting = TF1_SAMPLE.read_text().replace("num_classes: 91", "num_classes: 91 max_instances_per_image: 50")
    conflicting = conflicting.replace("num_scales: 3", "num_scales: 3 max_instances_per_image: 100")
    (tmp_path / "b.txt").write_text(conflicting)
    one_error_line(["spec", "convert", str(tmp_path / "b.txt"), "-o", str(tmp_path / "b.yaml")], capsys,
                   "max_instances_per_image", "conflicts with")
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "b.yaml").exists()


def test_tf1_eval_min_score_thresh_applies_to_evaluation_too():
    from effdet_rt.spec import convert_tf1

    spec, _ = convert_tf1(TF1_SAMPLE)
    assert spec.evaluate.min_score_thresh == spec.export.min_score_thresh == spec.inference.min_score_thresh == 0.4


def test_nms_fields_reach_the_checkpoint_backend_inference_and_the_export(tiny_model):
    from effdet_rt.engines.runtime.checkpoint import KerasEngine, nms_config_from_spec
    from effdet_rt.errors import UserError
    from effdet_rt.export.exporter import check_options
    from effdet_rt.export.workflow import export_options_from_spec
    from effdet_rt.infer.folder import with_inference_nms
    from effdet_rt.model.factory import setup_from_spec
    from effdet_rt.spec.validation import validate_spec

    spec = validate_spec({**TINY_SPEC, "evaluate": {"iou_thresh": 0.2, "pre_nms_top_k": 300, "min_score_thresh": 0.05},
                          "inference": {"iou_thresh": 0.7, "pre_nms_top_k": 1000},
                          "export": {"pre_nms_top_k": 400, "nms": "onnx"}}, "spec")
    config = nms_config_from_spec(spec)
    assert (config.iou_threshold, config.pre_nms_top_k, config.score_threshold) == (0.2, 300, 0.05)
    inferring = nms_config_from_spec(with_inference_nms(spec))
    assert (inferring.iou_threshold, inferring.pre_nms_top_k) == (0.7, 1000)
    assert export_options_from_spec(spec.export).nms_settings.pre_nms_top_k == 400
    with pytest.raises(UserError, match="EfficientNMS_TRT has no pre-NMS top-k"):
        check_options(export_options_from_spec(spec.export.model_copy(update={"nms": "efficient"})))
    # the checkpoint backend runs them: a looser IoU keeps more overlapping boxes
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    setup = setup_from_spec(spec)
    tight = KerasEngine(tiny_model, setup, config).run(images).num_detections
    loose = KerasEngine(tiny_model, setup, inferring).run(images).num_detections
    assert (loose >= tight).all() and loose.sum() > tight.sum()


@pytest.fixture(scope="module")
def exported(workspace, tiny_checkpoint):
    """model.onnx (`--nms onnx`, dynamic batch) of the tiny checkpoint, in the workspace."""
    path = workspace / "exported.onnx"
    assert run(["export", "-m", str(tiny_checkpoint), "-k", KEY, "-o", str(path), "--nms", "onnx"]) == 0
    return path


@pytest.mark.slow
def test_prune_doc_step4_int8_build_calibrates_on_the_training_set_of_a_default_spec(workspace, exported,
                                                                                      monkeypatch, capsys):
    """docs/prune.md step 4 names no --calib-tfrecords: a spec from `spec default` with its dataset fields filled
    in (README step 2) calibrates on dataset.train_tfrecords."""
    monkeypatch.chdir(workspace)
    capsys.readouterr()
    assert run(["spec", "default"]) == 0
    default = yaml.safe_load(capsys.readouterr().out)
    default["dataset"]["train_tfrecords"] = ["val-*.tfrecord"]
    (workspace / "default_spec.yaml").write_text(yaml.safe_dump(default))
    (workspace / "pruned.onnx").write_bytes(exported.read_bytes())
    assert run(["build", "-e", "default_spec.yaml", "-m", "pruned.onnx", "-o", "pruned_int8.onnx", "--backend",
                "onnxruntime", "--precision", "int8"]) == 0
    assert "using dataset.train_tfrecords" in capsys.readouterr().out
    meta = _metadata(workspace / "pruned_int8.onnx")
    assert meta["precision"] == "int8" and meta["calibration_batches"] == 1  # 8 images, batch 8


def test_dataset_convert_writes_status_only_into_the_results_dir(bccd_root, tmp_path):
    out, results = tmp_path / "records", tmp_path / "R"
    assert run(["dataset_convert", "--voc", str(bccd_root), "--split", "val", "-o", str(out), "--results_dir",
                str(results), "-s", "1"]) == 0
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("status.json")] == ["R/status.json"]
    assert json.loads((results / "status.json").read_text().splitlines()[-1])["kpi"]["images"] == 87


@pytest.mark.slow
def test_nncf_draws_no_progress_bar_under_effdet_no_progress(workspace, exported, monkeypatch, capsys):
    pytest.importorskip("nncf")
    monkeypatch.setenv("EFFDET_NO_PROGRESS", "1")
    capsys.readouterr()
    assert run(["build", "-m", str(exported), "-o", str(workspace / "ov_int8.xml"), "--backend", "openvino",
                "--precision", "int8", "--calib-tfrecords", str(workspace / "val-*.tfrecord")]) == 0
    printed = capsys.readouterr()
    assert "OpenVINO INT8 IR" in printed.out
    assert "Statistics collection" not in printed.out + printed.err


@pytest.mark.slow
def test_tensorrt11_int8_recipe_calibrates_the_network_and_reattaches_efficient_nms(workspace, tiny_checkpoint,
                                                                                    monkeypatch):
    """docs/tensorrt.md's TensorRT 11 recipe: the Q/DQ model is made from the `--nms efficient` export (ONNX Runtime
    calibrates its network part), ends in the same EfficientNMS_TRT node, and TensorRT 11 builds it as Q/DQ."""
    import sys

    import onnxruntime as ort

    from effdet_rt.engines.build.tensorrt import build_tensorrt_engine
    from effdet_rt.export.written_heads import written_heads
    from tests.support.fake_tensorrt import fake_tensorrt

    monkeypatch.chdir(workspace)
    assert run(["export", "-e", "spec.yaml", "-m", str(tiny_checkpoint), "-o", "model_trt.onnx", "--nms",
                "efficient"]) == 0
    assert run(["build", "-e", "spec.yaml", "-m", "model_trt.onnx", "-o", "model_qdq.onnx", "--backend",
                "onnxruntime", "--precision", "int8", "--int8-profile", "tensorrt", "--calib-tfrecords",
                "val-*.tfrecord"]) == 0
    source, qdq = onnx.load("model_trt.onnx"), onnx.load("model_qdq.onnx")
    onnx.checker.check_model(qdq)
    assert [o.name for o in qdq.graph.output] == [o.name for o in source.graph.output]
    nms = [n for n in qdq.graph.node if n.op_type == "EfficientNMS_TRT"]
    (original,) = [n for n in source.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(nms) == 1 and nms[0].attribute == original.attribute and nms[0].input == original.input
    ops = [n.op_type for n in qdq.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    meta = _metadata(workspace / "model_qdq.onnx")
    assert meta["nms"] == "efficient" and meta["int8_profile"] == "tensorrt" and meta["precision"] == "int8"

    # its network is quantized exactly as the `--nms onnx` export's (same checkpoint, same calibration images)
    assert run(["export", "-e", "spec.yaml", "-m", str(tiny_checkpoint), "-o", "model_std.onnx", "--nms",
                "onnx"]) == 0
    assert run(["build", "-e", "spec.yaml", "-m", "model_std.onnx", "-o", "model_std_qdq.onnx", "--backend",
                "onnxruntime", "--precision", "int8", "--int8-profile", "tensorrt", "--calib-tfrecords",
                "val-*.tfrecord"]) == 0
    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)

    def heads(proto):
        session = ort.InferenceSession(written_heads(proto).SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(["class_logits", "box_codes"], {"images": images})

    for ours, standard in zip(heads(qdq), heads(onnx.load("model_std_qdq.onnx")), strict=True):
        np.testing.assert_array_equal(ours, standard)

    trt = fake_tensorrt("11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_tensorrt_engine("model_qdq.onnx", "model_int8.plan", precision="int8", workspace_gb=2, min_batch=1,
                          opt_batch=1, max_batch=2, timing_cache=None, calibration=None, calib_cache=None,
                          log=lambda m: None)
    assert [c[1] for c in trt.calls if c[0] == "parse"] == ["model_qdq.onnx"]
    assert not [c for c in trt.calls if c[0] in ("flag", "calib_batch")]  # explicit quantization: no calibrator
    assert (workspace / "model_int8.plan").exists()
