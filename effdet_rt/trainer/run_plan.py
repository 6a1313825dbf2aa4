"""What a training run will do, decided from the spec before any step: steps per epoch and global batch for the
replicas at hand, and whether QAT and mixed precision apply on this machine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class RunPlan:
    replicas: int
    global_batch: int
    steps_per_epoch: int
    num_epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.num_epochs


def plan_run(spec: Any, replicas: int) -> RunPlan:
    global_batch = spec.train.batch_size * replicas
    steps = max(1, spec.train.num_examples_per_epoch // global_batch)
    return RunPlan(replicas, global_batch, steps, spec.train.num_epochs)


def check_qat(spec: Any, log: Callable[[str], None]) -> None:
    if spec.train.qat:
        log("train.qat: every convolution trains with symmetric INT8 fake-quant inputs and weights "
            "(effdet_rt.model.qat); `effdet-rt export` writes its Q/DQ ONNX, which builds as INT8 without calibration")


def use_mixed_precision(spec: Any, log: Callable[[str], None]) -> bool:
    import tensorflow as tf

    if not spec.train.amp:
        return False
    if not tf.config.list_physical_devices("GPU"):
        log("train.amp: no GPU, so training runs in float32 (float16 loss scaling only pays off on GPUs)")
        return False
    return True
