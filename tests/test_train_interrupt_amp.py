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

from tests.data_support import bccd_val_head, steps_run_eagerly

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


def _one_step_gradients(records: Path, tmp_path: Path, amp: bool, monkeypatch):
    """Build the trainer with amp forced on (no GPU needed) or off and return (loss, gradients) of one batch."""
    import tensorflow as tf

    from effdet_rt.spec.loader import load_spec
    from effdet_rt.trainer import loop

    monkeypatch.setattr(loop, "use_mixed_precision", lambda spec, log: amp)
    spec = load_spec(None, tiny(records, "train.num_epochs=1", "model.name=efficientdet-d0"))
    trainer = loop._Trainer(spec, loop.prepare_results_dir(tmp_path / f"amp{amp}"), KEY, lambda _: None, None)
    trainer.build()
    model = trainer.parts.model
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim > 1 else w for w in model.get_weights()])
    captured = {}
    real_gradient = tf.GradientTape.gradient

    def capture(tape, target, sources, *args, **kwargs):
        grads = real_gradient(tape, target, sources, *args, **kwargs)
        captured["grads"] = grads
        return grads

    monkeypatch.setattr(tf.GradientTape, "gradient", capture)
    step = trainer.step_function().python_function  # eager: the gradients can be read back
    batch = next(iter(trainer.dataset(0)))
    values = step(batch)
    grads = captured["grads"]
    if amp:
        grads = trainer.parts.optimizer.get_unscaled_gradients(grads)
    return trainer, float(values["total_loss"]), [np.asarray(g, np.float32) for g in grads]


def test_loss_scaling_path_gives_the_unscaled_gradients(records, tmp_path, monkeypatch):
    import tf_keras as keras

    scaled_trainer, scaled_loss, scaled = _one_step_gradients(records, tmp_path, True, monkeypatch)
    assert isinstance(scaled_trainer.parts.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert float(scaled_trainer.parts.optimizer.loss_scale) > 1.0
    plain_trainer, plain_loss, plain = _one_step_gradients(records, tmp_path, False, monkeypatch)
    assert np.isfinite(scaled_loss) and scaled_loss == pytest.approx(plain_loss, rel=2e-2)
    assert len(scaled) == len(plain) == len(plain_trainer.parts.model.trainable_variables)
    flat_scaled, flat_plain = np.concatenate([g.ravel() for g in scaled]), np.concatenate([g.ravel() for g in plain])
    assert np.isfinite(flat_scaled).all()
    # float16 compute against float32: the same gradients up to half-precision rounding
    assert np.linalg.norm(flat_scaled - flat_plain) <= 0.1 * np.linalg.norm(flat_plain)
    for a, b in zip(scaled, plain, strict=True):
        cosine = float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        assert cosine > 0.95 or np.linalg.norm(b) < 1e-3 * np.linalg.norm(flat_plain)  # below float16 resolution
