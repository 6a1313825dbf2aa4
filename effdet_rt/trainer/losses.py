"""Detection losses: sigmoid focal loss for classes, Huber loss for box codes, both normalised by positives.

Class targets per anchor: a 0-based class index for positives, ``BACKGROUND`` (-1) for negatives, ``IGNORE`` (-2)
for anchors that take no part in the loss. Box targets are the encoded (ty, tx, th, tw) codes; only positives count.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from effdet_rt.model.labeler import IGNORE


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 0.25
    gamma: float = 1.5
    huber_delta: float = 0.1
    box_loss_weight: float = 50.0


def focal_loss_sum(logits: tf.Tensor, class_targets: tf.Tensor, alpha: float = 0.25, gamma: float = 1.5) -> tf.Tensor:
    """Sum of the sigmoid focal loss over anchors and classes; ignored anchors contribute nothing.

    logits (..., A, C) float, class_targets (..., A) int.
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = logits.shape[-1]
    labels = tf.one_hot(class_targets, num_classes, dtype=tf.float32)  # -1 and -2 give all-zero rows
    probs = tf.sigmoid(logits)
    p_t = labels * probs + (1.0 - labels) * (1.0 - probs)
    alpha_t = labels * alpha + (1.0 - labels) * (1.0 - alpha)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = alpha_t * tf.pow(1.0 - p_t, gamma) * cross_entropy
    keep = tf.cast(tf.not_equal(class_targets, IGNORE), tf.float32)[..., None]
    return tf.reduce_sum(loss * keep)


def huber_loss_sum(box_codes: tf.Tensor, box_targets: tf.Tensor, positive: tf.Tensor, delta: float = 0.1) -> tf.Tensor:
    """Sum of the Huber loss over the 4 codes of positive anchors."""
    error = tf.cast(box_codes, tf.float32) - tf.cast(box_targets, tf.float32)
    abs_error = tf.abs(error)
    quadratic = tf.minimum(abs_error, delta)
    linear = abs_error - quadratic
    loss = 0.5 * quadratic * quadratic + delta * linear
    return tf.reduce_sum(loss * tf.cast(positive, tf.float32)[..., None])


def count_positives(class_targets: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(class_targets >= 0, tf.float32))


def detection_loss(
    logits: tf.Tensor,
    box_codes: tf.Tensor,
    class_targets: tf.Tensor,
    box_targets: tf.Tensor,
    normaliser: tf.Tensor,
    config: LossConfig = LossConfig(),
) -> dict[str, tf.Tensor]:
    """class, box and total (class + weight * box) losses; ``normaliser`` is positives + 1 over the global batch."""
    class_loss = focal_loss_sum(logits, class_targets, config.alpha, config.gamma) / normaliser
    box_loss = huber_loss_sum(box_codes, box_targets, class_targets >= 0, config.huber_delta) / (4.0 * normaliser)
    return {"class_loss": class_loss, "box_loss": box_loss, "det_loss": class_loss + config.box_loss_weight * box_loss}
