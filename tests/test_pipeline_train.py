"""The training input pipeline on a few hand-written TFRecords with white boxes on black images."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effdet_rt.data.pipeline import (
    PipelineOptions,
    check_records,
    decode_example,
    flip_horizontally,
    train_dataset,
    transform_example,
)
from effdet_rt.data.preprocess import preprocess_image
from effdet_rt.data.tfrecord import encode_example, resolve_tfrecords
from effdet_rt.errors import DataError
from effdet_rt.model.anchors import AnchorConfig, generate_anchors

SIZE = (128, 128)
LOADER = SimpleNamespace(shuffle_file=False, shuffle_buffer=8, cycle_length=2, block_length=1, prefetch_size=1)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def example_bytes(height, width, boxes_xyxy, labels, crowd=None, drop=()):
    """A black image with a white rectangle per box (pixel boxes x1, y1, x2, y2)."""
    image = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes_xyxy:
        image[y1:y2, x1:x2] = 255
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    features = {
        "image/encoded": [png_bytes(image)],
        "image/source_id": [b"1"],
        "image/height": [height],
        "image/width": [width],
        "image/object/bbox/xmin": boxes[:, 0] / width,
        "image/object/bbox/ymin": boxes[:, 1] / height,
        "image/object/bbox/xmax": boxes[:, 2] / width,
        "image/object/bbox/ymax": boxes[:, 3] / height,
        "image/object/class/label": list(labels),
        "image/object/is_crowd": list(crowd or [0] * len(labels)),
    }
    return encode_example({k: v for k, v in features.items() if k not in drop})


def write_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for data in examples:
            writer.write(data)
    return str(path)


def options(**kw):
    base = dict(input_size=SIZE, num_classes=3, max_instances=8, augment=False, seed=7)
    base.update(kw)
    return PipelineOptions(**base)


def decoded(data, opts):
    return decode_example(tf.constant(data), opts)


def test_without_augmentation_matches_inference_preprocessing():
    image_boxes = [(4, 2, 20, 10), (40, 16, 60, 30)]
    data = example_bytes(32, 64, image_boxes, [1, 3])
    opts = options()
    out = transform_example(decoded(data, opts), tf.constant(0), opts)
    reference = np.zeros((32, 64, 3), np.uint8)
    for x1, y1, x2, y2 in image_boxes:
        reference[y1:y2, x1:x2] = 255
    expected, scale = preprocess_image(reference, SIZE)
    assert scale == 2.0
    assert np.abs(out["image"].numpy() - expected).mean() < 0.5
    assert np.all(out["image"].numpy()[64:] == 0)  # padding below the 128x64 resized image
    # boxes y1, x1, y2, x2 in input pixels = original * 2
    np.testing.assert_allclose(out["boxes"].numpy(), [[4, 8, 20, 40], [32, 80, 60, 120]], atol=1e-4)
    np.testing.assert_array_equal(out["classes"].numpy(), [0, 2])


def test_flip_gives_exact_mirrored_coordinates():
    image = tf.zeros((10, 50, 3))
    boxes = tf.constant([[1.0, 5.0, 4.0, 12.0]])
    flipped_image, flipped = flip_horizontally(image, boxes)
    np.testing.assert_array_equal(flipped.numpy(), [[1.0, 38.0, 4.0, 45.0]])
    assert flipped_image.shape == (10, 50, 3)


def test_crowd_boxes_skipped_and_instances_capped():
    data = example_bytes(64, 64, [(0, 0, 10, 10), (20, 20, 30, 30), (40, 40, 50, 50)], [1, 2, 3], crowd=[0, 1, 0])
    out = decoded(data, options())
    np.testing.assert_array_equal(out["classes"].numpy(), [0, 2])
    kept = decoded(data, options(skip_crowd=False))
    np.testing.assert_array_equal(kept["classes"].numpy(), [0, 1, 2])
    capped = decoded(data, options(skip_crowd=False, max_instances=2))
    np.testing.assert_array_equal(capped["classes"].numpy(), [0, 1])


@pytest.mark.parametrize("seed_index", range(4))
def test_augmented_boxes_stay_on_the_white_objects(seed_index):
    data = example_bytes(96, 128, [(10, 10, 50, 40), (70, 50, 120, 90)], [1, 2])
    opts = options(augment=True, rand_hflip=True, crop_min_scale=0.5, crop_max_scale=2.0, translate_xy=True)
    out = transform_example(decoded(data, opts), tf.constant(seed_index), opts)
    image, boxes = out["image"].numpy()[..., 0], out["boxes"].numpy()
    assert len(boxes) >= 1
    for y1, x1, y2, x2 in boxes:
        inner = image[int(np.ceil(y1)) + 1: int(np.floor(y2)) - 1, int(np.ceil(x1)) + 1: int(np.floor(x2)) - 1]
        if inner.size:
            assert inner.min() > 200, (seed_index, (y1, x1, y2, x2))
        # just outside the box (where inside the image) is black, unless another box is there
        ring_y = int(np.floor(y1)) - 2
        if ring_y >= 0 and x2 - x1 > 4:
            row = image[ring_y, int(x1) + 2: int(x2) - 2]
            assert row.max() < 60 or len(boxes) > 1


def test_dataset_batches_targets_and_is_repeatable(tmp_path):
    path = write_records(tmp_path / "a.tfrecord", [
        example_bytes(64, 64, [(8, 8, 40, 40)], [1]),
        example_bytes(64, 64, [(2, 30, 60, 62)], [2]),
        example_bytes(64, 64, [(10, 10, 20, 20), (30, 30, 60, 60)], [3, 1]),
    ])
    anchors = generate_anchors(SIZE, AnchorConfig())
    opts = options(augment=True)
    first = next(iter(train_dataset([path], opts, anchors, 2, LOADER)))
    again = next(iter(train_dataset([path], opts, anchors, 2, LOADER)))
    images, targets = first
    assert images.shape == (2, 128, 128, 3) and images.dtype == tf.float32
    assert targets["class_targets"].shape == (2, len(anchors))
    assert targets["box_targets"].shape == (2, len(anchors), 4)
    assert targets["boxes"].shape == (2, 8, 4)
    np.testing.assert_array_equal(images.numpy(), again[0].numpy())
    np.testing.assert_array_equal(targets["class_targets"].numpy(), again[1]["class_targets"].numpy())
    # every real box has at least one positive anchor
    for row in range(2):
        present = set(targets["classes"].numpy()[row][targets["classes"].numpy()[row] >= 0])
        positive = set(targets["class_targets"].numpy()[row][targets["class_targets"].numpy()[row] >= 0])
        assert present == positive
    # resuming at example 2 gives the same second batch as an uninterrupted run
    stream = iter(train_dataset([path], opts, anchors, 2, LOADER))
    next(stream)
    second = next(stream)
    resumed = next(iter(train_dataset([path], opts, anchors, 2, LOADER, start_example=2)))
    np.testing.assert_array_equal(second[0].numpy(), resumed[0].numpy())


def test_missing_feature_label_range_and_size_errors(tmp_path):
    foreign = write_records(tmp_path / "foreign.tfrecord", [example_bytes(32, 32, [(1, 1, 9, 9)], [1],
                                                                          drop=("image/object/class/label",))])
    with pytest.raises(DataError, match=r"lack feature\(s\) \['image/object/class/label'\]"):
        check_records([foreign], num_classes=3, min_examples=1)
    big_label = write_records(tmp_path / "big.tfrecord", [example_bytes(32, 32, [(1, 1, 9, 9)], [5])])
    with pytest.raises(DataError, match=r"dataset.num_classes = 4 is too small.*label 5.*at least 6"):
        check_records([big_label], num_classes=3, min_examples=1)
    small = write_records(tmp_path / "small.tfrecord", [example_bytes(32, 32, [(1, 1, 9, 9)], [1])] * 3)
    assert check_records([small], num_classes=3, min_examples=2) == 3
    with pytest.raises(DataError, match="only 3 example.*needs 4"):
        check_records([small], num_classes=3, min_examples=4)
    with pytest.raises(DataError, match="dataset.train_tfrecords.*no TFRecord files match"):
        resolve_tfrecords([str(tmp_path / "nothing-*.tfrecord")])
