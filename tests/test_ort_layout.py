"""FP32 ONNX Runtime build: BiFPN's weighted fusions rewritten so the blocked (NCHWc) CPU layout keeps them."""

from __future__ import annotations

import numpy as np
import onnx

from tests.support.infer import hand_graph_session

CONV = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}


def _weights(name, seed, shape=(16, 16, 3, 3)):
    import onnx_graphsurgeon as gs

    return gs.Constant(name, np.random.default_rng(seed).normal(0, 0.2, shape).astype(np.float32))


def _blocked_graph(path):
    """The ONNX Runtime CPU graph (ENABLE_ALL) of a model file, as ONNX Runtime saves it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path.with_suffix(".ort.onnx"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, onnx.load(options.optimized_model_filepath).graph


def _convs_taking_a_sum(graph):
    return sum(1 for n in graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"
               and len(n.input) > 3 and n.input[3])


def test_fp32_build_keeps_weighted_sums_in_ort_blocked_layout(tmp_path):
    """BiFPN-style fusion: (y * 0.7) + (maxpool(y) * 1.3) -> conv. As BatchNormalizations the weighted terms stay
    in ONNX Runtime's NCHWc layout; as broadcast Muls each term is reordered to NCHW and the Sum back again."""
    import onnx_graphsurgeon as gs

    from effdet_rt.onnx.ort_layout import sum_weights_as_channel_scales

    rng = np.random.default_rng(3)

    def fusion_graph():
        x = gs.Variable("x", np.float32, ["batch", 16, 8, 8])
        out = gs.Variable("out", np.float32, None)
        graph = gs.Graph(inputs=[x], outputs=[out], opset=17)
        conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
        weights = [gs.Constant(f"k{i}", np.random.default_rng(i).normal(0, 0.2, (16, 16, 3, 3)).astype(np.float32))
                   for i in range(2)]
        (y,) = graph.layer(op="Conv", inputs=[x, weights[0]], outputs=["y"], attrs=conv)
        (pooled,) = graph.layer(op="MaxPool", inputs=[y], outputs=["pooled"], attrs=conv)
        terms = [graph.layer(op="Mul", inputs=[t, gs.Constant(f"w{i}", np.array(w, np.float32))], outputs=[f"t{i}"])[0]
                 for i, (t, w) in enumerate(zip((y, pooled), (0.7, 1.3), strict=True))]
        (fused,) = graph.layer(op="Sum", inputs=terms, outputs=["fused"])
        graph.layer(op="Conv", inputs=[fused, weights[1]], outputs=[out], attrs=conv)
        return graph

    def optimised(graph, name):
        session = hand_graph_session(graph, tmp_path / name)
        reorders = sum(n.op_type.startswith("Reorder") for n in onnx.load(tmp_path / name).graph.node)
        return session.run(None, {"x": feed})[0], reorders

    feed = rng.normal(size=(2, 16, 8, 8)).astype(np.float32)
    expected, reorders_before = optimised(fusion_graph(), "muls.onnx")
    graph = fusion_graph()
    assert sum_weights_as_channel_scales(graph) == 2
    scales = sorted(n.inputs[1].values.tolist() for n in graph.nodes if n.op == "BatchNormalization")
    assert scales == [[np.float32(0.7)] * 16, [np.float32(1.3)] * 16]
    result, reorders_after = optimised(graph, "scales.onnx")
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    assert (reorders_before, reorders_after) == (5, 2)  # before: 2 terms + the Sum back; after: input and output


