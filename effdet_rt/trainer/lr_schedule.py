"""Learning-rate schedules named by ``train.lr_schedule.name``, as functions of the global step.

cosine: linear warm-up from ``warmup_init`` to ``learning_rate`` over ``warmup_epoch`` epochs, then a half cosine
down to 0 at the last step.
soft_anneal: warm-up from ``warmup_init`` to ``learning_rate`` in log space over ``warmup_epoch`` epochs, hold until
``annealing_epoch``, then decay in log space back to ``warmup_init`` at the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from effdet_rt.errors import SpecError


@dataclass(frozen=True)
class ScheduleSteps:
    name: str
    learning_rate: float
    warmup_init: float
    warmup_steps: int
    annealing_step: int
    total_steps: int


def schedule_steps(lr_config: Any, steps_per_epoch: int, num_epochs: int) -> ScheduleSteps:
    """Convert the spec's epoch-based settings into steps; checks they fit into the run."""
    total = max(1, steps_per_epoch * num_epochs)
    warmup = lr_config.warmup_epoch * steps_per_epoch
    annealing = lr_config.annealing_epoch * steps_per_epoch
    if lr_config.name == "soft_anneal" and lr_config.annealing_epoch < lr_config.warmup_epoch:
        raise SpecError(
            f"train.lr_schedule.annealing_epoch ({lr_config.annealing_epoch}) is before warmup_epoch "
            f"({lr_config.warmup_epoch}); annealing must start after the warm-up"
        )
    return ScheduleSteps(
        lr_config.name, float(lr_config.learning_rate), float(lr_config.warmup_init),
        min(warmup, total), min(annealing, total), total,
    )


def learning_rate_at(steps: ScheduleSteps, step: float) -> float:
    """The schedule's value at ``step`` (plain Python; the reference the TF version is tested against)."""
    if steps.name == "cosine":
        return _cosine(steps, step)
    return _soft_anneal(steps, step)


def _cosine(s: ScheduleSteps, step: float) -> float:
    if step < s.warmup_steps:
        return s.warmup_init + (s.learning_rate - s.warmup_init) * step / s.warmup_steps
    span = max(1, s.total_steps - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    return 0.5 * s.learning_rate * (1.0 + math.cos(math.pi * progress))


def _soft_anneal(s: ScheduleSteps, step: float) -> float:
    if step < s.warmup_steps:
        fraction = step / s.warmup_steps
    elif step <= s.annealing_step or s.annealing_step >= s.total_steps:
        fraction = 1.0
    else:
        fraction = max(0.0, (s.total_steps - step) / (s.total_steps - s.annealing_step))
    low, high = math.log(s.warmup_init), math.log(s.learning_rate)
    return math.exp(low + fraction * (high - low))


def build_schedule(steps: ScheduleSteps):
    """A tf_keras LearningRateSchedule computing ``learning_rate_at`` in-graph."""
    import tf_keras as keras

    class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return schedule_tensor(steps, step)

        def get_config(self) -> dict[str, Any]:
            return dict(steps.__dict__)

    return _Schedule()


def schedule_tensor(s: ScheduleSteps, step):
    import tensorflow as tf

    step = tf.cast(step, tf.float32)
    warmup = tf.constant(float(max(1, s.warmup_steps)))
    warm_fraction = step / warmup
    in_warmup = step < float(s.warmup_steps)
    if s.name == "cosine":
        warm = s.warmup_init + (s.learning_rate - s.warmup_init) * warm_fraction
        span = float(max(1, s.total_steps - s.warmup_steps))
        progress = tf.clip_by_value((step - s.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * s.learning_rate * (1.0 + tf.cos(math.pi * progress))
        return tf.where(in_warmup, warm, cosine)
    span = float(max(1, s.total_steps - s.annealing_step))
    anneal = tf.clip_by_value((s.total_steps - step) / span, 0.0, 1.0)
    annealing = tf.logical_and(step > float(s.annealing_step), s.annealing_step < s.total_steps)
    fraction = tf.where(in_warmup, warm_fraction, tf.where(annealing, anneal, 1.0))
    low, high = math.log(s.warmup_init), math.log(s.learning_rate)
    return tf.exp(low + fraction * (high - low))
