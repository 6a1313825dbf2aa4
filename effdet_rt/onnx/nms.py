"""NMS appended to the raw-heads ONNX graph with onnx-graphsurgeon.

Both variants produce the same four outputs:
  num_detections int32 [N, 1], detection_boxes float32 [N, K, 4] (x1, y1, x2, y2, model-input pixels),
  detection_scores float32 [N, K], detection_classes int32 [N, K] (0-based class index; category id = index + 1).

`efficient`: one EfficientNMS_TRT plugin node (TensorRT, DeepStream) decoding the boxes itself from the anchors.
The node is put in the `trt.plugins` domain: TensorRT's ONNX parser imports any op it has no importer for from the
plugin registry by op_type, whatever the domain, and a custom domain keeps the model valid for onnx.checker.
`onnx`: standard ops only (TopK, NonMaxSuppression, ScatterND, ...) for ONNX Runtime and TensorRT >= 8.6, computing
exactly what effdet_rt.model.postprocess computes in TensorFlow.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from effdet_rt.model.boxes import center_size
from effdet_rt.model.postprocess import NmsConfig
from effdet_rt.onnx.graph import constant
from effdet_rt.onnx.names import BOX_CODES, CLASS_LOGITS, OUTPUT_NAMES

PLUGIN_DOMAIN = "trt.plugins"
X_FIRST = np.array([1, 0, 3, 2], np.int64)  # (ty, tx, th, tw) -> (tx, ty, tw, th)


def anchors_center_size_xfirst(anchors_yxyx: np.ndarray) -> np.ndarray:
    """(A, 4) y1, x1, y2, x2 -> (A, 4) x_centre, y_centre, width, height."""
    y_centre, x_centre, height, width = center_size(anchors_yxyx.astype(np.float64))
    return np.stack([x_centre, y_centre, width, height], axis=1).astype(np.float32)


def _outputs(batch: int | str, k: int) -> list[gs.Variable]:
    return [
        gs.Variable(OUTPUT_NAMES[0], np.int32, [batch, 1]),
        gs.Variable(OUTPUT_NAMES[1], np.float32, [batch, k, 4]),
        gs.Variable(OUTPUT_NAMES[2], np.float32, [batch, k]),
        gs.Variable(OUTPUT_NAMES[3], np.int32, [batch, k]),
    ]


def _heads(graph: gs.Graph) -> tuple[gs.Variable, gs.Variable]:
    tensors = {t.name: t for t in graph.outputs}
    return tensors[CLASS_LOGITS], tensors[BOX_CODES]


def add_efficient_nms(graph: gs.Graph, anchors: np.ndarray, settings: NmsConfig, batch: int | str) -> gs.Graph:
    logits, codes = _heads(graph)
    codes_xy = graph.layer(op="Gather", inputs=[codes, constant("xfirst_order", X_FIRST)], outputs=["box_codes_xfirst"], attrs={"axis": 2})[0]
    anchors_const = constant("anchors_center_size", anchors_center_size_xfirst(anchors)[None])
    outputs = _outputs(batch, settings.max_detections)
    graph.nodes.append(
        gs.Node(
            op="EfficientNMS_TRT",
            name="efficient_nms",
            domain=PLUGIN_DOMAIN,
            inputs=[codes_xy, logits, anchors_const],
            outputs=outputs,
            attrs={
                "plugin_version": "1",
                "background_class": -1,
                "max_output_boxes": int(settings.max_detections),
                "score_threshold": float(settings.score_threshold),
                "iou_threshold": float(settings.iou_threshold),
                "score_activation": 1,
                "class_agnostic": 0,
                "box_coding": 1,
            },
        )
    )
    graph.outputs = outputs
    return graph


class _Builder:
    """Small helper to add single-output ONNX nodes with readable names."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.graph, self.prefix, self.count = graph, prefix, 0

    def __call__(self, op: str, *inputs, attrs: dict | None = None, outputs: int = 1, dtype=None):
        self.count += 1
        names = [f"{self.prefix}/{op.lower()}_{self.count}_{i}" for i in range(outputs)]
        result = self.graph.layer(op=op, name=f"{self.prefix}/{op}_{self.count}", inputs=list(inputs), outputs=names, attrs=attrs or {})
        if dtype is not None:
            for tensor in result:
                tensor.dtype = dtype
        return result if outputs > 1 else result[0]

    def const(self, value, dtype) -> gs.Constant:
        self.count += 1
        return constant(f"{self.prefix}/const_{self.count}", np.asarray(value, dtype))


def _top_pairs(b: _Builder, logits: gs.Variable, num_anchors: int, num_classes: int, top: int):
    """The ``top`` largest logits of (N, A, C) over all (anchor, class) pairs, descending, with their flat indices
    anchor * C + class.

    Done in two exact stages: the best ``top`` anchors of each class, then the best ``top`` of those C * top
    candidates (every pair of the overall top k is in its own class's top k). One TopK over all A * C pairs is
    what the TF post-processing does, but ONNX Runtime runs a TopK that picks 5,000 of ~150,000 with a heap on one
    thread, which is slow at that ratio; per class, and on the short second stage, it selects in linear time.
    """
    i64 = np.int64
    per_class = min(top, num_anchors)
    by_class = b("Transpose", logits, attrs={"perm": [0, 2, 1]})  # (N, C, A)
    class_top, anchor_index = b("TopK", by_class, b.const([per_class], i64),
                                attrs={"axis": -1, "largest": 1, "sorted": 0}, outputs=2)
    class_column = b.const(np.arange(num_classes, dtype=i64).reshape(1, num_classes, 1), i64)
    pair_index = b("Add", b("Mul", anchor_index, b.const(num_classes, i64)), class_column)
    candidates = b("Reshape", class_top, b.const([0, -1], i64))
    candidate_index = b("Reshape", pair_index, b.const([0, -1], i64))
    top_logits, position = b("TopK", candidates, b.const([top], i64), attrs={"axis": -1, "largest": 1, "sorted": 1},
                             outputs=2)
    return top_logits, b("GatherElements", candidate_index, position, attrs={"axis": 1})


