"""A pruned D0 on the whole flow: `effdet-rt prune` (CLI, status.json, bad input), the .edrt round trip,
one training step from train.pruned_model_path, ONNX export (three NMS modes) whose raw heads match TensorFlow,
ONNX Runtime FP32 and INT8 engines, and a DeepStream config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from effdet_rt.cli.main import run
from tests.support.data import bccd_val_head, steps_run_eagerly
from tests.support.infer import KEY

pytestmark = pytest.mark.slow
THRESHOLD = 0.85  # on the tiny random D0 this drops about 40% of the parameters
PRUNE_ARGS = ["-pth", str(THRESHOLD), "-pg", "8", "-nf", "8", "-eq", "union", "-n", "max"]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_checkpoint) -> dict:
    out = tmp_path_factory.mktemp("pruned")
    assert run(["prune", "-m", str(tiny_checkpoint), "-o", str(out), "-k", KEY, *PRUNE_ARGS]) == 0
    path = out / f"model_th={THRESHOLD}_eq=union.edrt"
    return {"path": path, "out": out}


def test_prune_writes_the_tao_named_checkpoint_and_status(pruned, tiny_model):
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.model.pruned import FILTERS_KEY
    from effdet_rt.prune.pruner import trainable_parameters

    saved = load_checkpoint(pruned["path"], KEY)
    counts = saved.metadata[FILTERS_KEY]
    assert sorted(p.name for p in pruned["out"].iterdir()) == [pruned["path"].name, "status.json"]
    status = json.loads((pruned["out"] / "status.json").read_text().splitlines()[-1])
    kpi = status["kpi"]
    assert status["status"] == "SUCCESS"
    assert kpi["param_count_before"] == trainable_parameters(tiny_model) == 3_829_172
    assert kpi["size_bytes"] == pruned["path"].stat().st_size
    assert kpi["pruning_ratio"] == pytest.approx(kpi["param_count_after"] / kpi["param_count_before"], abs=1e-6)
    assert 0.4 < kpi["pruning_ratio"] < 0.8
    # granularity 8, at least 8 kept; the predictions are never pruned; residual partners shrink together
    assert all(n % 8 == 0 and n >= 8 for n in counts.values())
    assert not any("predict" in name for name in counts)
    widths = {saved.weights[f"stage4_block{i}_project_conv/kernel"].shape[-1] for i in range(3)}
    assert len(widths) == 1  # the residual Adds of a stage join its project convs
    assert counts["stage2_block0_expand_conv"] == counts["stage2_block0_se_expand"]
    kernel = saved.weights["stage2_block0_dwconv/depthwise_kernel"]
    assert kernel.shape == (3, 3, counts["stage2_block0_expand_conv"], 1)
    bifpn = {saved.weights[name].shape[axis] for name, axis in (
        ("p6_from_p5_conv/kernel", 3), ("fpn_cell0_node0_conv/pointwise_kernel", 3),
        ("fpn_cell2_node7_conv/pointwise_kernel", 3), ("class_net_conv0/depthwise_kernel", 2))}
    assert len(bifpn) == 1  # the BiFPN and the heads' inputs are one channel group (fusions join every level)


def test_pruned_checkpoint_round_trips(pruned):
    from effdet_rt.checkpoint import load_checkpoint, model_weights
    from effdet_rt.engines.runtime.checkpoint import load_engine
    from effdet_rt.prune.pruner import trainable_parameters

    engine = load_engine(pruned["path"], key=KEY)
    saved = load_checkpoint(pruned["path"], KEY).weights
    loaded = model_weights(engine.model)
    assert sorted(loaded) == sorted(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    status = json.loads((pruned["out"] / "status.json").read_text().splitlines()[-1])
    assert trainable_parameters(engine.model) == status["kpi"]["param_count_after"]


@pytest.mark.parametrize("args, words", [
    (["-pth", "1.5"], "between 0 and 1"),
    (["-eq", "average"], "prune.equalization_criterion = 'average' is not allowed"),
    (["-n", "L1"], "prune.normalizer = 'L1' is not allowed"),
    (["-pg", "0"], "prune.granularity = 0 is not allowed"),
    (["-el", "no_such_layer"], "excluded layer 'no_such_layer'"),
    (["-k", "wrong key"], "wrong encryption key"),
])
def test_bad_input_is_one_error_and_writes_nothing(args, words, tmp_path, capsys, tiny_checkpoint):
    out = tmp_path / "out"
    argv = ["prune", "-m", str(tiny_checkpoint), "-o", str(out), *(["-k", KEY] if "-k" not in args else []), *args]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]
    assert not out.exists()


def test_a_checkpoint_that_is_not_a_detector_is_refused(tmp_path, capsys):
    from effdet_rt.checkpoint import save_checkpoint
    from effdet_rt.checkpoint.keys import ScryptCost

    foreign = save_checkpoint(tmp_path / "classifier.edrt", {"logits/kernel": np.zeros((4, 2), np.float32)}, key=KEY,
                              spec_yaml="model:\n  name: efficientdet-d0\n", cost=ScryptCost(log2_n=10))
    assert run(["prune", "-m", str(foreign), "-o", str(tmp_path / "out"), "-k", KEY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an EfficientDet detector checkpoint" in err[0]
    assert not (tmp_path / "out").exists()


def test_spec_prune_fields_are_the_defaults(tmp_path, tiny_checkpoint):
    """prune.* from the spec (here as overrides): checkpoint, output_path, threshold, criterion, excluded layers."""
    from effdet_rt.checkpoint import read_metadata

    out = tmp_path / "from_spec"
    overrides = [f"prune.checkpoint={tiny_checkpoint}", f"prune.output_path={out}", "prune.threshold=0.9",
                 "prune.equalization_criterion=intersection", "prune.granularity=16", "prune.min_num_filters=16",
                 "prune.normalizer=L2", "prune.excluded_layers=[stem_conv]"]
    assert run(["prune", "-k", KEY, *overrides]) == 0
    meta = read_metadata(out / "model_th=0.9_eq=intersection.edrt", KEY)
    settings = meta["pruning"]
    assert (settings["threshold"], settings["normalizer"], settings["equalization_criterion"]) == (0.9, "L2", "intersection")
    assert settings["excluded_layers"] == ["stem_conv"]
    counts = meta["pruned_filters"]
    assert "stem_conv" not in counts and "stage1_block0_se_expand" not in counts  # stem's group kept whole
    assert counts and all(n % 16 == 0 for n in counts.values())
    assert counts["fpn_cell0_node0_conv"] == counts["p6_from_p5_conv"] < 64  # intersection shrinks the BiFPN


@pytest.fixture(scope="module")
def retrained(pruned, bccd_root, tmp_path_factory) -> dict:
    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer.loop import train

    root = tmp_path_factory.mktemp("retrain")
    records = bccd_val_head(bccd_root, root / "records", 2)
    overrides = [
        f"dataset.train_tfrecords={records}", "dataset.num_classes=4", "model.input_width=128",
        "model.input_height=128", "train.batch_size=2", "train.num_examples_per_epoch=2", "train.num_epochs=1",
        "train.checkpoint_interval=1", "train.image_preview=false", "dataset.loader.shuffle_buffer=2",
        f"train.pruned_model_path={pruned['path']}", "train.l2_weight_decay=0", f"encryption_key={KEY}",
    ]
    messages: list[str] = []
    with steps_run_eagerly():
        checkpoint = train(load_spec(None, overrides), root / "results", None, log=messages.append)
    return {"checkpoint": checkpoint, "messages": messages, "records": records, "root": root}


def test_retraining_starts_from_the_pruned_weights(pruned, retrained):
    from effdet_rt.checkpoint import load_checkpoint

    assert any("loaded pruned model" in m for m in retrained["messages"])
    before = load_checkpoint(pruned["path"], KEY)
    after = load_checkpoint(retrained["checkpoint"], KEY)
    assert after.metadata["step"] == 1 and np.isfinite(after.metadata["history_losses"]).all()
    assert after.metadata["pruned_filters"] == before.metadata["pruned_filters"]
    assert {n: a.shape for n, a in after.weights.items()} == {n: a.shape for n, a in before.weights.items()}
    changed = [n for n in before.weights if not np.array_equal(before.weights[n], after.weights[n])]
    assert changed  # one SGD step moved the (EMA-averaged) weights


def test_retrained_pruned_model_exports_and_builds(retrained, bccd_root):
    """One CLI export (--nms onnx --verify), the other two NMS modes attached to the same converted raw heads."""
    import onnxruntime as ort

    from effdet_rt.data.preprocess import read_image
    from effdet_rt.engines import load
    from effdet_rt.engines.runtime.checkpoint import load_engine
    from effdet_rt.export.exporter import attach_nms, convert_raw_heads, write_onnx
    from effdet_rt.export.heads import raw_heads_model
    from effdet_rt.export.verify import match_detections
    from effdet_rt.export.workflow import export_options_from_spec
    from effdet_rt.spec import load_spec
    from tests.support.infer import bccd_images

    ckpt, root = retrained["checkpoint"], retrained["root"]
    exported = root / "pruned_onnx.onnx"
    assert run(["export", "-m", str(ckpt), "-o", str(exported), "-k", KEY, "--nms", "onnx", "--batch-size", "2",
                "--min-score", "0.01", "--verify"]) == 0

    engine = load_engine(ckpt, key=KEY)
    raw = convert_raw_heads(engine.model, engine.setup, 2, 17)
    paths = {}
    for nms in ("none", "efficient"):
        options = export_options_from_spec(load_spec(None, [f"export.nms={nms}", "export.batch_size=2",
                                                            "export.dynamic_batch_size=false"]).export)
        paths[nms] = write_onnx(attach_nms(raw, engine.setup, options), root / f"pruned_{nms}.onnx")
    images = np.random.default_rng(5).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    tf_logits, tf_codes = (t.numpy() for t in raw_heads_model(engine.model, 5, 3)(images))
    session = ort.InferenceSession(str(paths["none"]), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_codes = session.run(["class_logits", "box_codes"], {"images": images})
    assert tf_logits.shape == (2, 3069, 3)  # 128x128: 9 anchors on 16^2 + 8^2 + 4^2 + 2^2 + 1 cells
    assert np.abs(onnx_logits - tf_logits).max() < 1e-4 and np.abs(onnx_codes - tf_codes).max() < 1e-4

    fp32, int8 = root / "fp32.onnx", root / "int8.onnx"
    assert run(["build", "-m", str(exported), "-o", str(fp32), "--backend", "onnxruntime"]) == 0
    assert run(["build", "-m", str(exported), "-o", str(int8), "--backend", "onnxruntime", "--precision", "int8",
                "--calib-tfrecords", str(retrained["records"]), "--calib-batches", "1", "--calib-batch-size", "2"]) == 0
    pictures = [read_image(p) for p in bccd_images(bccd_root, 2)]
    reference = load(exported).infer(pictures)
    assert reference.num_detections.sum() > 0
    assert match_detections(reference, load(fp32).infer(pictures)).rate >= 0.99
    quantized = load(int8)
    assert quantized.precision == "int8" and quantized.infer(pictures).num_detections.shape == (2,)
    assert run(["deepstream-config", "-m", str(paths["efficient"]), "-o", str(root / "ds"), "--num-classes", "3"]) == 0
