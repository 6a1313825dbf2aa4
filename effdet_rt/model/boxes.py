"""Box operations, in NumPy and in TensorFlow: centre-size coding against anchors, and pairwise IoU.

Coding is y-first, as the reference: boxes and anchors are y1, x1, y2, x2. IoU does not care which corner order
its boxes use (swapping x and y leaves it unchanged), so x1, y1, x2, y2 detections and y1, x1, y2, x2 anchors
share one formula, as long as both arguments use the same order.

The NumPy coding functions compute in float64, IoU in its inputs' dtype; the TensorFlow ones in the tensors' dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPSILON = 1e-8  # smallest box side used when coding, so log() stays finite
IOU_EPSILON = 1e-12  # smallest union: boxes without area have IoU 0, never a division by zero


def center_size(boxes):
    """(y_centre, x_centre, height, width) of y1, x1, y2, x2 boxes (NumPy arrays or tensors)."""
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + height / 2, boxes[..., 1] + width / 2, height, width


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Regression targets (ty, tx, th, tw) of boxes relative to anchors (same leading shape)."""
    yc_a, xc_a, h_a, w_a = center_size(np.asarray(anchors, np.float64))
    yc, xc, h, w = center_size(np.asarray(boxes, np.float64))
    h = np.maximum(h, EPSILON)
    w = np.maximum(w, EPSILON)
    return np.stack([(yc - yc_a) / h_a, (xc - xc_a) / w_a, np.log(h / h_a), np.log(w / w_a)], axis=-1)


def decode_boxes(codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of encode_boxes: (ty, tx, th, tw) + anchors -> y1, x1, y2, x2."""
    yc_a, xc_a, h_a, w_a = center_size(np.asarray(anchors, np.float64))
    ty, tx, th, tw = (np.asarray(codes, np.float64)[..., i] for i in range(4))
    h = np.exp(th) * h_a
    w = np.exp(tw) * w_a
    yc = ty * h_a + yc_a
    xc = tx * w_a + xc_a
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def encode_boxes_tf(boxes, anchors):
    """TensorFlow version of encode_boxes (for the input pipeline)."""
    import tensorflow as tf

    yc_a, xc_a, h_a, w_a = center_size(anchors)
    yc, xc, h, w = center_size(boxes)
    h = tf.maximum(h, EPSILON)
    w = tf.maximum(w, EPSILON)
    return tf.stack([(yc - yc_a) / h_a, (xc - xc_a) / w_a, tf.math.log(h / h_a), tf.math.log(w / w_a)], axis=-1)


def decode_boxes_tf(codes, anchors):
    """TensorFlow version of decode_boxes (for in-graph post-processing)."""
    import tensorflow as tf

    yc_a, xc_a, h_a, w_a = center_size(anchors)
    h = tf.exp(codes[..., 2]) * h_a
    w = tf.exp(codes[..., 3]) * w_a
    yc = codes[..., 0] * h_a + yc_a
    xc = codes[..., 1] * w_a + xc_a
    return tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def _pairwise_iou(a, b, ops: Any):
    """IoU (n, m) of boxes a (n, 4) and b (m, 4); ``ops`` is numpy or tensorflow (both have maximum/minimum)."""
    a, b = a[:, None, :], b[None, :, :]
    overlap_0 = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    overlap_1 = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = overlap_0 * overlap_1
    union = _area(a, ops) + _area(b, ops) - inter
    return inter / ops.maximum(union, IOU_EPSILON)


def _area(boxes, ops: Any):
    """Area of each box; a box with a negative side has none."""
    return ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (n, m) of (n, 4) and (m, 4) boxes, both x1, y1, x2, y2 or both y1, x1, y2, x2."""
    return _pairwise_iou(np.asarray(a), np.asarray(b), np)


def pairwise_iou_tf(a, b):
    """TensorFlow version of pairwise_iou (for anchor labelling in the input pipeline)."""
    import tensorflow as tf

    return _pairwise_iou(a, b, tf)