def add_onnx_nms(graph: gs.Graph, anchors: np.ndarray, num_classes: int, settings: NmsConfig, batch: int | str) -> gs.Graph:
    logits, codes = _heads(graph)
    b = _Builder(graph, "nms")
    i64 = np.int64
    num_anchors = int(anchors.shape[0])
    top = min(settings.pre_nms_top_k, num_anchors * num_classes)
    k = min(settings.max_detections, top * num_classes)

    # 1. top-k (anchor, class) pairs by logit, as the TensorFlow post-processing does
    top_logits, top_index = _top_pairs(b, logits, num_anchors, num_classes, top)
    classes_c = b.const(num_classes, i64)
    anchor_index = b("Div", top_index, classes_c)
    class_index = b("Mod", top_index, classes_c)

    # 2. decode the chosen boxes (x-first, centre-size) -> x1, y1, x2, y2
    chosen_codes = b("GatherND", codes, b("Unsqueeze", anchor_index, b.const([-1], i64)), attrs={"batch_dims": 1})
    chosen_codes = b("Gather", chosen_codes, b.const(X_FIRST, i64), attrs={"axis": 2})
    chosen_anchors = b("Gather", b.const(anchors_center_size_xfirst(anchors), np.float32), anchor_index, attrs={"axis": 0})
    code_centre, code_size = b("Split", chosen_codes, b.const([2, 2], i64), attrs={"axis": 2}, outputs=2)
    anchor_centre, anchor_size = b("Split", chosen_anchors, b.const([2, 2], i64), attrs={"axis": 2}, outputs=2)
    centre = b("Add", b("Mul", code_centre, anchor_size), anchor_centre)
    half = b("Mul", b("Mul", b("Exp", code_size), anchor_size), b.const(0.5, np.float32))
    boxes = b("Concat", b("Sub", centre, half), b("Add", centre, half), attrs={"axis": 2})

    # 3. per-class scores (N, C, T): the sigmoid score on the chosen class, zero elsewhere
    class_range = b.const(np.arange(num_classes, dtype=i64).reshape(1, num_classes, 1), i64)
    one_hot = b("Cast", b("Equal", b("Unsqueeze", class_index, b.const([1], i64)), class_range), attrs={"to": 1})
    scores = b("Mul", one_hot, b("Unsqueeze", b("Sigmoid", top_logits), b.const([1], i64)))

    # 4. per-class hard NMS
    selected = b(
        "NonMaxSuppression",
        boxes,
        scores,
        b.const([k], i64),
        b.const([settings.iou_threshold], np.float32),
        b.const([settings.score_threshold], np.float32),
        attrs={"center_point_box": 0},
    )

    # 5. the best k survivors per image: scatter survivors' scores into (N, C*T), then top-k
    batch_col, class_col, box_col = b("Split", selected, b.const([1, 1, 1], i64), attrs={"axis": 1}, outputs=3)
    flat_col = b("Add", b("Mul", class_col, b.const(top, i64)), box_col)
    scatter_index = b("Concat", batch_col, flat_col, attrs={"axis": 1})
    kept_scores = b("GatherND", scores, selected)
    batch_size = b("Slice", b("Shape", logits), b.const([0], i64), b.const([1], i64))
    dense_shape = b("Concat", batch_size, b.const([num_classes * top], i64), attrs={"axis": 0})
    empty = b("ConstantOfShape", dense_shape, attrs={"value": constant("nms/empty_value", np.array([-1.0], np.float32))})
    dense = b("ScatterND", empty, scatter_index, kept_scores)
    best_scores, best_index = b("TopK", dense, b.const([k], i64), attrs={"axis": -1, "largest": 1, "sorted": 1}, outputs=2)
    valid = b("Greater", best_scores, b.const(-0.5, np.float32))
    valid_f = b("Cast", valid, attrs={"to": 1})

    outputs = _outputs(batch, k)
    top_c = b.const(top, i64)
    chosen = b("Unsqueeze", b("Mod", best_index, top_c), b.const([-1], i64))
    out_boxes = b("GatherND", boxes, chosen, attrs={"batch_dims": 1})
    graph.layer(op="Mul", inputs=[out_boxes, b("Unsqueeze", valid_f, b.const([-1], i64))], outputs=[outputs[1]])
    graph.layer(op="Mul", inputs=[best_scores, valid_f], outputs=[outputs[2]])
    out_classes = b("Mul", b("Div", best_index, top_c), b("Cast", valid, attrs={"to": 7}))
    graph.layer(op="Cast", inputs=[out_classes], outputs=[outputs[3]], attrs={"to": 6})
    count = b("ReduceSum", b("Cast", valid, attrs={"to": 6}), b.const([1], i64), attrs={"keepdims": 1})
    graph.layer(op="Identity", inputs=[count], outputs=[outputs[0]])
    graph.outputs = outputs
    return graph
