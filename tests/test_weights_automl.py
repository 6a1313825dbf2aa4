"""automl checkpoint import: the independent proof that our D0 is automl's D0, layer for layer.

../shared/data/automl_d0/ holds a checkpoint written by google/automl's own code (random seeded weights, EMA copies
that differ from the raw values) with automl's raw outputs for one image; after import ours must give the same.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from effdet_rt.cli.main import run
from effdet_rt.errors import CheckpointError
from tests.support.paths import SHARED_DATA

AUTOML_D0 = SHARED_DATA / "automl_d0"
CKPT = AUTOML_D0 / "ckpt"
TOLERANCE = 1e-4  # of the largest |output| per level, as the fixture's README asks
D0_TRAINABLE_90 = 3_880_067  # automl's own unit test


@pytest.fixture(scope="module")
def fixture_dir():
    if not (CKPT / "model.index").is_file():
        pytest.skip(f"automl fixture not found at {AUTOML_D0}")
    return AUTOML_D0


@pytest.fixture(scope="module")
def automl_weights(fixture_dir):
    from effdet_rt.weights.automl import load_automl_weights

    return load_automl_weights(CKPT)


@pytest.fixture(scope="module")
def outputs(automl_weights):
    from effdet_rt.checkpoint import assign_weights
    from effdet_rt.model.efficientdet import build_efficientdet

    model = build_efficientdet(automl_weights.config.name, automl_weights.architecture.num_classes, (512, 512))
    report = assign_weights(model, automl_weights.weights, strict=True)
    assert not report.missing and not report.unexpected
    image = np.load(AUTOML_D0 / "input.npy").astype(np.float32)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return [o.numpy() for o in model(image, training=False)], trainable


def test_identifies_d0_with_90_classes(automl_weights):
    meta = json.loads((AUTOML_D0 / "meta.json").read_text())
    assert automl_weights.config.name == meta["model"] == "efficientdet-d0"
    assert automl_weights.architecture.num_classes == meta["num_classes"] == 90
    assert automl_weights.architecture.num_anchors == 9
    assert any("ExponentialMovingAverage values of all 493" in n for n in automl_weights.notices)


def test_every_trainable_parameter_comes_from_the_checkpoint(outputs):
    assert outputs[1] == D0_TRAINABLE_90


@pytest.mark.parametrize("level", [3, 4, 5, 6, 7])
def test_raw_outputs_equal_automl(outputs, level):
    reference = np.load(AUTOML_D0 / "outputs.npz")
    ours, _ = outputs
    for kind, index in (("class", level - 3), ("box", 5 + level - 3)):
        expected = reference[f"{kind}_level{level}"]
        assert ours[index].shape == expected.shape
        scale = float(np.abs(expected).max())
        assert scale > 1.0  # the fixture's outputs depend strongly on the input
        assert float(np.abs(ours[index] - expected).max()) <= TOLERANCE * scale, (kind, level)


def test_ema_values_are_the_ones_imported(automl_weights):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(CKPT / "model"))
    name = "class_net/class-predict/pointwise_kernel"
    ours = automl_weights.weights["class_net_predict/pointwise_kernel"]
    np.testing.assert_array_equal(ours, reader.get_tensor(name + "/ExponentialMovingAverage"))
    assert np.abs(ours - reader.get_tensor(name)).max() > 1e-3  # raw differs: choosing EMA matters
    fusion = automl_weights.weights["fpn_cell1_node4_fuse/weights"]
    expected = [reader.get_tensor(f"fpn_cells/cell_1/fnode4/WSM{s}/ExponentialMovingAverage") for s in ("", "_1", "_2")]
    np.testing.assert_array_equal(fusion, np.array(expected, np.float32))


def test_missing_ema_falls_back_to_raw_and_says_so(fixture_dir, monkeypatch):
    from effdet_rt.weights import automl

    everything = automl.read_tf_checkpoint(CKPT)
    raw_only = {n: v for n, v in everything.items() if not n.endswith(automl.EMA_SUFFIX)}
    monkeypatch.setattr(automl, "read_tf_checkpoint", lambda path: raw_only)
    checkpoint = automl.read_automl_checkpoint(CKPT)
    assert checkpoint.notices[0] == "no ExponentialMovingAverage copies in the checkpoint: imported the raw weights"
    name = "box_net/box-predict/bias"
    np.testing.assert_array_equal(checkpoint.tensors[name], everything[name])


def test_unmapped_tensor_is_an_error_naming_it(automl_weights, fixture_dir):
    from effdet_rt.weights import automl

    tensors = automl.read_automl_checkpoint(CKPT).tensors
    tensors["efficientnet-b0/head/conv2d/kernel"] = np.zeros((1, 1, 320, 1280), np.float32)
    with pytest.raises(CheckpointError, match=r"1 automl tensor\(s\) have no place .*efficientnet-b0/head/conv2d/kernel"):
        automl.to_our_names(tensors, automl_weights.config, "ckpt")


def test_other_model_size_is_refused_naming_the_size(fixture_dir):
    from effdet_rt.weights.automl import load_automl_weights

    with pytest.raises(CheckpointError, match=r"an efficientdet-d0 checkpoint \(backbone efficientnet-b0.*not efficientdet-d1"):
        load_automl_weights(CKPT, "efficientdet-d1")


def test_cli_import_writes_edrt_with_spec(fixture_dir, tmp_path, capsys, automl_weights):
    from effdet_rt.checkpoint import load_checkpoint

    out = tmp_path / "d0.edrt"
    assert run(["weights", "import", str(CKPT / "model.index"), "-o", str(out), "-k", "pw", "-n", "3"]) == 0
    printed = capsys.readouterr().out
    assert "class head: the checkpoint predicts 90 classes, the model 3" in printed
    checkpoint = load_checkpoint(out, "pw")
    assert checkpoint.metadata["model_name"] == "efficientdet-d0" and checkpoint.metadata["num_classes"] == 4
    assert "num_classes: 4" in checkpoint.spec_yaml and "name: efficientdet-d0" in checkpoint.spec_yaml
    assert checkpoint.weights["class_net_predict/bias"].shape == (27,)
    np.testing.assert_array_equal(checkpoint.weights["box_net_predict/bias"], automl_weights.weights["box_net_predict/bias"])
    np.testing.assert_array_equal(checkpoint.weights["stage4_block1_expand_conv/kernel"],
                                  automl_weights.weights["stage4_block1_expand_conv/kernel"])


@pytest.mark.parametrize("case", ["wrong_size", "not_a_checkpoint", "bad_output"])
def test_cli_bad_input_one_error_nothing_written(fixture_dir, tmp_path, capsys, case):
    out = tmp_path / "out.edrt"
    args = {
        "wrong_size": [str(CKPT), "-o", str(out), "-m", "efficientdet-d1"],
        "not_a_checkpoint": [str(AUTOML_D0 / "meta.json"), "-o", str(out)],
        "bad_output": [str(CKPT), "-o", str(tmp_path / "out.h5")],
    }[case]
    assert run(["weights", "import", *args, "-k", "pw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert list(tmp_path.iterdir()) == []
