"""Anchor labelling: each anchor gets a class target and box-code target from the ground truth.

IoU >= 0.5 with its best box makes an anchor positive, below is negative, and every ground-truth box is
force-matched to its best anchor (so small boxes always have one positive). Padding boxes (class < 0) never match.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from effdet_rt.model.boxes import encode_boxes_tf, pairwise_iou_tf

# Class targets besides 0-based class indices: negatives, and anchors that take no part in the loss.
BACKGROUND = -1
IGNORE = -2
MATCH_THRESHOLD = 0.5


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
    iou = tf.where(valid[None, :], pairwise_iou_tf(anchors, boxes), -1.0)
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
