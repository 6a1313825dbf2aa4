"""The training run: set up from the spec, resume if possible, run compiled steps, checkpoint, evaluate."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdet_rt.checkpoint import resolve_key
from effdet_rt.data.tfrecord import damaged_record_error, resolve_tfrecords
from effdet_rt.errors import TrainingInterrupted, UserError
from effdet_rt.model.factory import build_model_from_spec, setup_from_spec
from effdet_rt.model.pruned import FILTERS_KEY
from effdet_rt.spec.loader import spec_to_yaml
from effdet_rt.trainer.epochs import require_finite_loss
from effdet_rt.trainer.initial_weights import load_initial_weights, pruned_filter_counts
from effdet_rt.trainer.lr_schedule import build_schedule, learning_rate_at, schedule_steps
from effdet_rt.trainer.precise_bn import recompute_batch_norm_statistics
from effdet_rt.trainer.results_dir import (
    first_missing_folder,
    prepare_results_dir,
    remove_interrupted_writes,
    remove_setup_leftovers,
)
from effdet_rt.trainer.run_plan import check_qat, plan_run, use_mixed_precision
from effdet_rt.trainer.state import (
    TrainingParts,
    checkpoint_name,
    newest_checkpoint,
    restore_training_checkpoint,
    save_training_checkpoint,
)
from effdet_rt.utils.charts import (
    RedrawClock,
    draw_safely,
    read_chart_data,
    write_loss_curve,
    write_training_results,
)
from effdet_rt.utils.status import TrainingProgress

LOG_EVERY_STEPS = 10
CLASS_HEAD_PATTERN = "class_net_predict"


@dataclass
class History:
    """Losses and learning rate per step and the validation AP per evaluated epoch, for results.png; the per-step
    series are thinned to every other point past MAX_POINTS so checkpoints stay small."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    class_losses: list[float] = field(default_factory=list)
    box_losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    evaluations: list[dict[str, float]] = field(default_factory=list)  # {"epoch", "AP", "AP50"}
    MAX_POINTS = 4000
    SERIES = ("steps", "losses", "class_losses", "box_losses", "learning_rates")

    def append(self, step: int, loss: float, class_loss: float = math.nan, box_loss: float = math.nan,
               learning_rate: float = math.nan) -> None:
        for name, value in zip(self.SERIES, (step, loss, class_loss, box_loss, learning_rate), strict=True):
            getattr(self, name).append(value)
        if len(self.steps) > self.MAX_POINTS:
            for name in self.SERIES:
                setattr(self, name, getattr(self, name)[::2])

    def as_metadata(self) -> dict[str, Any]:
        return {"history_steps": self.steps, "history_losses": self.losses,
                "history_class_losses": self.class_losses, "history_box_losses": self.box_losses,
                "history_learning_rates": self.learning_rates, "history_evaluations": self.evaluations}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> History:
        """A checkpoint's history; those written before the class/box/learning-rate series get NaN for them."""
        steps = [int(s) for s in metadata.get("history_steps", [])]

        def series(key: str) -> list[float]:
            values = [float(v) for v in metadata.get(key, [])]
            return values if len(values) == len(steps) else [math.nan] * len(steps)

        return cls(steps, series("history_losses"), series("history_class_losses"), series("history_box_losses"),
                   series("history_learning_rates"), list(metadata.get("history_evaluations", [])))

    def recover_evaluations(self, chart: dict[str, Any] | None, epoch: int) -> None:
        """Take back the evaluations up to ``epoch`` from the results.json this run wrote before it stopped: the
        checkpoint of an epoch is saved before that epoch's evaluation, so its history misses it. Only a chart of the
        same steps counts (a results folder may hold another run's)."""
        if not chart or chart.get("step", [])[:len(self.steps)] != self.steps:
            return
        evaluation = chart.get("evaluation") or {}
        known = {e["epoch"] for e in self.evaluations}
        try:
            rows = zip(evaluation.get("epoch", []), evaluation.get("AP", []), evaluation.get("AP50", []), strict=True)
            found = [{"epoch": int(e), "AP": float(ap), "AP50": float(ap50)} for e, ap, ap50 in rows
                     if int(e) <= epoch and int(e) not in known]
        except (TypeError, ValueError):
            return
        self.evaluations = sorted([*self.evaluations, *found], key=lambda e: e["epoch"])

    def chart_data(self, steps_per_epoch: int, title: str) -> dict[str, Any]:
        """What results.json holds and results.png draws: x in (fractional) epochs."""
        evaluations = self.evaluations
        return {
            "title": title,
            "steps_per_epoch": steps_per_epoch,
            "step": self.steps,
            "epoch": [round(s / steps_per_epoch, 4) for s in self.steps],
            "class_loss": self.class_losses,
            "box_loss": self.box_losses,
            "total_loss": self.losses,
            "learning_rate": self.learning_rates,
            "evaluation": {"epoch": [e["epoch"] for e in evaluations], "AP": [e["AP"] for e in evaluations],
                           "AP50": [e["AP50"] for e in evaluations]},
        }


