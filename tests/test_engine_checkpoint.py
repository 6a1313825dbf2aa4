"""The checkpoint backend (.edrt -> KerasEngine) against the network + post-processing called directly."""

from __future__ import annotations

import numpy as np
import pytest

from effdet_rt.data.preprocess import preprocess_batch, read_image
from effdet_rt.errors import CheckpointError
from tests.support.infer import KEY, bccd_images, tiny_spec


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    from effdet_rt.engines import load

    return load(tiny_checkpoint, key=KEY)


def direct_detections(images: list[np.ndarray], tiny_model):
    """Model call + flatten + postprocess, eagerly, without the engine; boxes mapped back to image pixels."""
    from effdet_rt.detections import Detections
    from effdet_rt.model.efficientdet import flatten_outputs, split_outputs
    from effdet_rt.model.factory import setup_from_spec
    from effdet_rt.model.postprocess import NmsConfig, postprocess

    setup = setup_from_spec(tiny_spec())
    batch, scales = preprocess_batch(images, setup.input_size)
    class_list, box_list = split_outputs(tiny_model(batch, training=False), setup.num_levels)
    logits, codes = flatten_outputs(class_list, box_list, setup.num_classes)
    boxes, scores, classes, num = postprocess(logits, codes, setup.anchors(), NmsConfig(max_detections=100))
    raw = Detections(boxes.numpy(), scores.numpy(), classes.numpy() + 1, num.numpy())
    return raw.scaled(scales, [image.shape[:2] for image in images])


def matched_fraction(got, want, pixels: float = 0.25, score_tol: float = 1e-4) -> float:
    """Share of ``got``'s detections that ``want`` has too (same class, corners within ``pixels``, same score).

    Graph and eager execution round differently, so near-tied scores may swap places or cross the top-100 edge.
    """
    boxes, scores, classes = got
    want_boxes, want_scores, want_classes = want
    hits = 0
    for box, score, cls in zip(boxes, scores, classes, strict=True):
        close = (np.abs(want_boxes - box).max(axis=1) <= pixels) & (np.abs(want_scores - score) <= score_tol)
        hits += bool(np.any(close & (want_classes == cls)))
    return hits / max(len(scores), 1)


def test_load_picks_checkpoint_backend(engine):
    from effdet_rt.engines.runtime.checkpoint import KerasEngine

    assert isinstance(engine, KerasEngine)
    assert engine.input_size == (128, 128)
    assert engine.describe()["backend"] == "checkpoint"
    assert engine.describe()["num_classes"] == 3


def test_engine_equals_model_plus_postprocess_on_bccd(engine, bccd_root, tiny_model):
    images = [read_image(path) for path in bccd_images(bccd_root, 3)]
    got = engine.infer(images)
    want = direct_detections(images, tiny_model)
    assert got.boxes.shape == (3, 100, 4)
    np.testing.assert_array_equal(got.num_detections, want.num_detections)
    for i in range(3):
        assert matched_fraction(got.per_image(i), want.per_image(i)) >= 0.97
    np.testing.assert_allclose(got.scores[:, :10], want.scores[:, :10], atol=1e-4)  # graph vs eager rounding
    assert set(np.unique(got.classes[0, : got.num_detections[0]])) <= {1, 2, 3}
    assert got.boxes[..., 2].max() <= 640 and got.boxes[..., 3].max() <= 480  # original 640x480 pixels


def test_scores_are_spread_so_comparisons_mean_something(engine, bccd_root):
    scores = engine.infer([read_image(bccd_images(bccd_root, 1)[0])]).scores[0]
    assert scores[0] > 0.5 and len(np.unique(np.round(scores, 4))) > 50


def test_empty_batch_gives_empty_detections(engine):
    out = engine.run(np.zeros((0, 128, 128, 3), np.float32))
    assert out.boxes.shape == (0, 100, 4) and len(out) == 0


def test_wrong_key_is_a_checkpoint_error(tiny_checkpoint):
    from effdet_rt.engines import load

    with pytest.raises(CheckpointError, match="wrong encryption key"):
        load(tiny_checkpoint, key="not-the-key")


def test_spec_given_sets_max_detections_not_architecture(tiny_checkpoint):
    from effdet_rt.engines.runtime.checkpoint import load_engine
    from effdet_rt.spec.validation import validate_spec

    other = validate_spec({"model": {"input_width": 256, "input_height": 256}, "evaluate": {
        "max_detections_per_image": 7}, "encryption_key": KEY}, "cli")
    engine = load_engine(tiny_checkpoint, spec=other)
    assert engine.input_size == (128, 128)
    out = engine.run(np.full((1, 128, 128, 3), 100.0, np.float32))
    assert out.boxes.shape == (1, 7, 4) and out.num_detections[0] == 7
