import numpy as np
import pytest

from effdet_rt.data.preprocess import decode_image, preprocess_image
from effdet_rt.detections import Detections
from effdet_rt.errors import DataError
from effdet_rt.utils.atomic import atomic_dir, atomic_write_text


def test_preprocess_keeps_aspect_and_pads_bottom_right():
    image = np.full((100, 200, 3), 200, np.uint8)
    out, scale = preprocess_image(image, (128, 128))
    assert out.shape == (128, 128, 3) and out.dtype == np.float32
    assert scale == pytest.approx(0.64)
    assert out[:64].min() == 200.0 and out[64:].max() == 0.0


def test_detections_scaled_and_filtered():
    det = Detections(
        boxes=np.array([[[10, 20, 30, 40], [0, 0, 500, 500], [1, 1, 2, 2]]], np.float32),
        scores=np.array([[0.9, 0.5, 0.1]]),
        classes=np.array([[1, 2, 3]]),
        num_detections=np.array([3]),
    )
    scaled = det.scaled([0.5], [(300, 400)])
    np.testing.assert_allclose(scaled.boxes[0, 0], [20, 40, 60, 80])
    np.testing.assert_allclose(scaled.boxes[0, 1], [0, 0, 400, 300])
    kept = det.filtered(0.4)
    assert kept.num_detections.tolist() == [2]
    assert kept.classes[0, :2].tolist() == [1, 2]


def test_decode_image_rejects_garbage():
    with pytest.raises(DataError, match="not a readable image"):
        decode_image(b"not an image", "x.jpg")


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "new.txt"]
    atomic_write_text(out / "keep.txt", "replaced")
    assert (out / "keep.txt").read_text() == "replaced"


def test_detections_filtered_per_image_thresholds():
    det = Detections(
        boxes=np.zeros((2, 3, 4), np.float32),
        scores=np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]]),
        classes=np.array([[1, 2, 3], [4, 5, 6]]),
        num_detections=np.array([3, 2]),
    )
    kept = det.filtered(np.array([0.4, 0.75]))
    assert kept.num_detections.tolist() == [2, 1]
    assert kept.classes[0, :2].tolist() == [1, 2] and kept.classes[1, 0] == 4