def _fusion_node_model(path, weights=(0.7, 1.3, 0.4)):
    """A BiFPN fusion node on a dynamic batch: three 16-channel terms at 8x8 (a conv output, the 2x nearest
    upsampling of a stride-2 conv output, another conv output), weighted (or, with weights None, summed and scaled
    by 1 / (3 + eps) as an untrained BiFPN exports), then a conv. The first term is also an output, as BiFPN
    features feed several nodes."""
    import onnx_graphsurgeon as gs

    high = gs.Variable("high", np.float32, ["batch", 16, 8, 8])
    logits, codes = gs.Variable("class_logits", np.float32, None), gs.Variable("box_codes", np.float32, None)
    graph = gs.Graph(inputs=[high], outputs=[logits, codes], opset=17)
    (a,) = graph.layer(op="Conv", inputs=[high, _weights("wa", 0)], outputs=["a"], attrs=CONV)
    (b_low,) = graph.layer(op="Conv", inputs=[high, _weights("wb", 1)], outputs=["b_low"], attrs={**CONV, "strides": [2, 2]})
    scales = gs.Constant("scales", np.array([1, 1, 2, 2], np.float32))
    (b,) = graph.layer(op="Resize", inputs=[b_low, gs.Variable.empty(), scales], outputs=["b"],
                       attrs={"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})
    (c,) = graph.layer(op="Conv", inputs=[high, _weights("wc", 2)], outputs=["c"], attrs=CONV)
    if weights is None:
        (total,) = graph.layer(op="Sum", inputs=[a, b, c], outputs=["total"])
        scale = gs.Constant("k", np.array(1 / 3.0001, np.float32))
        (fused,) = graph.layer(op="Mul", inputs=[total, scale], outputs=["fused"])
    else:
        terms = [graph.layer(op="Mul", inputs=[t, gs.Constant(f"w{i}", np.array(w, np.float32))], outputs=[f"t{i}"])[0]
                 for i, (t, w) in enumerate(zip((a, b, c), weights, strict=True))]
        (fused,) = graph.layer(op="Sum", inputs=terms, outputs=["fused"])
    graph.layer(op="Conv", inputs=[fused, _weights("wd", 3)], outputs=[logits], attrs=CONV)
    graph.layer(op="Identity", inputs=[a], outputs=[codes])
    model = gs.export_onnx(graph)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(batch=2):
    return {"high": np.random.default_rng(7).normal(size=(batch, 16, 8, 8)).astype(np.float32)}


def test_fp32_build_adds_each_fusion_into_a_blocked_convolution(tmp_path):
    """Weighted terms as channel scales, the three-input Sum as two Adds, and the batch named behind the Resize: ONNX
    Runtime then adds both into the convolutions (no Sum or Add, no 5-D Reshape left) and the values are the same."""
    from effdet_rt.engines.build.onnxruntime import optimize_fp32

    source = _fusion_node_model(tmp_path / "node.onnx")
    expected = hand_graph_session(onnx_graph(source)).run(None, _feeds())
    built = optimize_fp32(source, tmp_path / "built.onnx")
    session, blocked = _blocked_graph(built)
    ops = [n.op_type for n in blocked.node]
    assert not {"Sum", "Add", "Reshape", "Mul"} & set(ops)
    assert _convs_taking_a_sum(blocked) == 2
    for got, want in zip(session.run(None, _feeds()), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert session.run(None, _feeds(batch=5))[0].shape == (5, 16, 8, 8)


def test_without_the_batch_behind_the_resize_the_sums_stay_out_of_the_convolutions(tmp_path):
    """What `keep_batch_through_resize` is for: the same rewrites without it leave ONNX Runtime unable to prove the
    Adds' inputs share a shape, so each Add stays a pass of its own on reshaped 5-D views."""
    import onnx_graphsurgeon as gs

    from effdet_rt.onnx.ort_layout import sum_weights_as_channel_scales, sums_as_adds

    graph = onnx_graph(_fusion_node_model(tmp_path / "node.onnx"))
    assert sum_weights_as_channel_scales(graph) == 3 and sums_as_adds(graph) == 1
    model = gs.export_onnx(graph.cleanup().toposort())
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "unnamed.onnx"))
    _, blocked = _blocked_graph(tmp_path / "unnamed.onnx")
    assert [n.op_type for n in blocked.node].count("Add") == 2
    assert _convs_taking_a_sum(blocked) == 0


def test_untrained_fusion_scale_is_spread_over_the_terms(tmp_path):
    """Sum(a, b, c) * k (all fusion weights 1) becomes Sum(a*k, b*k, c*k), then channel scales like a trained one."""

    from effdet_rt.engines.build.onnxruntime import optimize_fp32
    from effdet_rt.onnx.ort_layout import prepare_blocked_layout, spread_sum_scale

    source = _fusion_node_model(tmp_path / "node.onnx", weights=None)
    graph = onnx_graph(source)
    assert spread_sum_scale(graph) == 1
    sums = [n for n in graph.nodes if n.op == "Sum"]
    assert len(sums) == 1 and [t.inputs[0].op for t in sums[0].inputs] == ["Mul"] * 3
    assert sums[0].outputs[0].outputs[0].op == "Conv"  # the Mul after the Sum is gone
    counts = prepare_blocked_layout(onnx_graph(source))
    assert counts == {"spread_sum_scale": 1, "sum_weights_as_channel_scales": 3, "sums_as_adds": 1,
                      "keep_batch_through_resize": 1}

    expected = hand_graph_session(onnx_graph(source)).run(None, _feeds())
    session, blocked = _blocked_graph(optimize_fp32(source, tmp_path / "built.onnx"))
    assert _convs_taking_a_sum(blocked) == 2 and "Mul" not in [n.op_type for n in blocked.node]
    for got, want in zip(session.run(None, _feeds()), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resize_batch_is_named_only_for_batch_first_upsampling():
    import onnx_graphsurgeon as gs

    from effdet_rt.onnx.ort_layout import keep_batch_through_resize

    x = gs.Variable("x", np.float32, ["batch", 8, 4, 4])
    graph = gs.Graph(inputs=[x], outputs=[], opset=17)
    up = graph.layer(op="Resize", inputs=[x, gs.Variable.empty(), gs.Constant("s", np.array([1, 1, 2, 3], np.float32))],
                     outputs=["up"], attrs={"mode": "nearest"})[0]
    odd = graph.layer(op="Resize", inputs=[x, gs.Variable.empty(), gs.Constant("t", np.array([2, 1, 2, 2], np.float32))],
                      outputs=["odd"], attrs={"mode": "nearest"})[0]
    up.dtype = odd.dtype = np.float32
    graph.outputs = [up, odd]
    assert keep_batch_through_resize(graph) == 1
    assert up.shape == ["batch", 8, 8, 12] and odd.shape is None


def onnx_graph(path):
    import onnx_graphsurgeon as gs

    return gs.import_onnx(onnx.load(str(path)))
