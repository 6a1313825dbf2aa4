"""Calibration batches: deterministic order, exact preprocessing, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from effdet_rt.calib.batches import calibration_batches
from effdet_rt.data.preprocess import decode_image, preprocess_image
from effdet_rt.data.tfrecord import resolve_tfrecords
from effdet_rt.errors import DataError

SIZE = (32, 48)


def _png(seed: int, shape: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _write_tfrecord(path, images: list[bytes]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for data in images:
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    images = [_png(i, (20 + 3 * i, 40 - 2 * i)) for i in range(5)]
    # written out of name order: b has images 3,4 and a has 0,1,2, so sorting must put a first
    _write_tfrecord(root / "train-b.tfrecord", images[3:])
    _write_tfrecord(root / "train-a.tfrecord", images[:3])
    return root, images


def _expected(images: list[bytes]) -> np.ndarray:
    return np.stack([preprocess_image(decode_image(d), SIZE)[0] for d in images])


def test_batches_follow_sorted_files_and_match_inference_preprocessing(records):
    root, images = records
    batches = list(calibration_batches([str(root / "train-*.tfrecord")], SIZE, 2, 2, log=lambda m: None))
    assert len(batches) == 2
    assert all(b.shape == (2, 32, 48, 3) and b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), _expected(images[:4]))


def test_fewer_images_than_asked_uses_full_batches_and_says_so(records):
    root, images = records
    messages: list[str] = []
    batches = list(calibration_batches([str(root / "*.tfrecord")], SIZE, 2, 10, log=messages.append))
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate(batches), _expected(images[:4]))
    assert messages == ["calibration: only 5 of 20 images available; using 2 batch(es) of 2"]


def test_overlapping_globs_count_each_file_once(records):
    root, _ = records
    files = resolve_tfrecords([str(root / "train-a.tfrecord"), str(root / "*.tfrecord")])
    assert [f.name for f in files] == ["train-a.tfrecord", "train-b.tfrecord"]


def test_glob_matching_nothing_names_the_glob(tmp_path):
    with pytest.raises(DataError, match=r"missing-\*\.tfrecord: no TFRecord files match"):
        list(calibration_batches([str(tmp_path / "missing-*.tfrecord")], SIZE, 1, 1))


def test_too_few_images_for_one_batch_is_an_error(records):
    root, _ = records
    with pytest.raises(DataError, match="found 3 image"):
        list(calibration_batches([str(root / "train-a.tfrecord")], SIZE, 4, 1))


def test_record_without_image_bytes_is_named(tmp_path):
    import tensorflow as tf

    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        feature = {"image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(DataError, match=r"bad\.tfrecord: record 0 has no 'image/encoded'"):
        list(calibration_batches([str(path)], SIZE, 1, 1))


def test_non_positive_batch_size_is_an_error(records):
    root, _ = records
    with pytest.raises(DataError, match="batch_size=0"):
        list(calibration_batches([str(root / "*.tfrecord")], SIZE, 0, 1))


def test_fixed_batches_stop_reading_at_the_last_batch_and_count_what_is_dropped():
    from effdet_rt.calib.batches import FixedBatches

    read: list[int] = []

    def images(count):
        for i in range(count):
            read.append(i)
            yield np.full((2, 2, 3), i, np.float32)

    enough = FixedBatches(batch_size=2, num_batches=2)
    batches = list(enough.batches(images(9)))
    assert [b[:, 0, 0, 0].tolist() for b in batches] == [[0, 1], [2, 3]]
    assert read == [0, 1, 2, 3] and enough.complete() and enough.left_over == 0
    read.clear()
    short = FixedBatches(batch_size=2, num_batches=3)
    assert len(list(short.batches(images(5)))) == 2
    assert read == [0, 1, 2, 3, 4] and not short.complete() and (short.produced, short.left_over) == (2, 1)


def test_a_classifier_calibrates_on_a_folder_with_the_same_batching(tmp_path):
    """The classifier's source (a folder of images, its own preprocessing) batches as the detector's does: unreadable
    files skipped and counted, the partial batch dropped, fewer than one batch an error naming the folder."""
    from effdet_rt.classification.deploy import calibration_batches as folder_batches
    from effdet_rt.classification.images import ImageFormat, eval_image

    fmt = ImageFormat((16, 16))
    meta = {"image_format": fmt.as_metadata()}
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(_png(i, (20, 24)))
    (tmp_path / "2b.png").write_bytes(b"not a png")
    messages: list[str] = []
    batches = list(folder_batches(tmp_path, meta, 2, 4, messages.append))
    assert len(batches) == 2 and batches[0].shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(batches[1][1], eval_image(tmp_path / "3.png", fmt))  # 2b.png skipped
    assert messages == [f"calibration: 2 batch(es) of 2 images from {tmp_path}, 1 unreadable skipped"]
    messages.clear()
    (batch,) = folder_batches(tmp_path, meta, 2, 1, messages.append)
    # two images wanted of six: spread over the folder they are 0.png and 2b.png; the unreadable one is skipped and
    # the first file not picked (1.png) stands in for it
    for image, name in zip(batch, ("0.png", "1.png"), strict=True):
        np.testing.assert_array_equal(image, eval_image(tmp_path / name, fmt))
    assert messages == [f"calibration: 1 batch(es) of 2 images from {tmp_path}, 1 unreadable skipped"]
    with pytest.raises(DataError, match=r"found 5 readable image\(s\), fewer than one calibration batch of 6"):
        list(folder_batches(tmp_path, meta, 6, 1, messages.append))
