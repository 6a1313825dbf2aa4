"""Ctrl-C during training (checkpoint saved, exit 130) and train.amp (CPU fallback; the loss-scaling path)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.data import bccd_val_head, steps_run_eagerly

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

KEY = "interrupt-test-key"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records(bccd_root, tmp_path_factory) -> Path:
    return bccd_val_head(bccd_root, tmp_path_factory.mktemp("interrupt_records"), 4)


def tiny(records: Path, *extra: str) -> list[str]:
    return [
        f"dataset.train_tfrecords={records}", "dataset.num_classes=4",
        "model.input_width=128", "model.input_height=128", "model.anchor_scale=2",
        "train.batch_size=2", "train.num_examples_per_epoch=4", "train.checkpoint_interval=1",
        "train.image_preview=false", "dataset.loader.shuffle_buffer=4", f"encryption_key={KEY}", *extra,
    ]


def status_lines(results: Path) -> list[dict]:
    path = results / "status.json"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return lines


def test_ctrl_c_saves_a_whole_checkpoint_and_exits_130(records, tmp_path):
    from effdet_rt.checkpoint import load_checkpoint

    results = tmp_path / "results"
    spec = tmp_path / "tiny.yaml"
    spec.write_text("model:\n  name: efficientdet-d0\n")
    # many epochs of 2 steps: the first epoch end writes status.json, then SIGINT lands mid-run
    args = ["train", "-e", str(spec), "-r", str(results), *tiny(records, "train.num_epochs=1000", "evaluate.start_eval_epoch=100000")]
    env = {**os.environ, "EFFDET_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # a child started from a background job inherits SIGINT ignored, and Python then installs no Ctrl-C handler:
    # give it the default disposition, as a terminal would
    process = subprocess.Popen([sys.executable, "-m", "effdet_rt.cli.main", *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 150  # TF import, model build and the first traced step; the wait ends at step 2
        while time.monotonic() < deadline and process.poll() is None:
            if any(line.get("cur_iter", 0) >= 2 for line in status_lines(results)):
                break
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # never leave a training process behind
            process.kill()
            process.communicate()
    assert process.returncode == 130, err[-2000:]
    assert "error: training interrupted at step" in err
    step = int(err.split("interrupted at step ")[1].split(";")[0])
    assert step >= 2
    interrupted = [line for line in status_lines(results) if line.get("status") == "INTERRUPTED"]
    assert len(interrupted) == 1
    saved = results / f"efficientdet-d0_{step // 2:03d}.edrt"
    checkpoint = load_checkpoint(saved, KEY)
    assert checkpoint.metadata["step"] == step and checkpoint.metadata["epoch"] == step // 2
    assert {"raw", "ema", "optimizer"} <= set(checkpoint.groups)
    leftovers = [p.name for p in results.iterdir() if p.name.startswith(".") or ".tmp" in p.name or p.name.endswith("~")]
    assert leftovers == []


def test_amp_on_cpu_says_so_and_trains_in_float32(records, tmp_path):
    from effdet_rt.checkpoint import load_checkpoint
    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer.loop import train

    messages: list[str] = []
    spec = load_spec(None, tiny(records, "train.amp=true", "train.num_examples_per_epoch=2", "train.num_epochs=1"))
    with steps_run_eagerly():
        path = train(spec, tmp_path / "amp", None, log=messages.append)
    assert any("train.amp: no GPU, so training runs in float32" in m for m in messages)
    checkpoint = load_checkpoint(path, KEY)
    assert all(value.dtype == np.float32 for value in checkpoint.weights.values())
    assert np.isfinite(checkpoint.metadata["history_losses"]).all()


def _step_gradients(trainer, batch, monkeypatch) -> list[np.ndarray]:
    """Run the trainer's own step function eagerly on ``batch`` and return the gradients it hands to the optimizer
    (after unscaling, when loss scaling is on). Nothing is applied, so the weights stay as they were."""
    captured = {}

    def capture(grads_and_vars, **kwargs):
        captured["grads"] = [np.asarray(g, np.float32) for g, _ in grads_and_vars]

    monkeypatch.setattr(trainer.parts.optimizer, "apply_gradients", capture)
    trainer.step_function().python_function(batch)
    return captured["grads"]


@pytest.fixture(scope="module")
def float32_trainer(records, tmp_path_factory):
    """A D0 trainer in float32 with seeded weights and one fixed batch (built once for both loss-scaling tests)."""
    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer import loop

    spec = load_spec(None, tiny(records, "train.num_epochs=1", "model.name=efficientdet-d0"))
    trainer = loop._Trainer(spec, loop.prepare_results_dir(tmp_path_factory.mktemp("amp")), KEY, lambda _: None, None)
    trainer.build()
    model = trainer.parts.model
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim > 1 else w for w in model.get_weights()])
    return trainer, next(iter(trainer.dataset(0)))


def test_loss_scaling_path_gives_the_unscaled_gradients(float32_trainer, monkeypatch):
    """The amp step scales the loss, differentiates and unscales: in float32 compute with a fixed power-of-two scale
    every gradient is exactly the plain step's (scaling by 2**k only shifts exponents), whatever the CPU's kernels."""
    import tf_keras as keras

    trainer, batch = float32_trainer
    plain_optimizer = trainer.parts.optimizer
    plain = _step_gradients(trainer, batch, monkeypatch)
    scaled_optimizer = keras.mixed_precision.LossScaleOptimizer(plain_optimizer, dynamic=False, initial_scale=2.0**12)
    monkeypatch.setattr(trainer.parts, "optimizer", scaled_optimizer)
    monkeypatch.setattr(trainer, "amp", True)
    scaled = _step_gradients(trainer, batch, monkeypatch)
    assert len(scaled) == len(plain) == len(trainer.parts.model.trainable_variables)
    flat_scaled, flat_plain = np.concatenate([g.ravel() for g in scaled]), np.concatenate([g.ravel() for g in plain])
    assert np.linalg.norm(flat_plain) > 0
    # without the unscaling step the two would differ by the factor 4096
    np.testing.assert_allclose(flat_scaled, flat_plain, rtol=1e-6, atol=1e-6 * float(np.abs(flat_plain).max()))


def test_float16_training_step_runs_with_a_dynamic_loss_scale(float32_trainer, records, tmp_path, monkeypatch):
    """amp forced on without a GPU: float16 compute, float32 variables, a dynamic loss scale > 1, and a step whose
    loss and gradients agree with float32 at the level half precision allows (loose bounds: the float16 rounding
    differs between CPU kernel sets)."""
    import tf_keras as keras

    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer import loop

    monkeypatch.setattr(loop, "use_mixed_precision", lambda spec, log: True)
    spec = load_spec(None, tiny(records, "train.num_epochs=1", "model.name=efficientdet-d0"))
    trainer = loop._Trainer(spec, loop.prepare_results_dir(tmp_path / "amp16"), KEY, lambda _: None, None)
    trainer.build()
    model, optimizer = trainer.parts.model, trainer.parts.optimizer
    assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) and optimizer.dynamic
    assert float(optimizer.loss_scale) > 1.0
    convs = [layer for layer in model.submodules if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "float16" for layer in convs)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim > 1 else w for w in model.get_weights()])
    plain_trainer, batch = float32_trainer  # same seeded weights, same batch
    half = np.concatenate([g.ravel() for g in _step_gradients(trainer, batch, monkeypatch)])
    plain = np.concatenate([g.ravel() for g in _step_gradients(plain_trainer, batch, monkeypatch)])
    assert np.isfinite(half).all()
    cosine = float(np.dot(half, plain) / (np.linalg.norm(half) * np.linalg.norm(plain)))
    assert cosine > 0.9, cosine  # half-precision noise is a few percent of the norm; a wrong scale or sign is not
    values = trainer.step_function().python_function(batch)  # the real apply: weights move, stay finite
    assert np.isfinite(float(values["total_loss"]))
    assert all(np.isfinite(w).all() for w in model.get_weights())
