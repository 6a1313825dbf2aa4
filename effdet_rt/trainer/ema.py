"""Exponential moving average of the trainable weights (``train.moving_average_decay``).

The decay ramps up as (1 + step) / (10 + step) early in training, capped at the spec's value, so the average
does not stay stuck at the random initial weights. Evaluation and checkpoints use the averaged weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf


class WeightAverage:
    def __init__(self, variables: list[tf.Variable], decay: float):
        self.decay = float(decay)
        self.variables = list(variables)
        with tf.init_scope():
            self.shadows = [
                tf.Variable(v.read_value(), trainable=False, name=f"ema/{v.name.split(':')[0]}",
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                            synchronization=tf.VariableSynchronization.ON_WRITE)
                for v in self.variables
            ]

    def effective_decay(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        return tf.minimum(self.decay, (1.0 + step) / (10.0 + step))

    def update(self, step: tf.Tensor) -> None:
        """Blend the current weights into the averages (call after the optimizer step, in cross-replica context)."""
        decay = self.effective_decay(step)
        for shadow, variable in zip(self.shadows, self.variables, strict=True):
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(variable, shadow.dtype))

    def reset_to_current(self) -> None:
        for shadow, variable in zip(self.shadows, self.variables, strict=True):
            shadow.assign(variable)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily put the averaged weights into the model (for evaluation); restores the raw ones after."""
        raw = [v.numpy() for v in self.variables]
        for shadow, variable in zip(self.shadows, self.variables, strict=True):
            variable.assign(shadow)
        try:
            yield
        finally:
            for value, variable in zip(raw, self.variables, strict=True):
                variable.assign(value)
