import numpy as np

from effdet_rt.model.anchors import generate_anchors
from effdet_rt.model.postprocess import NmsConfig, postprocess


def test_postprocess_nms_per_class_and_score_order():
    anchors = generate_anchors((128, 128))
    num_anchors, num_classes = len(anchors), 3
    logits = np.full((1, num_anchors, num_classes), -20.0, np.float32)
    codes = np.zeros((1, num_anchors, 4), np.float32)
    # anchors 0 and 1 share a centre (IoU of a 32x32 square and a 44.8x22.4 box is about 0.49 < 0.5) -> both kept;
    # anchor 2 overlaps anchor 0 less; anchor 9 (next cell, same shape as anchor 0) overlaps anchor 0 with IoU 0.6
    logits[0, 0, 1] = 3.0
    logits[0, 9, 1] = 2.0  # suppressed by anchor 0 (same class)
    logits[0, 9, 2] = 1.0  # other class: kept
    boxes, scores, classes, num = (t.numpy() for t in postprocess(logits, codes, anchors, NmsConfig(score_threshold=0.05)))
    assert num.tolist() == [2]
    np.testing.assert_allclose(scores[0, :2], 1 / (1 + np.exp([-3.0, -1.0])), rtol=1e-6)
    assert classes[0, :2].tolist() == [1, 2]
    y1, x1, y2, x2 = anchors[0]
    np.testing.assert_allclose(boxes[0, 0], [x1, y1, x2, y2], atol=1e-4)
    y1, x1, y2, x2 = anchors[9]
    np.testing.assert_allclose(boxes[0, 1], [x1, y1, x2, y2], atol=1e-4)
