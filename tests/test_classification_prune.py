"""`effdet-rt classification prune`: the detector's min-weight pruner on an EfficientNet-B0 classifier.

On the network: threshold 0 keeps every filter (identical logits), zeroed filters go with exactly the parameters
counted by hand and the logits on real hymenoptera images stay; on the whole flow: train -> prune (CLI, status.json)
-> evaluate -> retrain from train.pretrained_model_path -> ONNX whose probabilities match TensorFlow; bad input is
one error line and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from effdet_rt.cli.main import run
from effdet_rt.prune.criteria import PruneSettings
from tests.support.data import steps_run_eagerly

HYMENOPTERA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hymenoptera" / "hymenoptera_data"
KEY = "classification-prune-test-key"
SIZE = "3,32,32"
THRESHOLD = 0.9  # on a freshly initialised B0 this drops most of the parameters

pytestmark = pytest.mark.slow


def hymenoptera_images(split: str, per_class: int) -> list[Path]:
    if not HYMENOPTERA.is_dir():
        pytest.skip(f"real data not found at {HYMENOPTERA}")
    return [p for name in ("ants", "bees") for p in sorted((HYMENOPTERA / split / name).glob("*.jpg"))[:per_class]]


# ---------------------------------------------------------------- the network


@pytest.fixture(scope="module")
def network():
    """A B0 classifier (2 classes, 32x32, dropout head) with random BatchNorm statistics, and 6 val images."""
    import tf_keras as keras

    from effdet_rt.classification.images import ImageFormat, eval_image
    from effdet_rt.classification.model import build_classifier
    from effdet_rt.classification.spec import load_classification_spec

    spec = load_classification_spec(None, [f"model.input_image_size={SIZE}", "model.dropout=0.2"])
    keras.utils.set_random_seed(3)
    model = build_classifier(spec, 2)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            width = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, width), rng.normal(0, 0.2, width), rng.normal(0, 0.2, width),
                               rng.uniform(0.5, 2.0, width)])
    fmt = ImageFormat.from_spec(spec)
    images = np.stack([eval_image(p, fmt) for p in hymenoptera_images("val", 3)])
    return spec, model, images


def copy_of(spec, model):
    from effdet_rt.checkpoint import assign_weights, model_weights
    from effdet_rt.classification.model import build_classifier

    other = build_classifier(spec, 2)
    assign_weights(other, model_weights(model))
    return other


def prune(model, settings: PruneSettings):
    from effdet_rt.classification.model import passthrough_layers
    from effdet_rt.prune.pruner import prune_model

    return prune_model(model, settings, passthrough=passthrough_layers())


def test_threshold_zero_keeps_every_filter_and_the_logits(network):
    spec, model, images = network
    result = prune(model, PruneSettings(threshold=0.0))
    assert result.filter_counts == {}
    assert result.params_after == result.params_before
    assert result.model.count_params() == model.count_params()
    np.testing.assert_array_equal(result.model(images).numpy(), model(images).numpy())


# stage2_block0: expand 1x1 conv 16 -> 96, BN, depthwise 3x3, BN, squeeze-excite 96 -> 4 -> 96, project 96 -> 24
ZEROED = [3, 10, 11, 40, 95]
EXPAND, DW = "stage2_block0_expand_conv", "stage2_block0_dwconv"
# trainable parameters per channel of that group, counted from the layer shapes above: expand kernel 16 + BN gamma,
# beta 2 + depthwise 3x3 9 + BN 2 + se_reduce kernel 4 + se_expand kernel 4 and bias 1 + project kernel 24
PER_CHANNEL = 16 + 2 + 9 + 2 + 4 + 4 + 1 + 24
MOVING_STATS_PER_CHANNEL = 2 + 2  # moving mean and variance of the two BatchNorms


def zero_channels(model, channels):
    """Zero the channels of stage2_block0's expanded group in every layer that writes or filters them, and the
    scale and offset of its BatchNorms: those channels are then 0 wherever they are read."""
    for name in (EXPAND, DW, "stage2_block0_se_expand"):
        layer = model.get_layer(name)
        weights = layer.get_weights()
        if name == DW:
            weights[0][:, :, channels, :] = 0.0
        else:
            weights[0][..., channels] = 0.0
        layer.set_weights(weights)
    for name in ("stage2_block0_expand_bn", "stage2_block0_dw_bn"):
        layer = model.get_layer(name)
        gamma, beta, mean, var = layer.get_weights()
        gamma[channels], beta[channels] = 0.0, 0.0
        layer.set_weights([gamma, beta, mean, var])


def test_zeroed_filters_go_with_their_parameters_and_the_logits_stay(network):
    from effdet_rt.prune.pruner import trainable_parameters

    spec, base, images = network
    model = copy_of(spec, base)
    zero_channels(model, ZEROED)
    result = prune(model, PruneSettings(threshold=1e-3, granularity=1, min_num_filters=1))
    kept = 96 - len(ZEROED)
    # the squeeze-excite expand conv writes the same channels (the Multiply joins them), the depthwise filters them
    assert result.filter_counts == {EXPAND: kept, "stage2_block0_se_expand": kept}
    assert result.model.get_layer(DW).depthwise_kernel.shape == (3, 3, kept, 1)
    assert result.model.get_layer("stage2_block0_project_conv").kernel.shape == (1, 1, kept, 24)
    assert result.model.get_layer("logits").kernel.shape == (320, 2)
    assert result.params_before == trainable_parameters(model)
    assert result.params_before - result.params_after == len(ZEROED) * PER_CHANNEL
    assert model.count_params() - result.model.count_params() == len(ZEROED) * (PER_CHANNEL + MOVING_STATS_PER_CHANNEL)
    survivors = [c for c in range(96) if c not in ZEROED]
    np.testing.assert_array_equal(result.model.get_layer(EXPAND).kernel.numpy(),
                                  model.get_layer(EXPAND).kernel.numpy()[..., survivors])
    full, pruned = model(images).numpy(), result.model(images).numpy()
    assert np.abs(full).max() > 0.1  # the comparison below is not between two near-zero outputs
    np.testing.assert_allclose(pruned, full, rtol=0, atol=1e-5 * np.abs(full).max())


def test_a_real_threshold_shrinks_every_block_consistently(network):
    from effdet_rt.checkpoint import model_weights

    spec, model, images = network
    result = prune(model, PruneSettings(threshold=THRESHOLD, granularity=8, min_num_filters=8))
    counts = result.filter_counts
    assert result.params_after < 0.5 * result.params_before
    assert result.model.count_params() == sum(w.size for w in model_weights(result.model).values())
    assert all(n % 8 == 0 and n >= 8 for n in counts.values()) and "logits" not in counts
    for block in ("stage2_block0", "stage4_block1", "stage6_block3"):
        expand = counts.get(f"{block}_expand_conv", model.get_layer(f"{block}_expand_conv").filters)
        assert counts.get(f"{block}_se_expand", expand) == expand
        assert result.model.get_layer(f"{block}_dwconv").depthwise_kernel.shape[2] == expand
    widths = {result.model.get_layer(f"stage6_block{i}_project_conv").filters for i in range(4)}
    assert len(widths) == 1  # the residual Adds of a stage keep its project convs equal
    logits = result.model.get_layer("logits").kernel.shape
    assert logits == (result.model.get_layer("stage7_block0_project_conv").filters, 2)
    assert result.model(images).shape == (len(images), 2)


# ---------------------------------------------------------------- the whole flow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of B0 at 32x32 on 8 hymenoptera training images (the checkpoint to prune)."""
    root = tmp_path_factory.mktemp("clsprune")
    data = root / "train"
    for path in hymenoptera_images("train", 4):
        (data / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / path.parent.name / path.name)
    spec = root / "spec.yaml"
    spec.write_text(f"""results_dir: {root / 'results'}
key: {KEY}
data:
  train_dataset_path: {data}
  val_dataset_path: {data}
augment: {{enable_random_crop: false, enable_center_crop: false, enable_color_augmentation: false,
          mixup_alpha: 0}}
model:
  input_image_size: {SIZE}
train:
  batch_size_per_gpu: 8
  num_epochs: 1
  n_workers: 2
  optim_config: {{optimizer: adam}}
  lr_config: {{scheduler: cosine, learning_rate: 0.001, soft_start: 0}}
evaluate:
  dataset_path: {data}
  top_k: 1
  n_workers: 2
""")
    with steps_run_eagerly():  # one step: tracing it would cost more (test_classification_e2e traces the step)
        assert run(["classification", "train", "-e", str(spec)]) == 0
    return {"root": root, "spec": spec, "data": data, "checkpoint": root / "results" / "efficientnet-b0_001.edrt"}


