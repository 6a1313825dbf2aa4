"""What happens around the training steps: TensorBoard, status.json, image previews, evaluation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from effdet_rt.data.labels import load_label_map
from effdet_rt.engines.runtime.checkpoint import KerasEngine, nms_config_from_spec
from effdet_rt.infer.evaluate import evaluate_engine
from effdet_rt.utils.status import StatusLogger

PREVIEW_IMAGES = 4


def _metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata


def write_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar through tf.summary.write, so the tensorboard package is not needed."""
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=_metadata("scalars"))


def write_images(name: str, images: tf.Tensor, step: int) -> None:
    """TensorBoard images (float 0..1, NHWC) as the images plugin stores them: width, height, PNGs."""
    pngs = [tf.image.encode_png(tf.cast(tf.round(image * 255.0), tf.uint8)) for image in tf.unstack(images)]
    height, width = int(images.shape[1]), int(images.shape[2])
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), *pngs])
    tf.summary.write(name, tensor, step=step, metadata=_metadata("images"))


class TrainingLog:
    """status.json lines (TAO fields) and TensorBoard scalars/images in results_dir/tensorboard.

    ``results_dir=None`` (a multi-worker task other than the chief) writes no file and only echoes messages.
    """

    def __init__(self, results_dir: Path | None, echo: Callable[[str], None]):
        self.status = StatusLogger(results_dir)
        if results_dir is None:
            self.writer = tf.summary.create_noop_writer()
        else:
            self.writer = tf.summary.create_file_writer(str(results_dir / "tensorboard"))
        self.echo = echo

    def message(self, text: str, status: str = "RUNNING") -> None:
        self.status.write(status, text)
        self.echo(text)

    def resuming(self, checkpoint: Path, epoch: Any, step: Any) -> None:
        self.message(f"resuming from {checkpoint.name} (epoch {epoch}, step {step})")

    def already_finished(self, checkpoint: Path) -> None:
        self.message(f"training already finished ({checkpoint.name}); nothing to do", "SUCCESS")

    def out_of_time(self, max_seconds: float, epoch: int) -> None:
        self.message(f"time budget of {max_seconds:.0f} s used up after epoch {epoch}; stopping")

    def finished(self, checkpoint: Path | None) -> None:
        self.message(f"training finished; last checkpoint {checkpoint}", "SUCCESS")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default():
            for name, value in values.items():
                write_scalar(name, value, step)

    def epoch_end(self, epoch: int, num_epochs: int, step: int, values: dict[str, float], *,
                  message: str | None = None, fields: dict[str, Any] | None = None) -> None:
        """``message``/``fields``: the progress as the bar shows it (utils.status.TrainingProgress)."""
        self.scalars(step, {f"epoch/{k}": v for k, v in values.items()})
        self.status.write("RUNNING", message or f"epoch {epoch}/{num_epochs} done", kpi=values,
                          **{"epoch": epoch, "max_epoch": num_epochs, "cur_iter": step, **(fields or {})})
        self.writer.flush()

    def evaluation(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.scalars(step, {f"eval/{k}": float(v) for k, v in metrics.items()})
        self.status.write("RUNNING", f"evaluation after epoch {epoch}", kpi=metrics, epoch=epoch, cur_iter=step)
        self.writer.flush()

    def preview(self, step: int, images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor) -> None:
        """Augmented samples with their boxes drawn (train.image_preview)."""
        with self.writer.as_default():
            write_images("augmented_samples", preview_images(images, boxes, classes), step)


def preview_images(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    images = tf.convert_to_tensor(images)[:PREVIEW_IMAGES]
    height, width = float(images.shape[1]), float(images.shape[2])
    scale = tf.constant([height, width, height, width])
    valid = tf.cast(tf.convert_to_tensor(classes)[:PREVIEW_IMAGES] >= 0, tf.float32)[..., None]
    normalised = tf.convert_to_tensor(boxes)[:PREVIEW_IMAGES] / scale * valid
    colours = tf.constant([[255.0, 64.0, 64.0]])
    drawn = tf.image.draw_bounding_boxes(images / 255.0, normalised, colours / 255.0)
    return tf.clip_by_value(drawn, 0.0, 1.0)


def evaluate_during_training(model: Any, setup: Any, spec: Any) -> dict[str, float] | None:
    """COCO metrics of ``model`` (call with the EMA weights in place) on the spec's validation set."""
    data = spec.dataset
    if not data.val_tfrecords or not data.val_json_file:
        return None

    label_map = None
    if spec.evaluate.label_map:

        label_map = load_label_map(spec.evaluate.label_map)
    engine = KerasEngine(model, setup, nms_config_from_spec(spec))
    metrics = evaluate_engine(
        engine, data.val_tfrecords, data.val_json_file, num_samples=spec.evaluate.num_samples,
        batch_size=spec.evaluate.batch_size, max_detections=spec.evaluate.max_detections_per_image,
        label_map=label_map,
    )
    return {key: float(np.asarray(value)) for key, value in metrics.items() if np.ndim(value) == 0}
