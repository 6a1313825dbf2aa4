import os
from pathlib import Path

import pytest

from tests.support.paths import BCCD_ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")


@pytest.fixture(scope="session", autouse=True)
def shared_onnx_conversions(tmp_path_factory):
    """Exports convert each distinct network once per run, for every worker (tests/support/onnx_cache.py)."""
    from effdet_rt.classification import export as classifier_export
    from effdet_rt.export import exporter
    from effdet_rt.onnx.graph import keras_to_onnx
    from tests.support.onnx_cache import cached_conversion

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder, not older runs'
    cached = cached_conversion(keras_to_onnx, shared / "onnx_conversions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter, "keras_to_onnx", cached)
        patch.setattr(classifier_export, "keras_to_onnx", cached)
        yield


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    if not (BCCD_ROOT / "Annotations").is_dir():
        pytest.skip(f"real data not found at {BCCD_ROOT} (the shared/ folder beside the checkout)")
    return BCCD_ROOT


TINY_D0_CLASSES = 3
TINY_D0_SIZE = (128, 128)


@pytest.fixture(scope="session")
def tiny_d0():
    """EfficientDet-D0 with 3 real classes at 128x128, built once per test session (do not train it in place)."""
    from effdet_rt.model.efficientdet import build_efficientdet

    return build_efficientdet("efficientdet-d0", TINY_D0_CLASSES, TINY_D0_SIZE)


@pytest.fixture(scope="session")
def tiny_model():
    """The inference tests' D0 (3 real classes, 128x128): fixed random weights, a sharpened class head (do not
    train it in place)."""
    from tests.support.infer import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    """``tiny_model`` as an encrypted .edrt (key ``tests.support.infer.KEY``), written once per session."""
    from tests.support.infer import save_tiny_checkpoint

    return save_tiny_checkpoint(tiny_model, tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture(scope="session")
def tiny_onnx_nms(tiny_checkpoint, tmp_path_factory) -> Path:
    """``tiny_checkpoint`` exported by the CLI with NMS inside (--nms onnx, --min-score 0.05) and a dynamic batch,
    once per session (do not write into it)."""
    from effdet_rt.cli.main import run
    from tests.support.infer import KEY

    out = tmp_path_factory.mktemp("tiny_onnx_nms") / "tiny.onnx"
    assert run(["export", "-m", str(tiny_checkpoint), "-o", str(out), "-k", KEY, "--nms", "onnx",
                "--min-score", "0.05"]) == 0
    return out