@pytest.fixture(scope="module")
def pruned(trained):
    out = trained["root"] / "pruned"
    assert run(["classification", "prune", "-e", str(trained["spec"]), "-m", str(trained["checkpoint"]),
                "-o", str(out), "-pth", str(THRESHOLD), "-pg", "8", "-nf", "8", "-n", "max", "-eq", "union"]) == 0
    return {"out": out, "path": out / f"model_th={THRESHOLD}_eq=union.edrt"}


def test_prune_writes_the_smaller_checkpoint_and_status(trained, pruned):
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.classification.engines import KerasClassifier
    from effdet_rt.model.pruned import FILTERS_KEY
    from effdet_rt.prune.pruner import trainable_parameters

    assert sorted(p.name for p in pruned["out"].iterdir()) == [pruned["path"].name, "status.json"]
    status = json.loads((pruned["out"] / "status.json").read_text().splitlines()[-1])
    kpi = status["kpi"]
    saved = load_checkpoint(pruned["path"], KEY)
    counts = saved.metadata[FILTERS_KEY]
    original = KerasClassifier(trained["checkpoint"], KEY)
    classifier = KerasClassifier(pruned["path"], KEY)  # the smaller network rebuilt from the record
    assert status["status"] == "SUCCESS" and kpi["size_bytes"] == pruned["path"].stat().st_size
    assert kpi["param_count_before"] == trainable_parameters(original.logits_model)
    assert kpi["param_count_after"] == trainable_parameters(classifier.logits_model) < kpi["param_count_before"]
    assert kpi["pruned_layers"] == len(counts) > 0
    assert classifier.logits_model.count_params() == sum(a.size for a in saved.weights.values())
    assert saved.metadata["classes"] == ["ants", "bees"] and saved.metadata["task"] == "classification"
    assert saved.metadata["pruning"]["threshold"] == THRESHOLD
    assert saved.weights["logits/kernel"].shape[1] == 2
    assert saved.weights["stem_conv/kernel"].shape == (3, 3, 3, counts.get("stem_conv", 32))


