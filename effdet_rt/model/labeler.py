"""Anchor labelling: each anchor gets a class target and box-code target from the ground truth.

IoU >= 0.5 with its best box makes an anchor positive, below is negative, and every ground-truth box is
force-matched to its best anchor (so small boxes always have one positive). Padding boxes (class < 0) never match.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from effdet_rt.model.box_coder import encode_boxes_tf

# Class targets besides 0-based class indices: negatives, and anchors that take no part in the loss.
BACKGROUND = -1
IGNORE = -2
MATCH_THRESHOLD = 0.5


def pairwise_iou(anchors: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """IoU (A, G) between anchors (A, 4) and boxes (G, 4), both y1, x1, y2, x2."""
    a = anchors[:, None, :]
    b = boxes[None, :, :]
    inter_h = tf.maximum(0.0, tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]))
    inter_w = tf.maximum(0.0, tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]))
    inter = inter_h * inter_w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_a + area_b - inter, 1e-8)


def drop_padding(boxes: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The real boxes in their order plus one padding box (so the IoU matrix is never empty).

    Labelling only ever matches real boxes, so this gives the same targets as the padded input while the IoU
    matrix shrinks from (A, max_instances) to (A, real + 1).
    """
    real = classes >= 0
    boxes = tf.concat([tf.boolean_mask(boxes, real), tf.zeros([1, 4], boxes.dtype)], axis=0)
    classes = tf.concat([tf.boolean_mask(classes, real), tf.constant([-1], classes.dtype)], axis=0)
    return boxes, classes


def label_anchors(anchors: np.ndarray | tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Targets for one image.

    anchors (A, 4), boxes (G, 4) in model-input pixels y1, x1, y2, x2, classes (G,) 0-based, < 0 for padding.
    Returns class targets (A,) int32 (class index or BACKGROUND) and box targets (A, 4) float32 (zeros for negatives).
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    boxes, classes = drop_padding(tf.convert_to_tensor(boxes, tf.float32), tf.cast(classes, tf.int32))
    valid = classes >= 0
    iou = tf.where(valid[None, :], pairwise_iou(anchors, boxes), -1.0)
    has_boxes = tf.reduce_any(valid)
    best_box = tf.argmax(iou, axis=1, output_type=tf.int32)
    best_iou = tf.reduce_max(iou, axis=1)
    positive = tf.logical_and(best_iou >= MATCH_THRESHOLD, has_boxes)

    forced_anchor = tf.argmax(iou, axis=0, output_type=tf.int32)  # (G,) best anchor of each box
    forced_box = tf.boolean_mask(tf.range(tf.shape(boxes)[0]), valid)
    forced_anchor = tf.boolean_mask(forced_anchor, valid)
    best_box = tf.tensor_scatter_nd_update(best_box, forced_anchor[:, None], forced_box)
    positive = tf.tensor_scatter_nd_update(positive, forced_anchor[:, None], tf.ones_like(forced_box, tf.bool))

    matched_boxes = tf.gather(boxes, best_box)
    class_targets = tf.where(positive, tf.gather(classes, best_box), BACKGROUND)
    codes = encode_boxes_tf(matched_boxes, anchors)
    box_targets = tf.where(positive[:, None], codes, 0.0)
    return class_targets, box_targets
