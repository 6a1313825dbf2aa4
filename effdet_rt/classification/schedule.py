"""TAO's classification learning-rate schedulers, driven by progress = step / total steps.

- step: lr = learning_rate * gamma ** (step / (total * step_size // 100)) (TAO's StepLRScheduler: a smooth exponential
  decay by gamma every step_size percent of the run);
- soft_anneal: linear from 3e-4 (TAO's fixed start_lr) to learning_rate until soft_start, then divided by
  annealing_divider after each annealing point passed;
- cosine: linear from min_lr = learning_rate * min_lr_ratio up to learning_rate until soft_start, then
  min_lr + (learning_rate - min_lr) * (1 + cos(pi * (progress - soft_start))) / 2 (TAO's formula as it is: the cosine
  runs over progress - soft_start, not a rescaled range).
`learning_rate_at` is the plain-Python reference; `tf_schedule` computes the same in the graph.
"""

from __future__ import annotations

import math
from typing import Any

SOFT_ANNEAL_START_LR = 3e-4


def learning_rate_at(lr_config: Any, step: float, total_steps: int) -> float:
    c = lr_config
    progress = min(1.0, max(0.0, step / max(1, total_steps)))
    base = c.learning_rate
    if c.scheduler == "step":
        every = max(1, int(total_steps * c.step_size // 100))
        return base * c.gamma ** (step / every)
    if c.scheduler == "soft_anneal":
        if progress < c.soft_start:
            t = progress / c.soft_start
            return t * base + (1.0 - t) * SOFT_ANNEAL_START_LR
        return base / c.annealing_divider ** sum(progress > p for p in c.annealing_points)
    low = base * c.min_lr_ratio
    if c.soft_start > 0 and progress < c.soft_start:
        return (base - low) * progress / c.soft_start + low
    return low + (base - low) * (1.0 + math.cos(math.pi * (progress - c.soft_start))) / 2.0


def tf_schedule(lr_config: Any, total_steps: int):
    """A tf_keras LearningRateSchedule equal to `learning_rate_at` (the optimizer's step count drives it)."""
    import tensorflow as tf
    import tf_keras as keras

    c = lr_config
    total = float(max(1, total_steps))

    class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            progress = tf.clip_by_value(step / total, 0.0, 1.0)
            base = float(c.learning_rate)
            if c.scheduler == "step":
                every = float(max(1, int(total_steps * c.step_size // 100)))
                return base * tf.pow(float(c.gamma), step / every)
            if c.scheduler == "soft_anneal":
                t = progress / float(c.soft_start)
                warm = t * base + (1.0 - t) * SOFT_ANNEAL_START_LR
                passed = tf.add_n([tf.cast(progress > p, tf.float32) for p in c.annealing_points]) \
                    if c.annealing_points else tf.constant(0.0)
                annealed = base / tf.pow(float(c.annealing_divider), passed)
                return tf.where(progress < float(c.soft_start), warm, annealed)
            low = base * float(c.min_lr_ratio)
            cosine = low + (base - low) * (1.0 + tf.cos(math.pi * (progress - float(c.soft_start)))) / 2.0
            if c.soft_start <= 0:
                return cosine
            warm = (base - low) * progress / float(c.soft_start) + low
            return tf.where(progress < float(c.soft_start), warm, cosine)

        def get_config(self) -> dict:
            return {"scheduler": c.scheduler, "total_steps": total_steps}

    return _Schedule()


def build_optimizer(optim_config: Any, schedule):
    import tf_keras as keras

    o = optim_config
    if o.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=o.momentum, nesterov=o.nesterov)
    if o.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
    return keras.optimizers.RMSprop(learning_rate=schedule, rho=o.rho, epsilon=o.epsilon)
