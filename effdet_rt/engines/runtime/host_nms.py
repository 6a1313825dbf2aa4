"""NumPy post-processing for models exported with `--nms none` (raw heads): the same steps as the in-graph
TensorFlow version (top-k (anchor, class) pairs, decode, per-class hard NMS, best K per image)."""

from __future__ import annotations

import numpy as np

from effdet_rt.detections import Detections, category_ids
from effdet_rt.model.boxes import decode_boxes, pairwise_iou
from effdet_rt.model.postprocess import NmsConfig


def _hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Indices kept by greedy NMS over boxes (x1, y1, x2, y2), highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[pairwise_iou(boxes[best][None], boxes[rest])[0] <= iou_threshold]
    return keep


def _one_image(logits: np.ndarray, codes: np.ndarray, anchors: np.ndarray, config: NmsConfig):
    num_classes = logits.shape[1]
    flat = logits.reshape(-1)
    top = min(config.pre_nms_top_k, flat.size)
    index = np.argpartition(-flat, top - 1)[:top] if top < flat.size else np.arange(flat.size)
    anchor_index, class_index = index // num_classes, index % num_classes
    scores = 1.0 / (1.0 + np.exp(-flat[index].astype(np.float64)))
    yxyx = decode_boxes(codes[anchor_index], anchors[anchor_index])
    boxes = yxyx[:, [1, 0, 3, 2]]
    picked: list[tuple[float, int]] = []
    for cls in np.unique(class_index):
        members = np.where((class_index == cls) & (scores >= config.score_threshold))[0]
        if members.size:
            kept = _hard_nms(boxes[members], scores[members], config.iou_threshold, config.max_detections)
            picked.extend((scores[members[k]], int(members[k])) for k in kept)
    picked.sort(key=lambda item: -item[0])
    chosen = np.array([i for _, i in picked[: config.max_detections]], dtype=np.int64)
    k = config.max_detections
    out_boxes = np.zeros((k, 4), np.float32)
    out_scores = np.zeros((k,), np.float32)
    out_classes = np.zeros((k,), np.int32)
    n = len(chosen)
    if n:
        out_boxes[:n] = boxes[chosen]
        out_scores[:n] = scores[chosen]
        out_classes[:n] = category_ids(class_index[chosen])
    return out_boxes, out_scores, out_classes, n


def host_postprocess(class_logits: np.ndarray, box_codes: np.ndarray, anchors: np.ndarray, config: NmsConfig) -> Detections:
    """(N, A, C) logits and (N, A, 4) codes -> Detections (category ids, model-input pixels)."""
    parts = [_one_image(class_logits[i], box_codes[i], anchors, config) for i in range(len(class_logits))]
    if not parts:
        k = config.max_detections
        return Detections(np.zeros((0, k, 4)), np.zeros((0, k)), np.zeros((0, k)), np.zeros((0,)))
    return Detections(
        np.stack([p[0] for p in parts]),
        np.stack([p[1] for p in parts]),
        np.stack([p[2] for p in parts]),
        np.array([p[3] for p in parts]),
    )