def test_the_pruned_checkpoint_evaluates(trained, pruned, capsys):
    from effdet_rt.classification.engines import KerasClassifier
    from effdet_rt.classification.images import eval_image

    out = trained["root"] / "eval_pruned"
    assert run(["classification", "evaluate", "-e", str(trained["spec"]), "-m", str(pruned["path"]),
                "-r", str(out)]) == 0
    metrics = json.loads((out / "eval_results.json").read_text())
    classifier = KerasClassifier(pruned["path"], KEY)
    paths = sorted(trained["data"].glob("*/*.jpg"))
    predicted = classifier.predict(np.stack([eval_image(p, classifier.fmt) for p in paths])).argmax(1)
    truth = np.array([classifier.classes.index(p.parent.name) for p in paths])
    assert metrics["num_images"] == 8
    assert metrics["top_1_accuracy"] == pytest.approx(float(np.mean(predicted == truth)))


@pytest.fixture(scope="module")
def retrained(trained, pruned):
    results = trained["root"] / "retrain"
    with steps_run_eagerly():
        assert run(["classification", "train", "-e", str(trained["spec"]), "-r", str(results),
                    f"train.pretrained_model_path={pruned['path']}"]) == 0
    return results / "efficientnet-b0_001.edrt"


def test_retraining_trains_the_pruned_network(trained, pruned, retrained):
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.model.pruned import FILTERS_KEY

    before, after = load_checkpoint(pruned["path"], KEY), load_checkpoint(retrained, KEY)
    log = [json.loads(line)["message"] for line in (retrained.parent / "status.json").read_text().splitlines()]
    assert any(m.startswith(f"loaded pruned model {pruned['path']}") for m in log), log
    assert after.metadata[FILTERS_KEY] == before.metadata[FILTERS_KEY]
    assert {n: a.shape for n, a in after.weights.items()} == {n: a.shape for n, a in before.weights.items()}
    moved = [n for n in before.weights if n.endswith("kernel") and not np.array_equal(before.weights[n], after.weights[n])]
    assert "logits/kernel" in moved and "stem_conv/kernel" in moved  # one epoch of Adam moved the pruned weights


