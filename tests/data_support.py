"""Small real training sets for the training tests: the first images of BCCD's val split as one TFRecord file."""

from __future__ import annotations

from pathlib import Path

from effdet_rt.cli.main import run


def bccd_val_head(bccd_root: Path, out: Path, count: int) -> Path:
    """Convert BCCD's val split into ``out`` (one shard, plus val.json) and write its first ``count`` records to
    ``out/first{count}.tfrecord``; returns that file."""
    import tensorflow as tf

    assert run(["dataset-convert", "--voc", str(bccd_root), "--split", "val", "-o", str(out), "-s", "1"]) == 0
    head = out / f"first{count}.tfrecord"
    with tf.io.TFRecordWriter(str(head)) as writer:
        for record in tf.data.TFRecordDataset(str(out / "val-00000-of-00001.tfrecord")).take(count):
            writer.write(record.numpy())
    return head
