"""CLI options that had no test: `build --calib-only/--calib-cache/--timing-cache` and `engine-info --json` with the
fake TensorRT (tests/support/fake_tensorrt.py), and `infer --max-boxes-to-draw` (boxes counted as they are drawn)."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from effdet_rt.calib import tensorrt as trt_calibrator
from effdet_rt.cli.main import run
from tests.support.fake_tensorrt import fake_tensorrt, tiny_onnx
from tests.support.infer import KEY, bccd_images


@pytest.fixture()
def trt(monkeypatch):
    class FakeUploader:
        def __call__(self, batch):
            return 4096

    monkeypatch.setattr(trt_calibrator, "DeviceUploader", FakeUploader)
    fake = fake_tensorrt("10.0.1")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


@pytest.fixture(scope="module")
def calib_records(tmp_path_factory):
    """Three 80x60 JPEG records, as dataset-convert writes them (only the image is read for calibration)."""
    import tensorflow as tf

    path = tmp_path_factory.mktemp("calib") / "calib-00000.tfrecord"
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(3):
            jpeg = tf.io.encode_jpeg(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).numpy()
            example = tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[60])),
                "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[80])),
            }))
            writer.write(example.SerializeToString())
    return path


def test_build_calib_only_then_from_the_cache_with_a_timing_cache(trt, calib_records, tmp_path):
    model = tiny_onnx(tmp_path / "model.onnx", size=64)
    plan, cache, timing = tmp_path / "m.plan", tmp_path / "calib.cache", tmp_path / "timing.cache"
    common = ["build", "-m", model, "-o", str(plan), "--backend", "tensorrt", "--precision", "int8"]
    assert run([*common, "--calib-tfrecords", str(calib_records), "--calib-batches", "2", "--calib-batch-size", "1",
                "--calib-only", "--calib-cache", str(cache)]) == 0
    assert cache.read_bytes() == b"CACHE" and not plan.exists()
    assert [c for c in trt.calls if c[0] == "calib_batch"] == [("calib_batch", 1)] * 2
    trt.calls.clear()

    timing.write_bytes(b"old")
    assert run([*common, "--calib-cache", str(cache), "--timing-cache", str(timing)]) == 0  # no data: the cache
    assert plan.read_bytes() == b"PLAN"
    assert ("calib_cache_read", b"CACHE") in trt.calls and not [c for c in trt.calls if c[0] == "calib_batch"]
    assert ("timing_cache_in", b"old") in trt.calls and timing.read_bytes() == b"old+"  # read, then written back
    info = json.loads((tmp_path / "m.plan.json").read_text())
    assert info["precision"] == "int8" and info["profile"]["max"][0] == 8


def add_runtime(trt, shapes: dict[str, tuple[tuple[int, ...], str, bool]], profile):
    """A fake TensorRT runtime whose engine has the given tensors: name -> (shape, numpy dtype name, is_input)."""
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: np.dtype(dtype).type
    names = list(shapes)

    class Engine:
        num_io_tensors = len(names)

        def get_tensor_name(self, index):
            return names[index]

        def get_tensor_mode(self, name):
            return "INPUT" if shapes[name][2] else "OUTPUT"

        def get_tensor_shape(self, name):
            return shapes[name][0]

        def get_tensor_dtype(self, name):
            return shapes[name][1]

        def get_tensor_profile_shape(self, name, index):
            return profile

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"PLAN" else None

    trt.Runtime = Runtime


def test_engine_info_json(trt, tmp_path, capsys):
    add_runtime(trt, {
        "images": ((-1, 64, 64, 3), "float32", True),
        "num_detections": ((-1, 1), "int32", False),
        "detection_boxes": ((-1, 100, 4), "float32", False),
    }, [(1, 64, 64, 3), (4, 64, 64, 3), (8, 64, 64, 3)])
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"PLAN")
    (tmp_path / "m.plan.json").write_text(json.dumps({"precision": "fp16", "tensorrt": "10.0.1"}))
    capsys.readouterr()
    assert run(["engine-info", str(plan), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "file": str(plan), "tensorrt": "10.0.1", "built_with": "10.0.1", "precision": "fp16",
        "tensors": [
            {"name": "images", "io": "input", "shape": [-1, 64, 64, 3], "dtype": "float32"},
            {"name": "num_detections", "io": "output", "shape": [-1, 1], "dtype": "int32"},
            {"name": "detection_boxes", "io": "output", "shape": [-1, 100, 4], "dtype": "float32"},
        ],
        "profile": {"images": {"min": [1, 64, 64, 3], "opt": [4, 64, 64, 3], "max": [8, 64, 64, 3]}},
    }
    (tmp_path / "bad.plan").write_bytes(b"not a plan")
    assert run(["engine-info", str(tmp_path / "bad.plan"), "--json"]) == 2
    assert "cannot load this plan" in capsys.readouterr().err


@pytest.mark.slow
def test_max_boxes_to_draw_limits_the_boxes_drawn(bccd_root, tmp_path, monkeypatch, tiny_checkpoint):
    import shutil

    from effdet_rt.infer import draw

    folder = tmp_path / "images"
    folder.mkdir()
    for path in bccd_images(bccd_root, 2):
        shutil.copy(path, folder / path.name)
    drawn: list[str] = []
    original = draw._draw_one
    monkeypatch.setattr(draw, "_draw_one", lambda picture, d, size, box, text, *rest: (
        drawn.append(text), original(picture, d, size, box, text, *rest))[-1])
    out = tmp_path / "out"
    assert run(["infer", "-m", str(tiny_checkpoint), "-k", KEY, "-i", str(folder), "-o", str(out),
                "--max-boxes-to-draw", "3", "--min-score", "0.05"]) == 0
    detections = json.loads((out / "detections.json").read_text())
    per_image = {}
    for d in detections:
        per_image.setdefault(d["image_id"], []).append(d["score"])
    assert len(per_image) == 2 and all(len(s) > 3 for s in per_image.values())  # more found than drawn
    assert len(drawn) == 6
    # the three best of each image, best drawn last (on top)
    want = sorted(f"{s:.2f}" for scores in per_image.values() for s in sorted(scores, reverse=True)[:3])
    assert sorted(text.split()[-1] for text in drawn) == want