def test_a_pruned_run_resumes_as_the_pruned_network(trained, retrained):
    """The run's checkpoints carry the pruned record: resuming builds the smaller network from the checkpoint."""
    from effdet_rt.checkpoint import load_checkpoint

    with steps_run_eagerly():
        assert run(["classification", "train", "-e", str(trained["spec"]), "-r", str(retrained.parent),
                    "train.num_epochs=2"]) == 0
    first, second = load_checkpoint(retrained, KEY), load_checkpoint(retrained.parent / "efficientnet-b0_002.edrt", KEY)
    assert second.metadata["epoch"] == 2 and second.metadata["pruned_filters"] == first.metadata["pruned_filters"]
    assert {n: a.shape for n, a in second.weights.items()} == {n: a.shape for n, a in first.weights.items()}


def test_retrained_pruned_model_exports_and_onnx_runtime_matches(trained, retrained):
    import onnxruntime as ort

    from effdet_rt.classification.engines import KerasClassifier
    from effdet_rt.classification.images import eval_image

    onnx_path = trained["root"] / "pruned.onnx"
    assert run(["classification", "export", "-e", str(trained["spec"]), "-m", str(retrained), "-o", str(onnx_path),
                "--verify"]) == 0
    classifier = KerasClassifier(retrained, KEY)
    images = np.stack([eval_image(p, classifier.fmt) for p in hymenoptera_images("val", 4)])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_probabilities,) = session.run(["probabilities"], {"images": images})
    reference = classifier.predict(images)
    assert onnx_probabilities.shape == (8, 2)
    assert np.abs(onnx_probabilities - reference).max() <= 1e-4
    np.testing.assert_array_equal(onnx_probabilities.argmax(1), reference.argmax(1))


@pytest.mark.parametrize("case", ["wrong key", "missing file", "detector checkpoint", "threshold above 1",
                                  "unknown layer"])
def test_bad_input_is_one_error_and_writes_nothing(case, trained, tmp_path, capsys, request):
    from tests.support.infer import KEY as DETECTOR_KEY

    out = tmp_path / "out"
    model, key, extra, words = trained["checkpoint"], KEY, [], ""
    if case == "wrong key":
        key, words = "not the key", "wrong encryption key"
    elif case == "missing file":
        model, words = tmp_path / "nothing.edrt", "nothing.edrt"
    elif case == "detector checkpoint":
        model, key, words = request.getfixturevalue("tiny_checkpoint"), DETECTOR_KEY, "not a classification checkpoint"
    elif case == "threshold above 1":
        extra, words = ["-pth", "1.5"], "prune.threshold = 1.5 is not allowed"
    else:
        extra, words = ["-el", "stem_conv", "no_such_layer"], "excluded layer 'no_such_layer'"
    assert run(["classification", "prune", "-m", str(model), "-o", str(out), "-k", key, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not out.exists()


def test_the_detector_prune_points_a_classifier_to_classification_prune(trained, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["prune", "-m", str(trained["checkpoint"]), "-o", str(out), "-k", KEY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a classifier checkpoint; prune it with `effdet-rt classification prune`" in err[0]
    assert not out.exists()
