import numpy as np
import pytest

from effdet_rt.errors import SpecError
from effdet_rt.model.anchors import AnchorConfig, generate_anchors, parse_aspect_ratios
from effdet_rt.model.boxes import decode_boxes, encode_boxes, pairwise_iou, pairwise_iou_tf


def test_d0_anchor_count_and_first_anchors():
    anchors = generate_anchors((512, 512))
    assert anchors.shape == (49104, 4)
    # first anchor: level 3 (stride 8), centre (4, 4), size 4*8 = 32, aspect (1, 1)
    np.testing.assert_allclose(anchors[0], [4 - 16, 4 - 16, 4 + 16, 4 + 16])
    # second anchor: aspect (1.4, 0.7) -> width 44.8, height 22.4
    np.testing.assert_allclose(anchors[1], [4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4], rtol=1e-6)
    # last anchor: level 7 (stride 128), last cell centre (448, 448), octave 2/3, aspect (0.7, 1.4)
    size = 4 * 128 * 2 ** (2 / 3)
    np.testing.assert_allclose(anchors[-1], [448 - size * 0.7, 448 - size * 0.35, 448 + size * 0.7, 448 + size * 0.35], rtol=1e-5)


def test_anchor_count_non_square():
    config = AnchorConfig(num_scales=2, aspect_ratios=((1.0, 1.0),))
    assert generate_anchors((256, 384), config).shape == ((32 * 48 + 16 * 24 + 8 * 12 + 4 * 6 + 2 * 3) * 2, 4)


def test_box_coder_round_trip():
    rng = np.random.default_rng(0)
    anchors = generate_anchors((128, 128))
    centers = rng.uniform(0, 128, size=(len(anchors), 2))
    sizes = rng.uniform(2, 100, size=(len(anchors), 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    np.testing.assert_allclose(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes, atol=1e-5, rtol=1e-6)
    # an anchor encodes to zeros
    np.testing.assert_allclose(encode_boxes(anchors, anchors), 0.0, atol=1e-6)


def test_pairwise_iou_by_hand_in_either_corner_order_and_in_tensorflow():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0], [10, 10, 0, 0]], np.float32)
    # overlap 5x10 of two 10x10 boxes: 50 / 150; of a 10x20 and a 10x10 box: 50 / 250; no overlap, no area: 0
    want = np.array([[1 / 3, 0, 0, 0], [0.2, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(pairwise_iou(a, b), want, rtol=1e-6)
    np.testing.assert_allclose(pairwise_iou(a[:, [1, 0, 3, 2]], b[:, [1, 0, 3, 2]]), want, rtol=1e-6)
    np.testing.assert_array_equal(pairwise_iou_tf(a, b).numpy(), pairwise_iou(a, b))


def test_parse_aspect_ratios():
    assert parse_aspect_ratios("[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]") == ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    with pytest.raises(SpecError, match="model.aspect_ratios"):
        parse_aspect_ratios("[(1.0, 1.0), (1.4")
    with pytest.raises(SpecError, match="pair"):
        parse_aspect_ratios("[1, 2]")
