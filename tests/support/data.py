"""Support for the training tests: the first images of BCCD's val split as one TFRecord file, and eager steps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from effdet_rt.cli.main import run
from effdet_rt.data.tfrecord import parse_record, read_records, tfrecord_files


def convert_bccd_val(bccd_root: Path, out: Path) -> Path:
    """Convert BCCD's val split into ``out`` (one shard, plus val.json); returns the shard."""
    assert run(["dataset-convert", "--voc", str(bccd_root), "--split", "val", "-o", str(out), "-s", "1"]) == 0
    return out / "val-00000-of-00001.tfrecord"


def write_first_records(source: Path, count: int) -> Path:
    """The first ``count`` records of ``source`` as ``first{count}.tfrecord`` beside it."""
    import tensorflow as tf

    head = source.parent / f"first{count}.tfrecord"
    with tf.io.TFRecordWriter(str(head)) as writer:
        for record in tf.data.TFRecordDataset(str(source)).take(count):
            writer.write(record.numpy())
    return head


def bccd_val_head(bccd_root: Path, out: Path, count: int) -> Path:
    """BCCD's val split converted into ``out``; returns ``out/first{count}.tfrecord``, its first ``count`` records."""
    return write_first_records(convert_bccd_val(bccd_root, out), count)


@contextmanager
def steps_run_eagerly() -> Iterator[None]:
    """Run the trainer's tf.function step eagerly: for a run of a few steps, tracing D0's train step (20-100 s on
    two cores, more with fake-quant or two replicas) costs far more than the steps. The code that runs is the same;
    the overfit, demo and Ctrl-C tests keep covering the traced step."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


def read_tfrecords(pattern: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield one parse_record dict per record of the files matching ``pattern``, in file order."""
    for _, _, record in read_records(tfrecord_files(pattern)):
        yield parse_record(record)


def centre_crops(paths, size: int = 224):
    """ImageNet-style evaluation crops: shorter side to 256 (bilinear), then the centre ``size`` square, float32."""
    import numpy as np
    from PIL import Image

    crops = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.BILINEAR)
        left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
        crops.append(np.asarray(image.crop((left, top, left + size, top + size)), np.float32))
    return np.stack(crops)
