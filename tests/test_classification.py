"""Classification units: preprocess modes against hand-computed pixels, metrics against a hand-made prediction set,
TAO's lr schedules at hand-computed points, the spec (defaults, refusals) and bad inputs at the CLI."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from effdet_rt.classification.preprocess import preprocessing_for
from effdet_rt.classification.report import classification_metrics, format_report
from effdet_rt.classification.schedule import learning_rate_at
from effdet_rt.classification.spec import (
    classification_spec_to_yaml,
    default_classification_spec,
    load_classification_spec,
)
from effdet_rt.cli.main import run
from tests.support.cli import one_error_line

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

HYMENOPTERA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
RGB = (10.0, 128.0, 250.0)


@pytest.mark.parametrize(
    ("mode", "channels", "depth", "mean", "expected"),
    [
        ("torch", 3, 8, None, [(10 / 255 - 0.485) / 0.224, (128 / 255 - 0.456) / 0.224, (250 / 255 - 0.406) / 0.224]),
        ("tf", 3, 8, None, [10 / 127.5 - 1, 128 / 127.5 - 1, 250 / 127.5 - 1]),
        ("caffe", 3, 8, None, [250 - 103.939, 128 - 116.779, 10 - 123.68]),  # BGR out, BGR mean
        ("caffe", 3, 8, [100.0, 110.0, 120.0], [250 - 100, 128 - 110, 10 - 120]),
        ("caffe", 1, 8, None, [10 - 117.3786]),
        ("caffe", 1, 16, None, [10 - 30048.9216]),
        ("torch", 1, 8, None, [(10 / 255 - 0.449) / 0.224]),
        ("torch", 1, 16, None, [(10 / 65535 - 0.449) / 0.224]),
        ("tf", 1, 16, None, [10 / 32767.5 - 1]),
    ],
)
def test_preprocess_mode_on_a_pixel(mode, channels, depth, mean, expected):
    import tensorflow as tf

    from effdet_rt.classification.preprocess import preprocessing_layer

    prep = preprocessing_for(mode, channels, depth, mean)
    pixel = np.asarray(RGB[:channels], np.float32).reshape(1, 1, 1, channels)
    np.testing.assert_allclose(prep.apply(pixel).ravel(), expected, rtol=1e-6)
    in_graph = preprocessing_layer(prep)(tf.constant(pixel)).numpy()
    np.testing.assert_allclose(in_graph.ravel(), expected, rtol=1e-6)


# Six images, three classes; predicted = argmax = [0, 1, 1, 2, 2, 2]
LABELS = [0, 0, 1, 1, 2, 2]
PROBS = np.array([
    [0.70, 0.20, 0.10],
    [0.30, 0.50, 0.20],  # true 0, predicted 1, 0 is second
    [0.15, 0.80, 0.05],
    [0.35, 0.25, 0.40],  # true 1, predicted 2, 1 is last
    [0.10, 0.30, 0.60],
    [0.10, 0.30, 0.60],
])


def test_metrics_against_a_hand_made_prediction_set():
    m = classification_metrics(LABELS, PROBS, ["a", "b", "c"], top_k=2)
    assert m["top_1_accuracy"] == pytest.approx(4 / 6)
    assert m["top_2_accuracy"] == pytest.approx(5 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    a, b, c = (m["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((1.0, 0.5, 2 / 3, 2))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    top5 = classification_metrics(LABELS, PROBS, ["a", "b", "c"], top_k=5)
    assert top5["top_k"] == 3 and top5["top_3_accuracy"] == 1.0  # k capped at the class count
    text = format_report(m)
    assert "top-1 accuracy: 0.6667" in text and "top-2 accuracy: 0.8333" in text


@pytest.mark.parametrize(
    ("overrides", "points"),
    [
        (["scheduler=step", "learning_rate=0.1", "gamma=0.5", "step_size=25"],
         {0: 0.1, 10: 0.1 * 0.5 ** 0.4, 50: 0.025, 100: 0.1 * 0.5 ** 4}),
        (["scheduler=soft_anneal", "learning_rate=0.01", "soft_start=0.1", "annealing_points=[0.5, 0.8]",
          "annealing_divider=10"],
         {0: 3e-4, 5: 0.5 * 0.01 + 0.5 * 3e-4, 50: 0.01, 60: 0.001, 90: 0.0001}),
        (["scheduler=cosine", "learning_rate=0.1", "soft_start=0.2", "min_lr_ratio=0.01"],
         {0: 0.001, 10: 0.099 * 0.5 + 0.001, 20: 0.1, 100: 0.001 + 0.099 * (1 + math.cos(0.8 * math.pi)) / 2}),
    ],
)
def test_lr_schedules_at_hand_computed_points(overrides, points):
    from effdet_rt.classification.schedule import tf_schedule

    spec = load_classification_spec(None, [f"train.lr_config.{o}" for o in overrides])
    schedule = tf_schedule(spec.train.lr_config, 100)
    for step, expected in points.items():
        assert learning_rate_at(spec.train.lr_config, step, 100) == pytest.approx(expected, rel=1e-9)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)


def test_default_spec_round_trips_and_prints_only_fields_that_apply(tmp_path, capsys):
    assert run(["spec", "default", "--task", "classification"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "default.yaml").write_text(text)
    assert load_classification_spec(tmp_path / "default.yaml") == default_classification_spec()
    assert classification_spec_to_yaml(default_classification_spec()) == text
    assert "nesterov: false" in text and "beta_1" not in text and "gamma" not in text  # sgd + cosine defaults
    adam = load_classification_spec(None, ["train.optim_config.optimizer=adam"]).train.optim_config
    assert (adam.beta_1, adam.beta_2, adam.epsilon, adam.momentum) == (0.9, 0.999, 1e-7, None)



@pytest.fixture
def spec_file(tmp_path):
    def write(train: Path, val: Path | None = None, extra: str = "") -> Path:
        text = f"results_dir: {tmp_path / 'results'}\nkey: k\ndata:\n  train_dataset_path: {train}\n"
        if val is not None:
            text += f"  val_dataset_path: {val}\n"
        path = tmp_path / "spec.yaml"
        path.write_text(text + "model:\n  input_image_size: 3,32,32\n" + extra)
        return path
    return write


@pytest.fixture
def small_set(tmp_path):
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"real data not found at {HYMENOPTERA}")
    root = tmp_path / "train"
    for name in ("ants", "bees"):
        (root / name).mkdir(parents=True)
        for source in sorted((HYMENOPTERA / "train" / name).glob("*.jpg"))[:2]:
            shutil.copy(source, root / name / source.name)
    return root


def test_bad_spec_fields_are_one_error_line(small_set, spec_file, capsys):
    spec = spec_file(small_set)
    one_error_line(["classification", "train", "-e", str(spec), "model.arhc=x"], capsys, "did you mean arch")
    one_error_line(["classification", "train", "-e", str(spec), "model.byom_model=m.tltb"], capsys, "BYOM")
    one_error_line(["classification", "train", "-e", str(spec), "model.use_pooling=true"], capsys, "use_pooling")
    one_error_line(["classification", "train", "-e", str(spec), "train.optim_config.lr=0.1"], capsys,
                   "lr_config.learning_rate")
    one_error_line(["classification", "train", "-e", str(spec), "train.lr_config.gamma=0.5"], capsys,
                   "gamma has no effect with 'cosine'")
    one_error_line(["classification", "train", "-e", str(spec), "model.input_image_size=2,32,32"], capsys, "C = 1 or 3")
    one_error_line(["classification", "train", "-e", str(spec), "train.qat=true"], capsys, "quantization-aware")
    one_error_line(["classification", "export", "-e", str(spec), "export.output_path=m.etlt"], capsys, "*.onnx")
    one_error_line(["spec", "default", "--task", "segmentation"], capsys, "--task segmentation")
    one_error_line(["train", "-e", str(spec)], capsys, "classification spec", "effdet-rt classification")


def test_bad_data_is_one_error_line(small_set, spec_file, tmp_path, capsys):
    (small_set / "wasps").mkdir()
    spec = spec_file(small_set)
    one_error_line(["classification", "train", "-e", str(spec)], capsys, "wasps", "holds no")
    shutil.rmtree(small_set / "wasps")
    val = tmp_path / "val"
    shutil.copytree(small_set, val)
    (val / "ants").rename(val / "wasps")
    one_error_line(["classification", "train", "-e", str(spec_file(small_set, val))], capsys, "['wasps']",
                   "not classes of the model")
    spec = spec_file(small_set)
    one_error_line(["classification", "evaluate", "-e", str(spec), "-m", str(tmp_path / "none.edrt")], capsys,
                   "model file not found")
    one_error_line(["classification", "train", "-e", str(spec), "train.batch_size_per_gpu=64"], capsys,
                   "only 4 readable image(s)")


def test_unreadable_images_are_skipped_and_listed(small_set):
    from effdet_rt.classification.dataset import drop_unreadable, scan_class_folders
    from effdet_rt.classification.images import ImageFormat

    (small_set / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    dataset = scan_class_folders(small_set, "data.train_dataset_path")
    assert dataset.classes == ["ants", "bees"] and len(dataset) == 5 and dataset.labels == [0, 0, 1, 1, 1]
    kept = drop_unreadable(dataset, ImageFormat((32, 32)))
    assert len(kept) == 4 and [Path(p).name for p, _ in kept.skipped] == ["broken.jpg"]
    assert "not a readable image" in kept.skipped[0][1]


def test_classmap_round_trip(tmp_path):
    from effdet_rt.classification.dataset import read_classmap, write_classmap
    from effdet_rt.errors import DataError

    path = write_classmap(tmp_path / "classmap.json", ["ants", "bees", "wasps"])
    assert json.loads(path.read_text()) == {"ants": 0, "bees": 1, "wasps": 2}
    assert read_classmap(path) == ["ants", "bees", "wasps"]
    (tmp_path / "bad.json").write_text('{"ants": 0, "bees": 2}')
    with pytest.raises(DataError, match="index 0..N-1"):
        read_classmap(tmp_path / "bad.json")


def test_center_crop_geometry():
    """TAO's eval crop: cover (W + 32, H + 32) keeping the aspect ratio, then cut the centre."""
    from PIL import Image

    from effdet_rt.classification.images import ImageFormat, eval_transform

    # a 100x50 image whose pixel value is its x coordinate: resized by 0.96 to 96x48, cut at x 40..56
    ramp = Image.fromarray(np.tile(np.arange(100, dtype=np.uint8), (50, 1)), "L")
    out = eval_transform(ramp, ImageFormat((16, 16), channels=1, interpolation="BILINEAR", center_crop=True))
    assert out.shape == (16, 16, 1)
    expected = np.asarray(ramp.resize((96, 48), Image.BILINEAR).crop((40, 16, 56, 32)), np.float32)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert 40 <= out[0, 0, 0] <= 44 and 57 <= out[0, -1, 0] <= 60  # x 40 and 55 scaled back by 1 / 0.96
    plain = eval_transform(ramp, ImageFormat((16, 16), channels=1, center_crop=False))
    assert plain[0, 0, 0] < 5 and plain[0, -1, 0] > 94  # whole width squeezed in


