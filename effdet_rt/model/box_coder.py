"""Centre-size box coding (y-first, as the reference): boxes and anchors are y1, x1, y2, x2.

The numpy functions compute in float64; the TensorFlow ones in the tensors' dtype.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-8


def _center_size(boxes):
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + height / 2, boxes[..., 1] + width / 2, height, width


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Regression targets (ty, tx, th, tw) of boxes relative to anchors (same leading shape)."""
    yc_a, xc_a, h_a, w_a = _center_size(np.asarray(anchors, np.float64))
    yc, xc, h, w = _center_size(np.asarray(boxes, np.float64))
    h = np.maximum(h, EPSILON)
    w = np.maximum(w, EPSILON)
    return np.stack([(yc - yc_a) / h_a, (xc - xc_a) / w_a, np.log(h / h_a), np.log(w / w_a)], axis=-1)


def decode_boxes(codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of encode_boxes: (ty, tx, th, tw) + anchors -> y1, x1, y2, x2."""
    yc_a, xc_a, h_a, w_a = _center_size(np.asarray(anchors, np.float64))
    ty, tx, th, tw = (np.asarray(codes, np.float64)[..., i] for i in range(4))
    h = np.exp(th) * h_a
    w = np.exp(tw) * w_a
    yc = ty * h_a + yc_a
    xc = tx * w_a + xc_a
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)


def encode_boxes_tf(boxes, anchors):
    """TensorFlow version of encode_boxes (for the input pipeline)."""
    import tensorflow as tf

    yc_a, xc_a, h_a, w_a = _center_size(anchors)
    yc, xc, h, w = _center_size(boxes)
    h = tf.maximum(h, EPSILON)
    w = tf.maximum(w, EPSILON)
    return tf.stack([(yc - yc_a) / h_a, (xc - xc_a) / w_a, tf.math.log(h / h_a), tf.math.log(w / w_a)], axis=-1)


def decode_boxes_tf(codes, anchors):
    """TensorFlow version of decode_boxes (for in-graph post-processing)."""
    import tensorflow as tf

    yc_a, xc_a, h_a, w_a = _center_size(anchors)
    h = tf.exp(codes[..., 2]) * h_a
    w = tf.exp(codes[..., 3]) * w_a
    yc = codes[..., 0] * h_a + yc_a
    xc = codes[..., 1] * w_a + xc_a
    return tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)
