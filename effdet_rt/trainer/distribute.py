"""Pick the tf.distribute strategy: MultiWorkerMirroredStrategy for a TF_CONFIG cluster, else from num_gpus / gpu_ids.

On GPUs: MirroredStrategy over the chosen ids when num_gpus > 1. Without GPUs: MirroredStrategy over logical CPU
devices when enough were configured (how the tests prove multi-replica training), else the default strategy.
With more than one replica every BatchNorm is synchronised, so a global batch gives the same statistics and loss
as on one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tf_keras as keras

from effdet_rt.errors import SpecError, UserError


def select_strategy(num_gpus: int, gpu_ids: list[int], log: Callable[[str], None] = print) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        ids = list(gpu_ids)[:num_gpus] if gpu_ids else list(range(num_gpus))
        if len(ids) < num_gpus:
            ids += [i for i in range(len(gpus)) if i not in ids][: num_gpus - len(ids)]
        bad = [i for i in ids if i >= len(gpus)]
        if bad:
            raise SpecError(f"gpu_ids {bad} do not exist: this machine has {len(gpus)} GPU(s) (ids 0..{len(gpus) - 1})")
        if num_gpus == 1:
            return tf.distribute.OneDeviceStrategy(f"/gpu:{ids[0]}")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in ids])
    if num_gpus == 1:
        return tf.distribute.get_strategy()
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) >= num_gpus:
        log(f"no GPU: mirroring over {num_gpus} logical CPU devices")
        return tf.distribute.MirroredStrategy([device.name for device in cpus[:num_gpus]])
    log(f"num_gpus = {num_gpus} but no GPU is visible: training on the CPU with one replica")
    return tf.distribute.get_strategy()


def synchronize_batch_norms(model: keras.Model) -> int:
    """Make every BatchNormalization compute statistics over the global batch; returns how many."""
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            layer.fused = False
            count += 1
    return count


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def multi_worker_strategy(cluster: Any, log: Callable[[str], None] = print) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for the TF_CONFIG cluster (trainer.cluster.Cluster); call before any other TF op.

    The strategy reads TF_CONFIG itself, starts this task's gRPC server and waits for every task to join. Each worker
    trains on the devices it sees (all its GPUs, or the CPU): pick them with CUDA_VISIBLE_DEVICES. A dead or
    unreachable peer is found by the coordination service's heartbeats, which abort the collectives in flight with
    an UnavailableError (trainer.loop turns it into one line naming the worker); so there is no per-collective
    timeout, which would also fire while the chief alone evaluates or writes a checkpoint.
    """
    log(f"TF_CONFIG: {cluster.name()}, one of {cluster.num_workers} workers; waiting for all of them to join")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise UserError(f"TF_CONFIG: cannot start {cluster.name()} ({str(exc).splitlines()[0]}); check that the "
                        "address is this machine's and its port is free") from None
    log(f"all {cluster.num_workers} workers joined: {strategy.num_replicas_in_sync} replica(s) in sync")
    return strategy