def test_classifier_heads_match_imagenet_efficientnet_and_the_shared_backbone():
    import tf_keras as keras

    from effdet_rt.classification.model import build_classifier

    def trainable(model) -> int:
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)

    keras.backend.clear_session()
    imagenet = build_classifier(load_classification_spec(None, ["model.retain_head=true",
                                                                "model.input_image_size=3,32,32"]), 1000)
    assert trainable(imagenet) == 5_288_548  # Keras' EfficientNetB0, as tests/test_model_params.py pins it
    assert imagenet.get_layer("head_dropout").rate == 0.2
    spec = load_classification_spec(None, ["model.input_image_size=1,32,32", "train.bn_config.momentum=0.7",
                                           "train.bn_config.epsilon=0.01"])
    dense = build_classifier(spec, 2)
    # the detector's B0 backbone (its 3x3x3x32 stem kernel 3x3x1x32 with one input channel) + Dense(320 -> 2)
    assert trainable(dense) == 3_595_388 - 3 * 3 * 2 * 32 + 320 * 2 + 2
    bns = [layer for layer in dense.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(b.momentum, b.epsilon) for b in bns} == {(0.7, 0.01)}
    assert dense.input.shape.as_list() == [None, 32, 32, 1]
    no_bn = build_classifier(load_classification_spec(None, ["model.input_image_size=1,32,32",
                                                             "model.use_batch_norm=false"]), 2)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in no_bn.layers)
    channels = sum(int(b.gamma.shape[0]) for b in bns)  # each BN's gamma + beta become one bias per channel
    assert trainable(no_bn) == trainable(dense) - channels
    frozen = build_classifier(load_classification_spec(None, ["model.input_image_size=3,32,32",
                                                              "model.freeze_blocks=[0, 1]", "model.freeze_bn=true"]), 2)
    assert not any(layer.trainable for layer in frozen.layers if layer.name.startswith(("stem_", "stage1_")))
    assert not any(layer.trainable for layer in frozen.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert frozen.get_layer("stage2_block0_expand_conv").trainable
    keras.backend.clear_session()
    lite = build_classifier(load_classification_spec(None, ["model.arch=efficientnet-lite0", "model.retain_head=true",
                                                            "model.input_image_size=3,32,32"]), 1000)
    assert trainable(lite) == 4_652_008  # automl's EfficientNet-Lite0, as tests/test_model_lite.py pins it
    assert lite.get_layer("head_relu6").max_value == 6.0 and lite.get_layer("head_conv").filters == 1280
    keras.backend.clear_session()


def test_sixteen_bit_grayscale_keeps_its_depth(tmp_path):
    from PIL import Image

    from effdet_rt.classification.images import ImageFormat, eval_image

    values = np.full((20, 20), 40000, np.uint16)
    values[:, 10:] = 1000
    Image.fromarray(values).save(tmp_path / "deep.png")  # a 16-bit PNG (mode I;16)
    out = eval_image(tmp_path / "deep.png", ImageFormat((20, 20), channels=1, depth=16, center_crop=False))
    assert out.shape == (20, 20, 1) and out[0, 0, 0] == 40000.0 and out[0, -1, 0] == 1000.0
    prep = preprocessing_for("tf", 1, 16)
    assert prep.apply(out)[0, 0, 0] == pytest.approx(40000 / 32767.5 - 1, rel=1e-6)