def train(
    spec: Any,
    results_dir: str | os.PathLike | None = None,
    key: str | None = None,
    *,
    log: Callable[[str], None] | None = None,
    max_seconds: float | None = None,
    strategy: Any = None,
) -> Path:
    """Train the detector the spec describes; returns the path of the last checkpoint written.

    Resumes from the newest ``{model}_{epoch:03d}.edrt`` in the results dir. ``max_seconds`` stops after the epoch
    in which the budget ran out (saving a checkpoint).
    """

    log = log or print
    from effdet_rt.trainer.cluster import read_tf_config

    # TF_CONFIG naming several workers: MultiWorkerMirroredStrategy, created before any other TensorFlow op.
    cluster = read_tf_config()
    if cluster is not None and strategy is None:
        from effdet_rt.trainer.distribute import multi_worker_strategy

        strategy = multi_worker_strategy(cluster, log)
    # A glob that matches nothing (the usual first mistake) fails before the results dir is made.
    resolve_tfrecords(list(spec.dataset.train_tfrecords), "dataset.train_tfrecords")
    target = Path(results_dir or spec.results_dir)
    writes = cluster is None or cluster.is_chief
    created = first_missing_folder(target) if writes else None
    # Only the chief writes into the results dir; the other workers read the chief's checkpoints from it to resume
    # (on several machines it must be a shared filesystem).
    results = prepare_results_dir(target) if writes else target
    if writes:
        remove_interrupted_writes(results, log)
    key = resolve_key(key, spec.encryption_key)
    check_qat(spec, log)
    try:
        trainer = _Trainer(spec, results, key, log, strategy, cluster)
    except UserError:
        if created is not None:
            remove_setup_leftovers(created)
        raise
    return trainer.run(max_seconds)


def regularisation(variables: list[Any], l2: float, l1: float):
    """l2 * sum(w^2)/2 + l1 * sum(|w|) over convolution/dense kernels only (no biases, no BatchNorm)."""
    import tensorflow as tf

    kernels = [tf.cast(v, tf.float32) for v in variables if "kernel" in v.name]
    total = tf.constant(0.0)
    if l2 and kernels:
        total += l2 * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
    if l1 and kernels:
        total += l1 * tf.add_n([tf.reduce_sum(tf.abs(k)) for k in kernels])
    return total


