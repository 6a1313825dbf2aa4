"""In-graph post-processing for checkpoint inference: scores, top-k, decoding, per-class hard NMS.

Input: flattened raw outputs (class logits (N, A, C), box codes (N, A, 4)) and anchors (A, 4) y1, x1, y2, x2.
Output: boxes x1, y1, x2, y2 in model-input pixels, scores, 0-based class indices, and valid counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effdet_rt.model.boxes import decode_boxes_tf


@dataclass(frozen=True)
class NmsConfig:
    score_threshold: float = 0.001
    iou_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 5000


def postprocess(class_logits, box_codes, anchors: np.ndarray, config: NmsConfig = NmsConfig()):
    """Returns (boxes_xyxy (N, K, 4), scores (N, K), classes (N, K) int32 0-based, num_detections (N,) int32)."""
    import tensorflow as tf

    class_logits = tf.convert_to_tensor(class_logits, tf.float32)
    box_codes = tf.convert_to_tensor(box_codes, tf.float32)
    num_classes = class_logits.shape[-1]
    batch = tf.shape(class_logits)[0]
    flat = tf.reshape(class_logits, [batch, -1])
    top_k = min(config.pre_nms_top_k, int(anchors.shape[0]) * num_classes)
    top_logits, top_index = tf.math.top_k(flat, k=top_k, sorted=False)
    anchor_index = top_index // num_classes
    class_index = top_index % num_classes
    codes = tf.gather(box_codes, anchor_index, batch_dims=1)
    boxes = decode_boxes_tf(codes, tf.gather(tf.constant(anchors, tf.float32), anchor_index))
    scores = tf.one_hot(class_index, num_classes) * tf.sigmoid(top_logits)[..., None]
    nmsed = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=config.max_detections,
        max_total_size=config.max_detections,
        iou_threshold=config.iou_threshold,
        score_threshold=config.score_threshold,
        clip_boxes=False,
    )
    y1, x1, y2, x2 = tf.unstack(nmsed.nmsed_boxes, axis=-1)
    boxes_xyxy = tf.stack([x1, y1, x2, y2], axis=-1)
    return boxes_xyxy, nmsed.nmsed_scores, tf.cast(nmsed.nmsed_classes, tf.int32), nmsed.valid_detections
