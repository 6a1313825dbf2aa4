"""train.qat: fake-quant convs, a QAT run from a float checkpoint, its checkpoint, Q/DQ export and INT8 build."""

from pathlib import Path

import numpy as np
import pytest

from effdet_rt.cli.main import run
from tests.support.data import bccd_val_head, steps_run_eagerly

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

KEY = "qat-test-key"
CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")
# heads of the TF fake-quant model and its Q/DQ ONNX (see test_onnx_runtime_matches_the_qat_model)
LOGIT_CORRELATION = 0.8


@pytest.fixture(scope="module")
def records(bccd_root, tmp_path_factory) -> Path:
    """The first 4 BCCD val images as one TFRecord file."""
    return bccd_val_head(bccd_root, tmp_path_factory.mktemp("qat_records"), 4)


def record_images(records: Path) -> list[np.ndarray]:
    import tensorflow as tf

    from effdet_rt.data.preprocess import decode_image

    return [decode_image(tf.train.Example.FromString(raw.numpy()).features.feature["image/encoded"].bytes_list.value[0])
            for raw in tf.data.TFRecordDataset(str(records))]


def float_weights_for(images: list[np.ndarray], tiny_model) -> dict:
    """The shared tiny D0 with its BatchNorm statistics taken from these images: inference-mode activations then
    equal training-mode ones, so the ranges QAT learns in training fit inference and the heads keep their signal."""
    from effdet_rt.checkpoint import assign_weights, model_weights
    from effdet_rt.data.preprocess import preprocess_image
    from effdet_rt.export.heads import raw_heads_model
    from effdet_rt.model.factory import build_model_from_spec
    from tests.support.infer import calibrate_batch_norms, tiny_spec

    model = build_model_from_spec(tiny_spec())
    assign_weights(model, model_weights(tiny_model))
    batch = np.stack([preprocess_image(image, (128, 128))[0] for image in images])
    calibrate_batch_norms(model, batch)
    weights = model_weights(model)
    logits = raw_heads_model(model, 5, 3)(batch)[0].numpy()
    weights["class_net_predict/pointwise_kernel"] *= 2.0 / logits.std()  # logits spread ~2 around the -2 bias
    return weights


def qat_overrides(records: Path, *extra: str) -> list[str]:
    return [
        f"dataset.train_tfrecords={records}", "dataset.num_classes=4",
        "model.input_width=128", "model.input_height=128", "model.anchor_scale=2",
        "train.batch_size=2", "train.num_examples_per_epoch=4", "train.num_epochs=1",
        "train.checkpoint_interval=1", "train.image_preview=false", "train.qat=true",
        "train.lr_schedule.learning_rate=0.01", "train.lr_schedule.warmup_epoch=1",
        "dataset.loader.shuffle_buffer=4", f"encryption_key={KEY}", *extra,
    ]


def test_every_conv_gets_fake_quant_and_keeps_its_weights(tiny_d0):
    from effdet_rt.model.qat import quantize_model
    from tests.support.models import count_quantized_convs

    convs = [layer.name for layer in tiny_d0.layers if type(layer).__name__ in CONV_TYPES]
    quantized = quantize_model(tiny_d0)
    assert len(convs) == 118 and count_quantized_convs(quantized) == 118
    assert all(type(quantized.get_layer(name)).__name__ == "Quant" + type(tiny_d0.get_layer(name)).__name__
               for name in convs)
    np.testing.assert_array_equal(quantized.get_layer("stem_conv").kernel.numpy(), tiny_d0.get_layer("stem_conv").kernel.numpy())
    # 118 conv inputs + the pointwise inputs inside the 32 separable convs (BiFPN 24, heads 8) have a range each
    assert sum("amax" in v.name for v in quantized.weights) == 118 + 32
    assert len(quantized.trainable_variables) == len(tiny_d0.trainable_variables)

    images = np.random.default_rng(0).uniform(0, 255, (2, 128, 128, 3)).astype(np.float32)
    quantized(images, training=True)
    normalized = tiny_d0.get_layer("normalize")(images).numpy()
    # the first training batch sets the range to its own max |x|
    assert quantized.get_layer("stem_conv").input_amax.numpy() == pytest.approx(np.abs(normalized).max(), rel=1e-6)


