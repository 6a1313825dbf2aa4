"""Export: raw heads match TF, --nms onnx equals the TF post-processing, the EfficientNMS graph is well formed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from effdet_rt.cli.main import run
from tests.support.infer import KEY, bccd_images, hand_graph_session, tiny_spec

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)


@pytest.fixture(scope="module")
def setup():
    from effdet_rt.model.factory import setup_from_spec

    return setup_from_spec(tiny_spec())


@pytest.fixture(scope="module")
def raw_proto(setup, tiny_model):
    from effdet_rt.export.exporter import convert_raw_heads

    return convert_raw_heads(tiny_model, setup, None, 17)


@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory, tiny_checkpoint):
    """The CLI export (--nms onnx, static batch 2, with --verify) of the tiny checkpoint."""
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    code = run(["export", "-m", str(tiny_checkpoint), "-o", str(out), "-k", KEY, "--nms", "onnx",
                "--min-score", "0.05", "--batch-size", "2", "--verify"])
    assert code == 0
    return out


def _images(count=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 128, 128, 3)).astype(np.float32)


def test_raw_heads_match_tensorflow(raw_proto, setup, tiny_model):
    import onnxruntime as ort

    from effdet_rt.export.heads import raw_heads_model

    batch = _images()
    tf_logits, tf_codes = (t.numpy() for t in raw_heads_model(tiny_model, setup.num_levels, setup.num_classes)(batch))
    logits, codes = ort.InferenceSession(raw_proto.SerializeToString()).run(None, {"images": batch})
    assert logits.shape == (3, 3069, 3) and codes.shape == (3, 3069, 4)
    assert np.abs(logits - tf_logits).max() <= 1e-4
    assert np.abs(codes - tf_codes).max() <= 1e-4


def test_input_normalisation_is_a_channel_conv_after_the_transpose(raw_proto):
    from effdet_rt.model.efficientnet import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

    first, second = raw_proto.graph.node[:2]
    assert [n.op_type for n in raw_proto.graph.node if "images" in n.input] == ["Transpose"]
    assert first.op_type == "Transpose" and list(first.attribute[0].ints) == [0, 3, 1, 2]
    assert second.op_type == "Conv" and second.name == "input_normalization" and second.input[0] == first.output[0]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in second.attribute}["group"] == 3
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in raw_proto.graph.initializer}
    scale, bias = inits[second.input[1]], inits[second.input[2]]
    np.testing.assert_allclose(scale.ravel(), 1 / np.array(IMAGENET_STD_RGB), rtol=1e-6)
    np.testing.assert_allclose(bias, -np.array(IMAGENET_MEAN_RGB) / np.array(IMAGENET_STD_RGB), rtol=1e-6)


def test_export_drops_identity_reshapes_so_ort_fuses_residual_adds(raw_proto, tmp_path):
    """tf2onnx's (-1, C, 1, 1) Reshapes after each squeeze-excite pool are gone, the batch dimension keeps its
    name through shape inference, and ONNX Runtime folds every residual Add of the backbone into a convolution."""
    import onnxruntime as ort

    from effdet_rt.onnx.graph import _reshape_keeps_shape

    assert _reshape_keeps_shape([None, 32, 1, 1], [-1, 32, 1, 1])
    assert _reshape_keeps_shape([None, 32, 4, 4], [0, 32, -1, 4])
    assert not _reshape_keeps_shape([None, 32, 1, 1], [-1, 1, 1, 32])
    assert not _reshape_keeps_shape([None, None, 1, 1], [-1, 32, 1, 1])

    inferred = onnx.shape_inference.infer_shapes(raw_proto)
    producers = {out: n for n in inferred.graph.node for out in n.output}
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    reshape_sources = [producers[n.input[0]].op_type for n in raw_proto.graph.node if n.op_type == "Reshape"]
    # only the heads' (N, H, W, A*C) -> (N, HWA, C) flattens are left, none after the squeeze-excite pool or swish
    assert len(reshape_sources) == 10 and set(reshape_sources) <= {"Transpose", "Conv"}
    residual_adds = [n for n in inferred.graph.node if n.op_type == "Add" and n.name.endswith("_add/add")]
    assert len(residual_adds) == 9
    assert all(dims[i][0] == "batch" for add in residual_adds for i in add.input)

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(raw_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    assert [n.name for n in optimized.graph.node if n.op_type == "Add" and n.name.endswith("_add/add")] == []


def test_fusion_normalisation_is_folded_into_the_input_weights():
    import onnx_graphsurgeon as gs

    from effdet_rt.onnx.graph import fold_scale_into_weighted_sums

    def fusion_graph():
        a, b, c = (gs.Variable(n, np.float32, [1, 8, 4, 4]) for n in "abc")
        out = gs.Variable("out", np.float32, [1, 8, 4, 4])
        graph = gs.Graph(inputs=[a, b, c], outputs=[out], opset=17)
        terms = [graph.layer(op="Mul", inputs=[x, gs.Constant(f"w{i}", np.array(w, np.float32))], outputs=[f"t{i}"])[0]
                 for i, (x, w) in enumerate(zip((a, b), (0.7, 1.3), strict=True))]
        total = graph.layer(op="Sum", inputs=terms, outputs=["total"])[0]
        fused = graph.layer(op="Mul", inputs=[total, gs.Constant("k", np.array(1 / 2.0001, np.float32))], outputs=["fused"])[0]
        graph.layer(op="Add", inputs=[fused, c], outputs=[out])  # c: a third input the rewrite must not touch
        return graph

    feeds = {n: np.random.default_rng(i).normal(size=(1, 8, 4, 4)).astype(np.float32) for i, n in enumerate("abc")}
    def run_graph(graph):
        return hand_graph_session(graph).run(None, feeds)[0]

    expected = run_graph(fusion_graph())
    graph = fusion_graph()
    assert fold_scale_into_weighted_sums(graph) == 1
    assert [n.op for n in graph.nodes] == ["Mul", "Mul", "Sum", "Add"]
    weights = sorted(n.inputs[1].values.item() for n in graph.nodes if n.op == "Mul")
    np.testing.assert_allclose(weights, [0.7 / 2.0001, 1.3 / 2.0001], rtol=1e-6)
    np.testing.assert_allclose(run_graph(graph), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(expected, (0.7 * feeds["a"] + 1.3 * feeds["b"]) / 2.0001 + feeds["c"], rtol=1e-5)

    shared = fusion_graph()  # a weighted term that is also used elsewhere cannot take the scale
    shared.outputs.append(next(n for n in shared.nodes if n.op == "Mul").outputs[0])
    assert fold_scale_into_weighted_sums(shared) == 0


def test_dynamic_engine_micro_batches_give_the_same_detections(raw_proto, setup, tmp_path):
    from effdet_rt.engines.runtime.onnxruntime import OnnxRuntimeEngine
    from effdet_rt.export.exporter import ExportOptions, attach_nms
    from effdet_rt.model.postprocess import NmsConfig

    path = tmp_path / "dynamic.onnx"
    options = ExportOptions(nms="onnx", nms_settings=NmsConfig(score_threshold=0.05))
    path.write_bytes(attach_nms(raw_proto, setup, options).SerializeToString())
    batch = _images(5, seed=3)
    one, whole = OnnxRuntimeEngine(path, micro_batch=1), OnnxRuntimeEngine(path, micro_batch=8)
    assert one.describe()["micro_batch"] == 1 and whole.describe()["micro_batch"] == 8
    split, together = one.run(batch), whole.run(batch)  # 5 runs of 1 vs one run of 5
    assert len(split) == 5 and split.num_detections.tolist() == together.num_detections.tolist()
    assert split.num_detections.sum() > 0
    np.testing.assert_array_equal(split.classes, together.classes)
    np.testing.assert_allclose(split.boxes, together.boxes, atol=1e-3)
    np.testing.assert_allclose(split.scores, together.scores, atol=1e-5)


def test_default_micro_batch_keeps_about_2_mib_of_activations_per_run(raw_proto, setup, tmp_path):
    from effdet_rt.engines.runtime.onnxruntime import OnnxRuntimeEngine, cpu_micro_batch

    assert [cpu_micro_batch((s, s), "fp32") for s in (1024, 640, 512, 384, 256, 128)] == [1, 1, 2, 3, 8, 32]
    assert [cpu_micro_batch((s, s), "int8") for s in (1024, 512, 256)] == [2, 8, 32]
    from effdet_rt.export.exporter import ExportOptions, attach_nms

    path = tmp_path / "dynamic.onnx"
    path.write_bytes(attach_nms(raw_proto, setup, ExportOptions(nms="onnx")).SerializeToString())
    assert OnnxRuntimeEngine(path).describe()["micro_batch"] == 32  # the tiny 128x128 FP32 model


def test_two_stage_top_pairs_equal_one_topk_over_all_pairs():
    """NMS step 1 takes the best k of each class, then the best k of those: the same pairs, logits and order as one
    TopK over all (anchor, class) pairs, also when k is below the anchor count (the case D0 512 is in)."""
    import onnx_graphsurgeon as gs

    from effdet_rt.onnx.nms import _Builder, _top_pairs

    anchors, classes, top = 200, 3, 50
    logits = gs.Variable("logits", np.float32, ["batch", anchors, classes])
    graph = gs.Graph(inputs=[logits], opset=17)
    top_logits, top_index = _top_pairs(_Builder(graph, "nms"), logits, anchors, classes, top)
    top_logits.dtype, top_index.dtype = np.float32, np.int64
    graph.outputs = [top_logits, top_index]
    x = np.random.default_rng(5).normal(size=(2, anchors, classes)).astype(np.float32)
    x[1, :, 2] += 3.0  # one class dominates: most of image 1's top pairs come from class 2
    got_logits, got_index = hand_graph_session(graph).run(None, {"logits": x})
    flat = x.reshape(2, -1)
    want_index = np.argsort(-flat, axis=1, kind="stable")[:, :top]
    np.testing.assert_array_equal(got_index, want_index)
    np.testing.assert_array_equal(got_logits, np.take_along_axis(flat, want_index, axis=1))
    assert (got_index[1] % classes == 2).sum() == top


@pytest.mark.parametrize("pre_nms_top_k", [5000, 1000])
def test_onnx_nms_subgraph_equals_tensorflow_postprocess(pre_nms_top_k):
    """The standard-op NMS graph on its own, fed random heads, against effdet_rt.model.postprocess; with 1000 the
    per-class first stage of the top-k keeps fewer than the 3,069 anchors."""
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    from effdet_rt.detections import Detections
    from effdet_rt.export.verify import match_detections
    from effdet_rt.model.anchors import generate_anchors
    from effdet_rt.model.postprocess import NmsConfig, postprocess
    from effdet_rt.onnx.graph import clean_graph
    from effdet_rt.onnx.nms import add_onnx_nms

    anchors = generate_anchors((128, 128))
    count, classes = len(anchors), 3
    logits_in = gs.Variable("in_logits", np.float32, ["batch", count, classes])
    codes_in = gs.Variable("in_codes", np.float32, ["batch", count, 4])
    logits = gs.Variable("class_logits", np.float32, ["batch", count, classes])
    codes = gs.Variable("box_codes", np.float32, ["batch", count, 4])
    graph = gs.Graph(
        nodes=[gs.Node("Identity", inputs=[logits_in], outputs=[logits]), gs.Node("Identity", inputs=[codes_in], outputs=[codes])],
        inputs=[logits_in, codes_in], outputs=[logits, codes], opset=17,
    )
    config = NmsConfig(score_threshold=0.05, pre_nms_top_k=pre_nms_top_k)
    add_onnx_nms(graph, anchors, classes, config, "batch")
    model = gs.export_onnx(clean_graph(graph))
    model.ir_version = 8
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    x_logits = rng.normal(-3, 2, (3, count, classes)).astype(np.float32)
    x_codes = rng.normal(0, 0.3, (3, count, 4)).astype(np.float32)
    num, boxes, scores, cls = ort.InferenceSession(model.SerializeToString()).run(None, {"in_logits": x_logits, "in_codes": x_codes})
    tf_out = [t.numpy() for t in postprocess(x_logits, x_codes, anchors, config)]
    assert num[:, 0].tolist() == tf_out[3].tolist() == [100, 100, 100]
    report = match_detections(Detections(*tf_out), Detections(boxes, scores, cls, num[:, 0]))
    assert report.matched == report.reference == 300


def test_cli_export_onnx_matches_checkpoint_backend(exported_onnx, bccd_root, tiny_checkpoint):
    from effdet_rt.data.preprocess import read_image
    from effdet_rt.engines import load
    from effdet_rt.export.verify import match_detections
    from effdet_rt.export.verify_run import comparable
    from effdet_rt.onnx.graph import read_metadata

    proto = onnx.load(str(exported_onnx))
    assert [o.name for o in proto.graph.output] == ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    meta = read_metadata(proto)
    assert meta["nms"] == "onnx" and meta["input_size"] == [128, 128] and meta["num_classes"] == 3
    # square crops: the padding under a 4:3 image gives many anchors identical features, hence exactly tied scores,
    # which TensorFlow's top-k and ONNX Runtime's TopK may break differently (AVX2 did, on 4 of 400 boxes)
    images = [read_image(p)[:, :480] for p in bccd_images(bccd_root, 4)]
    onnx_engine = load(exported_onnx)
    checkpoint = load(tiny_checkpoint, key=KEY)
    from effdet_rt.model.postprocess import NmsConfig

    checkpoint.nms_config = NmsConfig(score_threshold=0.05)
    from effdet_rt.engines.runtime.checkpoint import KerasEngine

    reference = KerasEngine(checkpoint.model, checkpoint.setup, NmsConfig(score_threshold=0.05))
    ours, theirs = onnx_engine.infer(images), reference.infer(images)
    assert theirs.num_detections.sum() > 20
    assert theirs.num_detections.tolist() == ours.num_detections.tolist() == [100] * 4
    # the tiny random network hits the 100-box cap: boxes scoring within 1e-4 of the cut are near-ties whose order
    # float rounding decides. It has no margin either: on AVX2 one image's scores moved by up to 1.5e-4 between
    # TensorFlow and ONNX Runtime (AVX-512: within 1e-4), so scores are held to 2e-4
    report = match_detections(*comparable(theirs, ours, 100), score_tolerance=2e-4)
    assert report.reference > 380 and report.rate >= 0.99
    # boxes are in original-image pixels (the crops are 480x480)
    assert ours.boxes[..., 2].max() > 128 and ours.boxes[..., 2].max() <= 480


def test_efficient_nms_graph(raw_proto, setup):
    from effdet_rt.export.exporter import ExportOptions, attach_nms
    from effdet_rt.model.postprocess import NmsConfig
    from effdet_rt.onnx.nms import anchors_center_size_xfirst

    proto = attach_nms(raw_proto, setup, ExportOptions(nms="efficient", nms_settings=NmsConfig(0.3, 0.6, 50)))
    onnx.checker.check_model(proto)
    (node,) = [n for n in proto.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert node.domain == "trt.plugins"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "plugin_version": b"1", "background_class": -1, "max_output_boxes": 50, "score_threshold": pytest.approx(0.3),
        "iou_threshold": pytest.approx(0.6), "score_activation": 1, "class_agnostic": 0, "box_coding": 1,
    }
    outputs = {o.name: o for o in proto.graph.output}
    assert list(outputs) == ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    elem = {name: o.type.tensor_type.elem_type for name, o in outputs.items()}
    assert elem == {"num_detections": onnx.TensorProto.INT32, "detection_boxes": onnx.TensorProto.FLOAT,
                    "detection_scores": onnx.TensorProto.FLOAT, "detection_classes": onnx.TensorProto.INT32}
    shapes = {name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for name, o in outputs.items()}
    assert shapes == {"num_detections": ["batch", 1], "detection_boxes": ["batch", 50, 4],
                      "detection_scores": ["batch", 50], "detection_classes": ["batch", 50]}
    # third input: the anchors as (1, A, 4) x-first centre-size constants
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    anchors = inits[node.input[2]]
    np.testing.assert_allclose(anchors[0], anchors_center_size_xfirst(setup.anchors()))
    assert anchors[0, 0].tolist() == [4.0, 4.0, 32.0, 32.0]


def test_static_batch_engine_splits_and_pads(exported_onnx):
    from effdet_rt.engines import load

    engine = load(exported_onnx)
    assert engine.max_batch_size == 2 and engine.input_size == (128, 128)
    batch = _images(3)
    together = engine.run_scaled(batch, np.ones(3, np.float32), [(128, 128)] * 3)  # runs 2 + 1 (padded to 2)
    alone = engine.run_scaled(batch[2:], np.ones(1, np.float32), [(128, 128)])
    assert len(together) == 3
    np.testing.assert_array_equal(together.boxes[2], alone.boxes[0])
    np.testing.assert_array_equal(together.classes[2], alone.classes[0])


def test_verification_failure_raises_when_strict_and_warns_in_the_demo():
    from effdet_rt.errors import UserError
    from effdet_rt.export.verify import MatchReport
    from effdet_rt.export.verify_run import onnx_report, settle_verification

    good = onnx_report(5e-5, MatchReport(10, 10, 10), 4)
    off = onnx_report(2.03e-4, MatchReport(396, 396, 396), 4)
    logged: list[str] = []
    settle_verification(good, True, logged.append)
    settle_verification(good, False, logged.append)
    assert logged == []
    with pytest.raises(UserError, match=r"export verification failed: .*2\.03e-04 \(limit 1e-04\)"):
        settle_verification(off, True, logged.append)
    settle_verification(off, False, logged.append)
    assert len(logged) == 1 and logged[0].startswith("warning: export verification is outside its limits")
    # a trained D0 at 512: the graph matches TF to 6e-6, ORT's NCHWc kernels alone move the heads by 2.8e-4
    trained = onnx_report(5.72e-6, MatchReport(394, 394, 394), 4, layout_kernels_diff=2.76e-4)
    assert trained.passed()
    assert "= 5.72e-06 (limit 1e-04), 2.76e-04 with ORT's CPU layout kernels;" in trained.summary()


def test_one_verify_report_writes_each_paths_line():
    """The ONNX detector, the converted (.tflite) detector and the classifier share one VerifyReport; each path's
    line and verdict are pinned here, as the CLI prints them."""
    from effdet_rt.classification.export import probability_report
    from effdet_rt.export.converted import converted_report
    from effdet_rt.export.verify import MatchReport
    from effdet_rt.export.verify_run import onnx_report

    onnx = onnx_report(2.86e-6, MatchReport(394, 391, 394), 4, 6.03e-5)
    assert onnx.summary() == (
        "verify on 4 images: raw heads max |TF - ONNX| = 2.86e-06 (limit 1e-04), 6.03e-05 with ORT's CPU layout "
        "kernels; detections matched 391/394 = 99.2% (same class, IoU >= 0.99, scores >= 0.05 or each image's best "
        "10, clear of the top-k cut; limit 99%)")
    assert onnx.passed() and not onnx_report(2.86e-6, MatchReport(394, 390, 394), 4).passed()
    tflite = converted_report(3.7e-6, MatchReport(0, 0, 0), 2, "LiteRT")
    assert tflite.summary() == (
        "verify on 2 images: raw heads max |TF - LiteRT| / largest = 3.70e-06 (limit 1e-04); detections matched "
        "0/0 = 100.0% (same class, IoU >= 0.99, scores >= 0.05 clear of the top-k cut; limit 99%)")
    assert tflite.passed() and not converted_report(1.1e-4, MatchReport(3, 3, 3), 2, "LiteRT").passed()
    classifier = probability_report(8, 1.6e-6, 7, "LiteRT")
    assert classifier.summary() == ("verify: 8 images, max |TF - LiteRT| probability = 1.600e-06 (limit 1e-04), "
                                    "top-1 agrees on 7/8")
    assert classifier.passed() and classifier.detections is None
    assert not probability_report(8, 1.01e-4, 8).passed()


def test_verify_runs_a_fixed_batch_graph_through_the_runners_padding(setup, tiny_model):
    """`--verify` (detector heads and classifier probabilities alike) runs the graph not yet written on the ONNX
    Runtime runner, whose padding to a fixed batch is the engines': 3 images through a batch-2 graph are the
    batches [0, 1] and [2, zeros], cut back to 3 rows, at the portable optimisation level."""
    import onnxruntime as ort

    from effdet_rt.export.exporter import convert_raw_heads
    from effdet_rt.export.verify_run import exported_runner

    fixed = convert_raw_heads(tiny_model, setup, 2, 17)
    images = _images(3, seed=4)
    runner = exported_runner(fixed)
    assert runner.static_batch == 2
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(fixed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    padded = np.concatenate([images, np.zeros_like(images[:1])])
    expected = [np.concatenate(parts) for parts in zip(*(session.run(None, {"images": padded[i:i + 2]})
                                                         for i in (0, 2)), strict=True)]
    outputs = runner.run(images)
    for name, want in zip(("class_logits", "box_codes"), expected, strict=True):
        assert outputs[name].shape == (3, *want.shape[1:])
        np.testing.assert_allclose(outputs[name], want[:3], rtol=0, atol=1e-6)


def test_verify_export_reports_both_optimisation_levels(raw_proto, setup, tiny_model):
    from effdet_rt.engines.runtime.checkpoint import KerasEngine
    from effdet_rt.export.exporter import ExportOptions, attach_nms
    from effdet_rt.export.verify_run import verify_export
    from effdet_rt.model.postprocess import NmsConfig

    settings = NmsConfig(score_threshold=0.05)
    nms = attach_nms(raw_proto, setup, ExportOptions(nms="onnx", nms_settings=settings))
    report = verify_export(KerasEngine(tiny_model, setup, settings), raw_proto, nms, _images(2))
    assert report.passed() and report.detections.match.rate == 1.0
    assert report.value("raw heads") <= 1e-5  # the graph's own math: float rounding only
    assert report.value("layout kernels") <= 1e-4


def test_export_bad_inputs(tmp_path, capsys, tiny_checkpoint):
    not_ckpt = tmp_path / "x.edrt"
    not_ckpt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    code = run(["export", "-m", str(not_ckpt), "-o", str(tmp_path / "m.onnx"), "-k", KEY])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "x.edrt" in err
    code = run(["export", "-m", str(tiny_checkpoint), "-o", str(tmp_path / "m.txt"), "-k", KEY])
    assert code == 2 and "*.onnx" in capsys.readouterr().err
    code = run(["export", "-m", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx"), "-k", KEY, "--nms", "fast"])
    assert code == 2 and "export.nms = 'fast' is not allowed: must be one of 'efficient', 'onnx', 'none'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def bccd_val_tfrecords(tmp_path_factory, bccd_root):
    out = tmp_path_factory.mktemp("bccd_val")
    assert run(["dataset-convert", "--voc", str(bccd_root), "--split", "val", "-o", str(out), "-s", "2"]) == 0
    return out


# INT8 vs FP32 detections (same class, IoU >= 0.5) on the tiny random network: 100 boxes per image, most of them
# weak near-tied scores, so a harsh check (a trained model matches far more). Measured 73.5% on an AVX-512 VNNI
# EPYC, with TensorFlow's oneDNN capped at AVX2 and uncapped alike. With the 7-bit weights ONNX Runtime's
# integer sums are exact with or without VNNI (no 16-bit saturation), so the INT8 outputs do not depend on the
# kernel set; the bound leaves 13 points for float rounding in the FP32 reference and the dequantised tails.
INT8_MIN_MATCH_RATE = 0.60


def conv_weight_ranges(model) -> set[int]:
    """The largest |quantized weight| of each Conv whose weights come through DequantizeLinear, as a set."""
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    ranges = set()
    for node in model.graph.node:
        weight = producers.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in initializers:
            ranges.add(int(np.abs(initializers[weight.input[0]].astype(np.int32)).max()))
    return ranges


def test_build_onnxruntime_fp32_and_int8(exported_onnx, bccd_val_tfrecords, bccd_root, tmp_path):
    from effdet_rt.data.preprocess import read_image
    from effdet_rt.engines import load
    from effdet_rt.export.verify import match_detections
    from effdet_rt.onnx.graph import read_metadata

    fp32_path, int8_path = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    assert run(["build", "-m", str(exported_onnx), "-o", str(fp32_path), "--backend", "onnxruntime"]) == 0
    assert run(["build", "-m", str(exported_onnx), "-o", str(int8_path), "--backend", "onnxruntime", "--precision", "int8",
                "--calib-tfrecords", str(bccd_val_tfrecords / "val-*.tfrecord"), "--calib-batches", "3",
                "--calib-batch-size", "2"]) == 0
    int8 = onnx.load(str(int8_path))
    producers = {o: n for n in int8.graph.node for o in n.output}
    convs = [n for n in int8.graph.node if n.op_type == "Conv" and n.name != "input_normalization"]
    assert len(convs) > 100
    normalization = next(n for n in int8.graph.node if n.name == "input_normalization")
    assert producers[normalization.input[0]].op_type == "Transpose"  # float: quantizing starts at the stem conv
    for conv in convs:  # Q/DQ around every conv: activations and weights both come through DequantizeLinear
        assert producers[conv.input[0]].op_type == "DequantizeLinear", conv.name
        assert producers[conv.input[1]].op_type == "DequantizeLinear", conv.name
    meta = read_metadata(int8)
    assert meta["precision"] == "int8" and meta["calibration_batches"] == 3 and meta["int8_profile"] == "onnxruntime"
    # 7-bit weights: ONNX Runtime's UINT8 x INT8 kernels on CPUs without VNNI sum pairs in 16 bits (255*64*2 fits)
    assert meta["int8_weight_bits"] == 7 and conv_weight_ranges(int8) == {64}
    zero_points = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer if i.name.endswith("zero_point")}
    assert {z.dtype for z in zero_points.values()} >= {np.dtype(np.uint8)}  # CPU layout: UINT8 activations
    # BiFPN's fusion Sums as chains of quantized Adds (QLinearAdd in ONNX Runtime), not float Sums between Q/DQ
    fusion_adds = [n for n in int8.graph.node if n.op_type == "Add" and "_fuse/AddN" in n.name]
    assert "Sum" not in {n.op_type for n in int8.graph.node} and len(fusion_adds) == 15 + 2 * 9  # 2- and 3-input nodes
    assert all(producers[i].op_type == "DequantizeLinear" for add in fusion_adds for i in add.input)

    trt_path = tmp_path / "int8_trt.onnx"
    assert run(["build", "-m", str(exported_onnx), "-o", str(trt_path), "--backend", "onnxruntime", "--precision", "int8",
                "--int8-profile", "tensorrt", "--calib-tfrecords", str(bccd_val_tfrecords / "val-*.tfrecord"),
                "--calib-batches", "2", "--calib-batch-size", "2"]) == 0
    trt_qdq = onnx.load(str(trt_path))
    trt_zero_points = [onnx.numpy_helper.to_array(i) for i in trt_qdq.graph.initializer if i.name.endswith("zero_point")]
    # symmetric INT8 activations and weights (int32 bias zero points are 0 too); no UINT8 anywhere
    assert trt_zero_points and all(z.dtype in (np.int8, np.int32) and not z.any() for z in trt_zero_points)
    assert read_metadata(trt_qdq)["int8_weight_bits"] == 8 and conv_weight_ranges(trt_qdq) == {127}
    assert [n.op_type for n in trt_qdq.graph.node].count("Sum") == 24  # TensorRT fuses them itself: left as exported
    assert int8_path.stat().st_size < 0.45 * exported_onnx.stat().st_size

    images = [read_image(p) for p in bccd_images(bccd_root, 4)]
    source, fp32, q8 = (load(p) for p in (exported_onnx, fp32_path, int8_path))
    reference = source.infer(images)
    # fused graph, same maths: only near-tied scores at the 100-box cut may swap
    assert match_detections(reference, fp32.infer(images)).rate >= 0.99
    int8_match = match_detections(reference, q8.infer(images), iou_threshold=0.5, score_tolerance=None)
    print(f"INT8 vs FP32 detections matched (same class, IoU >= 0.5): {int8_match.rate:.1%}")
    assert q8.precision == "int8" and int8_match.reference == 400
    assert int8_match.rate >= INT8_MIN_MATCH_RATE


def test_build_bad_inputs(exported_onnx, tmp_path, capsys):
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_text("hello")
    assert run(["build", "-m", str(not_onnx), "-o", str(tmp_path / "o.onnx"), "--backend", "onnxruntime"]) == 2
    assert "fake.onnx: not an ONNX model" in capsys.readouterr().err

    import onnx.helper as h

    x = h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 8, 8, 3])
    y = h.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 8, 8, 3])
    foreign = h.make_model(h.make_graph([h.make_node("Relu", ["images"], ["scores"])], "g", [x], [y]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    assert run(["build", "-m", str(tmp_path / "foreign.onnx"), "-o", str(tmp_path / "o.onnx"), "--backend", "onnxruntime"]) == 2
    assert "are not an effdet-rt detector's" in capsys.readouterr().err

    code = run(["build", "-m", str(exported_onnx), "-o", str(tmp_path / "o.onnx"), "--backend", "onnxruntime",
                "--precision", "int8", "--calib-tfrecords", str(tmp_path / "none-*.tfrecord")])
    assert code == 2 and "no TFRecord files match this glob" in capsys.readouterr().err
    code = run(["build", "-m", str(exported_onnx), "-o", str(tmp_path / "o.onnx"), "--backend", "onnxruntime", "--precision", "fp16"])
    assert code == 2 and "fp16 engines need --backend tensorrt" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
def test_nms_none_through_host_nms_equals_nms_onnx_and_efficient_verifies_its_own_heads(exported_onnx, bccd_root, tmp_path, capsys, tiny_checkpoint):
    """`--nms none` run by the ONNX Runtime engine (NMS on the host) gives the `--nms onnx` export's detections;
    `--nms efficient --verify` checks the heads cut out of the file it writes, and says how it checked NMS."""
    import onnxruntime as ort

    from effdet_rt.data.preprocess import read_image
    from effdet_rt.engines import load
    from effdet_rt.export.written_heads import written_heads

    none_path, efficient_path = tmp_path / "none.onnx", tmp_path / "efficient.onnx"
    common = ["-m", str(tiny_checkpoint), "-k", KEY, "--min-score", "0.05", "--batch-size", "2"]
    assert run(["export", *common, "-o", str(none_path), "--nms", "none"]) == 0
    capsys.readouterr()
    assert run(["export", *common, "-o", str(efficient_path), "--nms", "efficient", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "verify on 2 images" in printed and "raw heads compared are those of the file written" in printed

    assert [o.name for o in onnx.load(str(none_path)).graph.output] == ["class_logits", "box_codes"]
    images = [read_image(p)[:, :480] for p in bccd_images(bccd_root, 4)]
    host, graph = load(none_path).infer(images), load(exported_onnx).infer(images)
    assert graph.num_detections.tolist() == host.num_detections.tolist() == [100] * 4
    np.testing.assert_array_equal(host.classes, graph.classes)
    np.testing.assert_allclose(host.scores, graph.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(host.boxes, graph.boxes, rtol=0, atol=1e-3)  # pixels of a 480x480 image

    efficient = onnx.load(str(efficient_path))
    assert [n.op_type for n in efficient.graph.node].count("EfficientNMS_TRT") == 1
    heads = written_heads(efficient)
    assert "EfficientNMS_TRT" not in {n.op_type for n in heads.graph.node}
    batch = _images(2)
    run_heads = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": batch})
                 for p in (heads, onnx.load(str(none_path)))]
    for ours, raw in zip(*run_heads, strict=True):
        np.testing.assert_array_equal(ours, raw)  # the same network and weights as the raw-heads export
