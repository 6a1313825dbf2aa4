import os
from pathlib import Path

import pytest

from tests.support.paths import BCCD_ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")


def _pin_xdist_worker() -> None:
    """Give each pytest-xdist worker its own share of the CPUs. TensorFlow, ONNX Runtime, OpenVINO and LiteRT size
    their thread pools to the CPUs a process may use; unpinned, two workers on two cores each run two spinning pools
    on one core's worth of time. Runs at import, before any of those libraries sizes a pool; subprocesses a test
    starts inherit the share."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= count:
        os.sched_setaffinity(0, cpus[int(worker[2:]) % count::count])


_pin_xdist_worker()


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


# Test files whose module fixtures train, convert or export models, heaviest first. pytest-xdist (--dist loadfile)
# hands files out in collection order, so starting these first keeps one long file from running alone at the end
# while the other worker sits idle.
HEAVY_FIRST = [
    "test_litert.py",
    "test_train_overfit.py",
    "test_doc_commands.py",
    "test_classification_prune.py",
    "test_classification_e2e.py",
    "test_train_multiworker.py",
    "test_triton.py",
    "test_demo.py",
    "test_model_params.py",
    "test_train_kill9.py",
    "test_prune_flow.py",
    "test_export.py",
    "test_openvino.py",
    "test_train_qat.py",
    "test_train_run.py",
    "test_prune_d0.py",
    "test_train_interrupt_amp.py",
    "test_fuzz_files.py",
    "test_litert_classifier.py",
    "test_build_auto.py",
    "test_fuzz_deploy.py",
    "test_classification_tensorrt.py",
    "test_lite_reference.py",
    "test_user_commands.py",
]


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