class _Trainer:
    def __init__(self, spec: Any, results: Path, key: str, log: Callable[[str], None], strategy: Any,
                 cluster: Any = None):
        import tensorflow as tf
        import tf_keras as keras

        from effdet_rt.data.pipeline import check_records, options_from_spec
        from effdet_rt.trainer.callbacks import TrainingLog
        from effdet_rt.trainer.distribute import select_strategy

        self.spec, self.results, self.key, self.echo = spec, results, key, log
        self.cluster = cluster  # trainer.cluster.Cluster for multi-worker training, else None
        self.writes = cluster is None or cluster.is_chief
        keras.utils.set_random_seed(spec.train.random_seed)
        self.strategy = strategy or select_strategy(spec.num_gpus, list(spec.gpu_ids), log)
        self.plan = plan_run(spec, self.strategy.num_replicas_in_sync)
        self.setup = setup_from_spec(spec)
        self.filter_counts = pruned_filter_counts(spec, key)
        self.files = resolve_tfrecords(list(spec.dataset.train_tfrecords))
        check_records(self.files, self.setup.num_classes, self.plan.global_batch)
        self.options = options_from_spec(spec, self.setup.num_classes)
        self.log = TrainingLog(results if self.writes else None, log)
        self.amp = use_mixed_precision(spec, log)
        self.history = History()
        self.redraw = RedrawClock()
        self.progress: TrainingProgress | None = None
        self.last_checkpoint: Path | None = None
        self.tf = tf

    # ------------------------------------------------------------ building

    def build(self) -> None:
        import tf_keras as keras

        from effdet_rt.trainer.distribute import synchronize_batch_norms
        from effdet_rt.trainer.ema import WeightAverage

        spec = self.spec
        steps = schedule_steps(spec.train.lr_schedule, self.plan.steps_per_epoch, self.plan.num_epochs)
        self.schedule = steps
        previous_policy = keras.mixed_precision.global_policy()
        if self.amp:
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            with self.strategy.scope():
                model = build_model_from_spec(spec, self.setup, self.filter_counts)
                optimizer = keras.optimizers.SGD(learning_rate=build_schedule(steps), momentum=spec.train.optimizer.momentum)
                if self.amp:
                    optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
                optimizer.build(model.trainable_variables)
                ema = WeightAverage(model.trainable_variables, spec.train.moving_average_decay)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        if self.plan.replicas > 1:
            synchronize_batch_norms(model)
        if spec.train.xla_swish_gradient:
            from effdet_rt.trainer.fast_swish import use_fused_swish_gradient

            use_fused_swish_gradient(model)
        self.parts = TrainingParts(model, optimizer, ema)

    def start_step(self) -> int:
        newest = newest_checkpoint(self.results, self.setup.name)
        if newest is None:
            load_initial_weights(self.parts.model, self.spec, self.key, self.echo)
            self.parts.ema.reset_to_current()
            return 0
        metadata = restore_training_checkpoint(newest, self.parts, self.key)
        self.last_checkpoint = newest
        step = int(metadata.get("step", 0))
        if int(self.parts.optimizer.iterations.numpy()) != step:
            self.parts.optimizer.iterations.assign(step)
        self.history = History.from_metadata(metadata)
        chart = self.results / "results.json"
        if chart.exists():
            self.history.recover_evaluations(read_chart_data(chart, self.echo), int(metadata.get("epoch", 0)))
        self.log.resuming(newest, metadata.get("epoch"), step)
        return step

    def check_same_start(self, step: int) -> None:
        """Multi-worker: every worker must resume from the same step, or their collectives would not pair up."""
        tf = self.tf

        def count_sum_and_squares():  # all equal <=> count * sum of squares == sum ** 2, the same on every worker
            context = tf.distribute.get_replica_context()
            value = tf.constant([1.0, float(step), float(step) ** 2], tf.float64)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, value)

        result = self.strategy.experimental_local_results(self.strategy.run(count_sum_and_squares))[0].numpy()
        count, total, squares = (float(v) for v in result)
        if abs(count * squares - total * total) > 0.5:
            raise UserError(
                f"the workers would resume from different steps ({self.cluster.name()} from step {step}, the mean is "
                f"{total / count:g}): each must see the chief's checkpoints, so on several machines the results dir "
                f"{self.results} must be one shared filesystem"
            )

    def dataset(self, start_step: int):
        from effdet_rt.data.pipeline import train_dataset

        if self.cluster is not None:
            return self.worker_dataset(start_step)
        data = train_dataset(
            self.files, self.options, self.setup.anchors(), self.plan.global_batch, self.spec.dataset.loader,
            start_example=start_step * self.plan.global_batch,
        )
        return self.strategy.experimental_distribute_dataset(data)

    def worker_dataset(self, start_step: int):
        """Multi-worker input: this worker's rows of the very batches one process would read.

        Every worker builds the same example stream (same files, shuffle seed and per-example augmentation seeds)
        and keeps, before decoding, its rows of each global batch: worker w with L local replicas takes rows
        w*L*B .. (w+1)*L*B - 1 of every global batch of G = B x replicas examples, batched by B, and its local replicas
        take those batches in turn. Global replica r (= w*L + local index) so gets rows r*B .. (r+1)*B - 1, exactly
        the slice MirroredStrategy gives replica r of a one-process global batch; with the all-reduced loss
        normaliser, gradients and synchronised BatchNorm, the step equals one process's with the same global batch.
        (tf.data's auto-sharding by FILE would give each worker other examples; sharding by DATA would decode every
        example on every worker.)
        """
        from effdet_rt.data.pipeline import train_dataset

        tf, plan, per_replica = self.tf, self.plan, self.spec.train.batch_size

        def make(context: tf.distribute.InputContext):
            local = plan.replicas // context.num_input_pipelines
            first = context.input_pipeline_id * local * per_replica
            return train_dataset(
                self.files, self.options, self.setup.anchors(), per_replica, self.spec.dataset.loader,
                start_example=start_step * plan.global_batch, rows=(plan.global_batch, first, first + local * per_replica),
            )

        return self.strategy.distribute_datasets_from_function(make)

    def step_function(self):
        tf = self.tf
        from effdet_rt.model.efficientdet import flatten_outputs, split_outputs
        from effdet_rt.trainer.losses import count_positives, detection_loss

        model, optimizer, ema = self.parts.model, self.parts.optimizer, self.parts.ema
        setup, train_cfg, replicas, amp = self.setup, self.spec.train, self.plan.replicas, self.amp
        variables = model.trainable_variables
        sum_ = tf.distribute.ReduceOp.SUM

        def replica_step(images, class_targets, box_targets):
            context = tf.distribute.get_replica_context()
            normaliser = context.all_reduce(sum_, count_positives(class_targets)) + 1.0
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                class_list, box_list = split_outputs(outputs, setup.num_levels)
                logits, codes = flatten_outputs(class_list, box_list, setup.num_classes)
                losses = detection_loss(logits, codes, class_targets, box_targets, normaliser)
                reg = regularisation(variables, train_cfg.l2_weight_decay, train_cfg.l1_weight_decay) / replicas
                total = losses["det_loss"] + reg
                scaled = optimizer.get_scaled_loss(total) if amp else total
            grads = tape.gradient(scaled, variables)
            if amp:
                grads = optimizer.get_unscaled_gradients(grads)
            grads = context.all_reduce(sum_, grads)
            if train_cfg.clip_gradients_norm > 0:
                grads, _ = tf.clip_by_global_norm(grads, train_cfg.clip_gradients_norm)
            optimizer.apply_gradients(zip(grads, variables, strict=True), skip_gradients_aggregation=True)
            ema.update(optimizer.iterations)
            return {**losses, "reg_loss": reg, "total_loss": total}

        @tf.function
        def train_step(batch):
            images, targets = batch
            per_replica = self.strategy.run(
                replica_step, args=(images, targets["class_targets"], targets["box_targets"])
            )
            return {name: self.strategy.reduce(sum_, value, axis=None) for name, value in per_replica.items()}

        return train_step

    # ------------------------------------------------------------ running

    def run(self, max_seconds: float | None) -> Path:
        self.build()
        step = self.start_step()
        if self.cluster is not None:
            self.check_same_start(step)
        plan = self.plan
        if step >= plan.total_steps and self.last_checkpoint is not None:
            self.log.already_finished(self.last_checkpoint)
            return self.last_checkpoint
        self.log.message(
            f"training {self.setup.name} {self.setup.input_size[0]}x{self.setup.input_size[1]}: {plan.num_epochs} epochs "
            f"x {plan.steps_per_epoch} steps, global batch {plan.global_batch} on {plan.replicas} replica(s)"
        )
        train_step = self.step_function()
        batches = iter(self.dataset(step))
        try:
            with TrainingProgress(plan.total_steps, plan.steps_per_epoch, plan.num_epochs, step, max_seconds) as progress:
                self.progress = progress
                while step < plan.total_steps:
                    epoch = step // plan.steps_per_epoch + 1
                    epoch_losses = self.run_epoch(train_step, batches, step, epoch, progress)
                    step = epoch * plan.steps_per_epoch
                    out_of_time = progress.out_of_time()
                    self.end_epoch(epoch, step, epoch_losses, force_save=out_of_time)
                    if out_of_time and step < plan.total_steps:
                        self.log.out_of_time(max_seconds, epoch)
                        break
        except self.tf.errors.DataLossError as exc:

            raise damaged_record_error(self.files, "dataset.train_tfrecords", exc.message) from exc
        except (self.tf.errors.UnavailableError, self.tf.errors.DeadlineExceededError, self.tf.errors.AbortedError,
                self.tf.errors.CancelledError) as exc:
            if self.cluster is None:
                raise
            from effdet_rt.trainer.cluster import lost_worker_error

            raise lost_worker_error(self.cluster, exc.message, str(self.results)) from None
        except KeyboardInterrupt:
            done = int(self.parts.optimizer.iterations.numpy())
            if not self.writes:
                raise TrainingInterrupted(f"training interrupted at step {done}; the chief keeps the checkpoints") from None
            path = self.save(done // plan.steps_per_epoch, done)
            self.log.message(f"interrupted at step {done}; saved {path.name}", "INTERRUPTED")
            raise TrainingInterrupted(f"training interrupted at step {done}; saved {path}; run train again to resume") from None
        self.log.finished(self.last_checkpoint)
        assert self.last_checkpoint is not None
        return self.last_checkpoint

    def run_epoch(self, train_step, batches, step: int, epoch: int, progress: TrainingProgress) -> list[float]:
        plan, losses = self.plan, []
        end = epoch * plan.steps_per_epoch
        first = True
        while step < end:
            batch = next(batches)
            if first and self.spec.train.image_preview and self.writes:
                images, targets = (self.strategy.experimental_local_results(part)[0] for part in batch)
                self.log.preview(step, images, targets["boxes"], targets["classes"])
            first = False
            values = train_step(batch)
            step += 1
            total = float(values["total_loss"])
            require_finite_loss(total, step, epoch, self.last_checkpoint, "train.lr_schedule.learning_rate")
            losses.append(total)
            lr = learning_rate_at(self.schedule, step - 1)
            self.history.append(step, total, float(values["class_loss"]), float(values["box_loss"]), lr)
            if step % LOG_EVERY_STEPS == 0 or step == end:
                self.log.scalars(step, {**{f"train/{k}": float(v) for k, v in values.items()}, "train/learning_rate": lr})
            progress.update(step, f"loss {total:.4f}")
        return losses

    def end_epoch(self, epoch: int, step: int, losses: list[float], force_save: bool) -> None:
        spec, plan = self.spec, self.plan
        mean_loss = sum(losses) / max(1, len(losses))
        progress = self.progress
        self.log.epoch_end(epoch, plan.num_epochs, step, {"loss": mean_loss}, message=self.epoch_message(epoch),
                           fields=progress.fields() if progress else None)
        at_interval = epoch % spec.train.checkpoint_interval == 0
        saved = at_interval or epoch == plan.num_epochs or force_save
        if saved:
            self.save(epoch, step)
        evaluated = at_interval and epoch >= spec.evaluate.start_eval_epoch
        if evaluated:
            # every worker of a cluster evaluates too (BatchNorm reads need them all), but only the chief logs it
            self.evaluate(epoch, step)
        self.redraw.draw_if_due(self.write_charts, now=saved or evaluated)

    def epoch_message(self, epoch: int) -> str:
        progress = self.progress
        if progress is None or progress.budget is None:
            return f"epoch {epoch}/{self.plan.num_epochs} done"
        return f"epoch {epoch} done; {progress.describe()}"

    def write_charts(self) -> None:
        """loss_curve.png and results.png (+ their JSON data) in the results dir; a failure is a warning only."""
        if not self.writes:
            return
        history = self.history
        data = history.chart_data(self.plan.steps_per_epoch, f"{self.setup.name} {self.results.name}")
        draw_safely(write_loss_curve, self.results / "loss_curve.png", history.steps, history.losses, log=self.echo)
        draw_safely(write_training_results, self.results / "results.png", data, log=self.echo)

    def save(self, epoch: int, step: int) -> Path:
        """Write the checkpoint into the results dir; the other workers of a cluster write theirs to a temporary
        folder they delete. They must build it all the same: reading BatchNorm's moving statistics (sync-on-read
        variables) averages them over every worker with collectives, which only complete when all take part."""
        if self.spec.train.precise_bn_batches:
            self.refresh_batch_norms(self.spec.train.precise_bn_batches)
        if self.writes:
            return self.write_checkpoint(self.results, epoch, step)
        import shutil
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="effdet-worker-checkpoint-"))
        try:
            self.write_checkpoint(scratch, epoch, step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.last_checkpoint = self.results / checkpoint_name(self.setup.name, epoch)  # the chief's copy
        return self.last_checkpoint

    def write_checkpoint(self, folder: Path, epoch: int, step: int) -> Path:
        metadata = {
            "model_name": self.setup.name,
            "epoch": epoch,
            "step": step,
            "num_classes": self.spec.dataset.num_classes,
            "input_size": list(self.setup.input_size),
            "steps_per_epoch": self.plan.steps_per_epoch,
            "global_batch_size": self.plan.global_batch,
            **self.history.as_metadata(),
        }
        if self.filter_counts:

            metadata[FILTERS_KEY] = self.filter_counts
        path = folder / checkpoint_name(self.setup.name, epoch)
        save_training_checkpoint(path, self.parts, key=self.key, spec_yaml=spec_to_yaml(self.spec), metadata=metadata)
        self.last_checkpoint = path
        self.log.status.write("RUNNING", f"saved {path.name}", epoch=epoch, cur_iter=step)
        return path

    def refresh_batch_norms(self, num_batches: int) -> None:
        """train.precise_bn_batches: BatchNorm statistics of the averaged weights, from fresh training batches."""

        model = self.parts.model
        run = None
        if self.plan.replicas > 1:
            run = lambda images: self.strategy.run(lambda x: model(x, training=True), args=(images,))  # noqa: E731
        images = (batch[0] for batch in self.dataset(0))
        with self.parts.ema.swapped_in():
            used = recompute_batch_norm_statistics(model, images, num_batches, run)
        self.log.message(f"BatchNorm statistics re-estimated on {used} training batches (train.precise_bn_batches)")

    def evaluate(self, epoch: int, step: int) -> None:
        from effdet_rt.trainer.callbacks import evaluate_during_training

        try:
            with self.parts.ema.swapped_in():
                metrics = evaluate_during_training(self.parts.model, self.setup, self.spec)
        except ImportError:
            self.log.message("evaluation skipped: effdet_rt.infer.evaluate is not available")
            return
        if metrics is None:
            return
        self.log.evaluation(epoch, step, metrics)
        self.history.evaluations.append({"epoch": epoch, "AP": float(metrics.get("AP", math.nan)),
                                         "AP50": float(metrics.get("AP50", math.nan))})
        self.echo(f"epoch {epoch}: AP {metrics.get('AP', float('nan')):.4f} AP50 {metrics.get('AP50', float('nan')):.4f}")
