"""Re-estimate BatchNorm statistics with the weights about to be saved ("precise BN").

Moving averages (momentum 0.99) trail the weights: after a short run, or with EMA weights that differ from the
weights the averages were collected with, inference-mode BatchNorm no longer matches the network. Running a few
training batches in training mode with momentum i/(i+1) for the i-th batch gives every BatchNorm the plain mean of
those batches' statistics. Weights are not changed. Runs eagerly, because a compiled graph would freeze the momentum.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def batch_norm_layers(model: Any) -> list[Any]:
    import tf_keras as keras

    return [layer for layer in model.submodules
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def recompute_batch_norm_statistics(model: Any, batches: Iterable[Any], num_batches: int, run: Any = None) -> int:
    """Feed up to num_batches image batches; returns how many were used. ``run(images)`` defaults to a plain
    training-mode call (a distribution strategy passes its own)."""
    layers = batch_norm_layers(model)
    saved = [layer.momentum for layer in layers]
    call = run or (lambda images: model(images, training=True))
    used = 0
    iterator: Iterator[Any] = iter(batches)
    try:
        for index in range(num_batches):
            images = next(iterator, None)
            if images is None:
                break
            for layer in layers:
                layer.momentum = index / (index + 1.0)
            call(images)
            used += 1
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return used
