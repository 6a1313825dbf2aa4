"""Input sizes as TAO allows them (any multiple of 32 from 128, width and height apart): D0 at 544x416 trains,
exports in every NMS mode and runs in ONNX Runtime with the same outputs as TensorFlow.

416 and 544 are not multiples of 128, so the upper levels are ceiling divisions (416 -> 52, 26, 13, 7, 4) and
BiFPN's upsamplings 4 -> 7 and 7 -> 13 are not 2x: the graph must resize to the exact size of the level above.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from effdet_rt.cli.main import run
from effdet_rt.model.anchors import feature_sizes, generate_anchors
from tests.support.infer import KEY, bccd_images, build_tiny_model, save_tiny_checkpoint, sized_spec

WIDTH, HEIGHT = 544, 416
LEVELS = [(52, 68), (26, 34), (13, 17), (7, 9), (4, 5)]  # (height, width) of P3..P7
ANCHORS = sum(h * w for h, w in LEVELS) * 9


def test_levels_are_ceiling_divisions_and_anchors_sit_on_fractional_strides():
    assert feature_sizes((HEIGHT, WIDTH), 3, 7) == LEVELS
    anchors = generate_anchors((HEIGHT, WIDTH))
    assert anchors.shape == (ANCHORS, 4) == (42_516, 4)
    # the first P6 anchor is centred in a cell of 416/7 x 544/9 pixels, the last P7 anchor in the last 104 x 108.8 cell
    first_p6 = sum(h * w for h, w in LEVELS[:3]) * 9
    y1, x1, y2, x2 = anchors[first_p6]
    np.testing.assert_allclose([(y1 + y2) / 2, (x1 + x2) / 2], [416 / 7 / 2, 544 / 9 / 2], rtol=1e-6)
    y1, x1, y2, x2 = anchors[-1]
    np.testing.assert_allclose([(y1 + y2) / 2, (x1 + x2) / 2], [416 - 104 / 2, 544 - 108.8 / 2], rtol=1e-6)


def test_a_box_past_column_512_gets_anchors_that_decode_back_to_it():
    from effdet_rt.model.boxes import decode_boxes
    from effdet_rt.model.labeler import label_anchors

    anchors = generate_anchors((HEIGHT, WIDTH))
    box = np.array([[300.0, 470.0, 410.0, 540.0]], np.float32)
    classes, codes = (t.numpy() for t in label_anchors(anchors, box, np.array([2])))
    positive = np.flatnonzero(classes >= 0)
    assert len(positive) >= 1 and set(classes[positive]) == {2}
    np.testing.assert_allclose(decode_boxes(codes[positive], anchors[positive]), np.repeat(box, len(positive), 0),
                               atol=1e-3)


@pytest.fixture(scope="module")
def model_544x416():
    return build_tiny_model(WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def checkpoint_544x416(model_544x416, tmp_path_factory):
    return save_tiny_checkpoint(model_544x416, tmp_path_factory.mktemp("ckpt_544x416"), sized_spec(WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def exported(checkpoint_544x416, tmp_path_factory):
    """--nms onnx with --verify (raw heads and detections against TensorFlow, strict: a mismatch fails the export)."""
    out = tmp_path_factory.mktemp("export_544x416") / "d0_544x416.onnx"
    code = run(["export", "-m", str(checkpoint_544x416), "-o", str(out), "-k", KEY, "--nms", "onnx",
                "--min-score", "0.05", "--verify"])
    assert code == 0
    return out


def images(count: int = 2) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 255, (count, HEIGHT, WIDTH, 3)).astype(np.float32)


@pytest.mark.slow
def test_network_outputs_have_the_ceiling_sizes(model_544x416):
    from effdet_rt.model.efficientdet import split_outputs

    class_maps, box_maps = split_outputs(model_544x416(images(1), training=False), 5)
    assert [tuple(m.shape[1:3]) for m in class_maps] == LEVELS
    assert [m.shape[-1] for m in class_maps] == [9 * 3] * 5 and [m.shape[-1] for m in box_maps] == [9 * 4] * 5


@pytest.mark.slow
def test_raw_heads_in_onnx_runtime_equal_tensorflow(model_544x416):
    import onnxruntime as ort

    from effdet_rt.export.exporter import convert_raw_heads
    from effdet_rt.export.heads import raw_heads_model
    from effdet_rt.model.factory import setup_from_spec
    from tests.support.infer import tiny_spec

    setup = setup_from_spec(tiny_spec(WIDTH, HEIGHT))
    proto = convert_raw_heads(model_544x416, setup, None, 17)
    resizes = [n for n in proto.graph.node if n.op_type == "Resize"]
    by_size = [n for n in resizes if len(n.input) == 4 and n.input[3]]
    # P7 -> P6 (4x5 -> 7x9) and P6 -> P5 (7x9 -> 13x17) once per BiFPN cell (D0: 3 cells); the rest are exact 2x
    assert len(resizes) == 4 * 3 and len(by_size) == 2 * 3
    for node in resizes:  # modes TensorRT's Resize layer takes (onnx-tensorrt's operator support list)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["coordinate_transformation_mode"] in (b"asymmetric", b"half_pixel"), node.name
        assert attrs["nearest_mode"] in (b"floor", b"round_prefer_ceil"), node.name

    batch = images(2)
    tf_logits, tf_codes = (t.numpy() for t in raw_heads_model(model_544x416, setup.num_levels, setup.num_classes)(batch))
    logits, codes = ort.InferenceSession(proto.SerializeToString()).run(None, {"images": batch})
    assert logits.shape == (2, ANCHORS, 3) and codes.shape == (2, ANCHORS, 4)
    assert np.abs(logits - tf_logits).max() <= 1e-4 * max(1.0, np.abs(tf_logits).max())
    assert np.abs(codes - tf_codes).max() <= 1e-4 * max(1.0, np.abs(tf_codes).max())


@pytest.mark.slow
def test_export_in_every_nms_mode_and_the_onnx_runtime_engines_agree(exported, checkpoint_544x416, bccd_root, tmp_path):
    from effdet_rt.data.preprocess import read_image
    from effdet_rt.engines import load
    from effdet_rt.export.verify import match_detections

    dims = [d.dim_value for d in onnx.load(exported).graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [HEIGHT, WIDTH, 3]  # NHWC

    efficient, raw = tmp_path / "efficient.onnx", tmp_path / "none.onnx"
    assert run(["export", "-m", str(checkpoint_544x416), "-o", str(efficient), "-k", KEY, "--nms", "efficient"]) == 0
    nms = [n for n in onnx.load(efficient).graph.node if n.op_type == "EfficientNMS_TRT"]
    assert len(nms) == 1
    assert run(["export", "-m", str(checkpoint_544x416), "-o", str(raw), "-k", KEY, "--nms", "none"]) == 0

    fp32 = tmp_path / "fp32.onnx"
    assert run(["build", "-m", str(exported), "-o", str(fp32), "--backend", "onnxruntime"]) == 0
    pictures = [read_image(p) for p in bccd_images(bccd_root, 2)]  # 640x480 photographs, resized to 544x416
    reference = load(exported).infer(pictures)
    assert int(reference.num_detections.sum()) > 0
    assert match_detections(reference, load(fp32).infer(pictures)).rate >= 0.99
    host = load(raw).infer(pictures)  # raw heads through the host-side NMS
    assert match_detections(reference, host).rate >= 0.99


@pytest.mark.slow
def test_training_at_544x416_runs_and_labels_boxes(bccd_root, tmp_path, capsys):
    import json

    from effdet_rt.checkpoint import load_checkpoint
    from tests.support.data import bccd_val_head, steps_run_eagerly

    records = bccd_val_head(bccd_root, tmp_path / "records", 2)
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  name: efficientdet-d0\n")
    with steps_run_eagerly():
        code = run(["train", "-e", str(spec), "-r", str(tmp_path / "results"), f"dataset.train_tfrecords={records}",
                    "dataset.num_classes=4", f"model.input_width={WIDTH}", f"model.input_height={HEIGHT}",
                    "train.num_examples_per_epoch=2", "train.batch_size=2", "train.num_epochs=1",
                    "train.image_preview=false", f"encryption_key={KEY}"])
    assert code == 0, capsys.readouterr().err
    checkpoint = load_checkpoint(tmp_path / "results" / "efficientdet-d0_001.edrt", KEY)
    assert checkpoint.metadata["step"] == 1
    losses = checkpoint.metadata["history_losses"]
    assert len(losses) == 1 and np.isfinite(losses[0]) and losses[0] > 0
    status = [json.loads(line) for line in (tmp_path / "results" / "status.json").read_text().splitlines()]
    assert "epoch 1/1 done" in [s["message"] for s in status]