def test_fake_quant_rounds_to_255_symmetric_levels():
    import tensorflow as tf

    from effdet_rt.model.qat import fake_quant_activations, fake_quant_weights

    x = tf.constant(np.linspace(-2.0, 2.0, 1001, dtype=np.float32))
    levels = np.unique(fake_quant_activations(x, tf.constant(1.0)).numpy())
    assert len(levels) == 255 and levels.min() == -1.0 and levels.max() == 1.0  # clipped to the range
    kernel = tf.constant(np.stack([np.linspace(-1, 1, 9), np.linspace(-4, 4, 9)], axis=-1).reshape(1, 1, 9, 2), tf.float32)
    quantized = fake_quant_weights(kernel, channel_axis=3).numpy()
    for channel, amax in enumerate((1.0, 4.0)):  # each output channel gets its own scale amax / 127
        steps = quantized[..., channel] / (amax / 127)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.abs(quantized[..., channel]).max() == pytest.approx(amax)


@pytest.fixture(scope="module")
def qat_run(records, tmp_path_factory, tiny_model):
    """A float tiny D0 whose outputs depend on the image, saved as a pretrained checkpoint, then a 2-step QAT run
    that starts from it (TAO's flow)."""
    from effdet_rt.checkpoint import save_checkpoint
    from effdet_rt.spec.loader import load_spec, spec_to_yaml
    from effdet_rt.trainer.loop import train

    root = tmp_path_factory.mktemp("qat_run")
    float_spec = load_spec(None, qat_overrides(records, "train.qat=false"))
    float_weights = float_weights_for(record_images(records), tiny_model)
    pretrained = save_checkpoint(root / "float.edrt", float_weights, key=KEY, spec_yaml=spec_to_yaml(float_spec),
                                 metadata={"step": 0})
    messages: list[str] = []
    spec = load_spec(None, qat_overrides(records, f"train.checkpoint={pretrained}"))
    with steps_run_eagerly():
        checkpoint = train(spec, root / "results", None, log=messages.append)
    return {"checkpoint": checkpoint, "messages": messages, "float": float_weights, "root": root, "spec": spec}


def test_qat_run_starts_from_the_float_checkpoint_and_trains(qat_run):
    from effdet_rt.checkpoint import load_checkpoint

    text = "\n".join(qat_run["messages"])
    assert "train.qat" in text and "pretrained weights" in text and "loaded " in text
    saved = load_checkpoint(qat_run["checkpoint"], KEY)
    assert saved.metadata["step"] == 2
    losses = saved.metadata["history_losses"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    ranges = {name: value for name, value in saved.weights.items() if "amax" in name}
    assert len(ranges) == 150 and all(float(v) > 0 for v in ranges.values())
    float_names = set(qat_run["float"])
    assert float_names < set(saved.weights) and set(saved.weights) - float_names == set(ranges)


def test_qat_checkpoint_round_trips(qat_run):
    """The checkpoint rebuilds the fake-quant model with every weight and learnt range (resuming reads the same
    archive through the same code as a float run, which tests/test_train_run.py covers)."""
    from effdet_rt.checkpoint import load_checkpoint, model_weights
    from effdet_rt.engines.runtime.checkpoint import load_engine
    from effdet_rt.model.qat import is_quantized

    saved = load_checkpoint(qat_run["checkpoint"], KEY)
    engine = load_engine(qat_run["checkpoint"], key=KEY)
    assert is_quantized(engine.model)
    loaded = model_weights(engine.model)
    assert sorted(loaded) == sorted(saved.weights)
    for name, value in saved.weights.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def _producer(model) -> dict:
    return {output: node for node in model.graph.node for output in node.output}


def _through_layout_ops(name: str, producer: dict):
    node = producer.get(name)
    while node is not None and node.op_type in ("Reshape", "Transpose"):
        node = producer.get(node.input[0])
    return node


@pytest.fixture(scope="module")
def qat_onnx(qat_run):
    """The QAT checkpoint exported once (standard-op NMS so ONNX Runtime runs it)."""
    path = qat_run["root"] / "qat.onnx"
    assert run(["export", "-m", str(qat_run["checkpoint"]), "-o", str(path), "-k", KEY, "--nms", "onnx",
                "--min-score", "0.05", "--max-detections", "20"]) == 0
    return path


def test_export_has_qdq_around_every_conv(qat_onnx):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qat_onnx))
    producer = _producer(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 214  # 118 conv layers; the shared head convs run once per level (5), separables twice
    for conv in convs:
        assert producer[conv.input[0]].op_type == "DequantizeLinear", conv.name
        assert _through_layout_ops(conv.input[1], producer).op_type == "DequantizeLinear", conv.name
    initializers = {t.name: t for t in model.graph.initializer}
    zero_points = [numpy_helper.to_array(initializers[n.input[2]]) for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and n.input[2] in initializers]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric INT8


def test_onnx_runtime_matches_the_qat_model(qat_run, qat_onnx, records):
    """The Q/DQ ONNX against the TF fake-quant model on the images it was trained on.

    Up to the middle of the backbone the two agree to float rounding (1e-6) at all but a pixel or two, which pins the
    scales, zero points and axes of every Q/DQ pair on the way. Deeper, an activation that sits within float rounding
    of an INT8 step boundary lands one step apart in one of the two and the difference spreads (a random network has
    no margin), so the heads are compared by correlation.
    """
    import onnx
    import onnxruntime as ort
    import tf_keras as keras

    from effdet_rt.data.preprocess import preprocess_image
    from effdet_rt.engines.runtime.checkpoint import load_engine
    from effdet_rt.export.heads import raw_heads_model

    batch = np.stack([preprocess_image(image, (128, 128))[0] for image in record_images(records)]).astype(np.float32)
    loaded = load_engine(qat_run["checkpoint"], key=KEY)
    model = onnx.load(str(qat_onnx))
    inner = "efficientdet-d0_heads/stage3_block0_expand_bn/FusedBatchNormV3:0"
    for name in ("class_logits", "box_codes", inner):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": batch}), strict=True))

    tf_inner = keras.Model(loaded.model.inputs, loaded.model.get_layer("stage3_block0_expand_bn").output)(batch)
    off = np.abs(outputs[inner].transpose(0, 2, 3, 1) - tf_inner.numpy()) > 1e-4
    off_pixels = off.any(axis=-1)
    # a wrong scale, zero point or axis moves most values; a step flipped upstream moves every channel of a pixel or
    # two (CPUs differ in float rounding: AVX-512 had none here, AVX2 286 values in 2 of 4,096 pixels)
    assert off_pixels.mean() <= 0.005, f"{off_pixels.sum()} of {off_pixels.size} pixels differ"

    heads = raw_heads_model(loaded.model, loaded.setup.num_levels, loaded.setup.num_classes)
    tf_logits, tf_codes = (t.numpy() for t in heads(batch))
    assert tf_logits.std() > 0.05  # the heads depend on the image: the comparison means something
    logits_r = np.corrcoef(outputs["class_logits"].ravel(), tf_logits.ravel())[0, 1]
    codes_r = np.corrcoef(outputs["box_codes"].ravel(), tf_codes.ravel())[0, 1]
    print(f"QAT TF vs ONNX: middle of the backbone {off_pixels.sum()} of {off_pixels.size} pixels beyond 1e-4; "
          f"heads correlation: logits {logits_r:.3f}, box codes {codes_r:.3f}")
    assert logits_r > LOGIT_CORRELATION and codes_r > LOGIT_CORRELATION


def test_int8_build_of_a_qat_export_skips_calibration(qat_onnx, tmp_path, capsys):
    import onnx

    from effdet_rt.onnx.graph import read_metadata

    out = tmp_path / "qat_int8.onnx"
    assert run(["build", "-m", str(qat_onnx), "-o", str(out), "--backend", "onnxruntime", "--precision", "int8"]) == 0
    assert "calibration skipped" in capsys.readouterr().out
    built = onnx.load(str(out))
    meta = read_metadata(built)
    assert meta["precision"] == "int8" and "calibration_batches" not in meta
    ops = {n.op_type for n in built.graph.node}
    assert "QuantizeLinear" in ops or "QLinearConv" in ops
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qat_int8.onnx"]
