"""End-to-end training on real BCCD records with a tiny D0 (128x128): resume, loss, errors, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effdet_rt.checkpoint import load_checkpoint
from effdet_rt.cli.main import run
from effdet_rt.errors import UserError
from effdet_rt.spec.loader import load_spec
from effdet_rt.trainer.lr_schedule import learning_rate_at, schedule_steps
from tests.support.data import convert_bccd_val, steps_run_eagerly, write_first_records

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

KEY = "train-test-key"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bccd_records(bccd_root, tmp_path_factory):
    """BCCD val split as TFRecords, plus subsets of its first 8 and first 2 records."""
    source = convert_bccd_val(bccd_root, tmp_path_factory.mktemp("bccd_records"))
    for count in (8, 2):
        write_first_records(source, count)
    return source.parent


def tiny_overrides(records: Path, *extra: str) -> list[str]:
    return [
        f"dataset.train_tfrecords={records / 'first8.tfrecord'}",
        "dataset.num_classes=4",
        "model.input_width=128",
        "model.input_height=128",
        "model.anchor_scale=2",
        "train.batch_size=4",
        "train.num_examples_per_epoch=8",
        "train.num_epochs=2",
        "train.checkpoint_interval=1",
        "train.moving_average_decay=0.9",
        "train.lr_schedule.warmup_epoch=1",
        "train.lr_schedule.learning_rate=0.05",
        "train.image_preview=false",
        "dataset.loader.shuffle_buffer=16",
        f"encryption_key={KEY}",
        *extra,
    ]


def quiet(_message: str) -> None:
    pass


def test_resume_gives_the_same_weights_and_loss_falls(bccd_records, tmp_path):
    from effdet_rt.trainer.loop import train

    spec = load_spec(None, tiny_overrides(bccd_records, "train.num_epochs=3"))
    with steps_run_eagerly():
        straight = train(spec, tmp_path / "straight", None, log=quiet)
        first = train(spec, tmp_path / "resumed", None, log=quiet, max_seconds=0)  # stops after epoch 1
        resumed = train(spec, tmp_path / "resumed", None, log=quiet)
    assert straight.name == "efficientdet-d0_003.edrt"
    assert first.name == "efficientdet-d0_001.edrt"
    assert resumed.name == "efficientdet-d0_003.edrt"

    a, b = load_checkpoint(straight, KEY), load_checkpoint(resumed, KEY)
    assert a.metadata["step"] == b.metadata["step"] == 6
    assert a.metadata["num_classes"] == 4 and a.metadata["input_size"] == [128, 128]
    assert sorted(a.weights) == sorted(b.weights)
    for name in a.weights:
        np.testing.assert_allclose(a.weights[name], b.weights[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for name in a.groups["raw"]:
        np.testing.assert_allclose(a.groups["raw"][name], b.groups["raw"][name], rtol=1e-5, atol=1e-6, err_msg=name)
    # main weights are the EMA ones, not the raw ones
    kernel = next(n for n in a.weights if n.endswith("class_net_predict/pointwise_kernel"))
    assert not np.allclose(a.weights[kernel], a.groups["raw"][kernel])

    losses = a.metadata["history_losses"]
    assert len(losses) == 6
    np.testing.assert_allclose(losses, b.metadata["history_losses"], rtol=1e-5)
    assert np.mean(losses[-2:]) < np.mean(losses[:2])

    status = [json.loads(line) for line in (tmp_path / "straight" / "status.json").read_text().splitlines()]
    epochs = [s for s in status if s["message"].startswith("epoch ")]
    assert [s["epoch"] for s in epochs] == [1, 2, 3]
    assert status[-1]["status"] == "SUCCESS"
    png = (tmp_path / "straight" / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # results.png draws results.json, whose numbers are the checkpoint's history (resumed run: the same steps)
    for run_dir, checkpoint in (("straight", a), ("resumed", b)):
        results = json.loads((tmp_path / run_dir / "results.json").read_text())
        assert results["step"] == checkpoint.metadata["history_steps"] == [1, 2, 3, 4, 5, 6]
        assert results["epoch"] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
        assert results["total_loss"] == checkpoint.metadata["history_losses"]
        assert results["class_loss"] == checkpoint.metadata["history_class_losses"]
        # total = class + 50 x box + weight decay, which is positive and barely moves in 6 small steps
        decay = np.subtract(results["total_loss"], np.add(results["class_loss"], np.multiply(50.0, results["box_loss"])))
        assert (decay > 0).all() and np.ptp(decay) < 0.01 * decay.mean()
        assert results["learning_rate"] == pytest.approx([learning_rate_at(schedule_steps(
            spec.train.lr_schedule, 2, 3), s - 1) for s in range(1, 7)])
        with Image.open(tmp_path / run_dir / "results.png") as image:
            assert image.format == "PNG" and image.size == (1500, 750)
    epoch_status = [s for s in status if s["message"].startswith("epoch ")]
    assert [(s["cur_iter"], s["max_iter"]) for s in epoch_status] == [(2, 6), (4, 6), (6, 6)]
    assert epoch_status[-1]["eta_s"] == 0.0 and epoch_status[0]["eta_s"] >= 0 and "time_budget_s" not in epoch_status[0]
    assert list((tmp_path / "straight" / "tensorboard").glob("events.out.tfevents.*"))
    assert not list((tmp_path / "straight").glob(".*.tmp"))


def test_nan_loss_names_the_step(bccd_records, tmp_path, capsys, spec_file):
    args = ["train", "-e", spec_file, "-r", str(tmp_path / "nan"), *tiny_overrides(
        bccd_records, "train.lr_schedule.learning_rate=1e30", "train.lr_schedule.warmup_epoch=0",
        "train.clip_gradients_norm=0", "train.num_epochs=3")]
    with steps_run_eagerly():
        assert run(args) == 2
    err = capsys.readouterr().err
    assert "error: loss became" in err and "at step" in err
    assert "Traceback" not in err
    step = int(err.split("at step ")[1].split()[0])
    assert 1 <= step <= 6
    kept = sorted(p.name for p in (tmp_path / "nan").glob("*.edrt"))
    assert kept == [f"efficientdet-d0_{e:03d}.edrt" for e in range(1, (step - 1) // 2 + 1)]


# Eager steps (see tests/support/data.steps_run_eagerly): tracing the two-replica step alone took 90 s.
MIRROR_SCRIPT = """
import json, sys
from tests.support.models import configure_logical_cpus
configure_logical_cpus(2)
import tensorflow as tf
tf.config.run_functions_eagerly(True)
from effdet_rt.spec.loader import load_spec
from effdet_rt.trainer.lr_schedule import learning_rate_at, schedule_steps
from effdet_rt.checkpoint import read_metadata
from effdet_rt.trainer.loop import train
out = {}
for gpus in (1, 2):
    spec = load_spec(None, json.loads(sys.argv[1]) + [f"num_gpus={gpus}", "train.batch_size=" + str(4 // gpus)])
    path = train(spec, sys.argv[2] + f"/g{gpus}", None, log=lambda m: None)
    out[gpus] = read_metadata(path, "KEYVALUE")["history_losses"]
print("LOSSES" + json.dumps(out))
""".replace("KEYVALUE", KEY)


def test_mirrored_strategy_on_two_cpu_devices_matches_one_device(bccd_records, tmp_path):
    overrides = tiny_overrides(bccd_records, "train.num_epochs=1", "dataset.augmentation.rand_hflip=false")
    env = {**os.environ, "EFFDET_NO_PROGRESS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", MIRROR_SCRIPT, json.dumps(overrides), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = json.loads(done.stdout.split("LOSSES")[1])
    one, two = losses["1"], losses["2"]
    assert len(one) == len(two) == 2  # same global batch (4): 8 examples -> 2 steps
    np.testing.assert_allclose(two, one, rtol=2e-3)


# ---------------------------------------------------------------- bad input, through the CLI


@pytest.fixture(scope="session")
def spec_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text("model:\n  name: efficientdet-d0\n")
    return str(path)


def cli_error(capsys, args) -> str:
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_no_tfrecords_match(bccd_records, tmp_path, capsys, spec_file):
    err = cli_error(capsys, ["train", "-e", spec_file, "-r", str(tmp_path), *tiny_overrides(
        bccd_records, f"dataset.train_tfrecords={tmp_path}/missing-*.tfrecord")])
    assert "dataset.train_tfrecords" in err and "no TFRecord files match" in err
    assert not list(tmp_path.glob("*.edrt"))


def test_num_classes_smaller_than_labels(bccd_records, tmp_path, capsys, spec_file):
    err = cli_error(capsys, ["train", "-e", spec_file, "-r", str(tmp_path), *tiny_overrides(bccd_records, "dataset.num_classes=2")])
    assert "dataset.num_classes = 2 is too small" in err and "at least 4" in err


def test_batch_larger_than_dataset(bccd_records, tmp_path, capsys, spec_file):
    err = cli_error(capsys, ["train", "-e", spec_file, "-r", str(tmp_path), *tiny_overrides(
        bccd_records, f"dataset.train_tfrecords={bccd_records / 'first2.tfrecord'}")])
    assert "only 2 example(s)" in err and "train.batch_size" in err


def test_foreign_tfrecords(bccd_records, tmp_path, capsys, spec_file):
    import tensorflow as tf

    foreign = tmp_path / "other.tfrecord"
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
    with tf.io.TFRecordWriter(str(foreign)) as writer:
        writer.write(example.SerializeToString())
    err = cli_error(capsys, ["train", "-e", spec_file, "-r", str(tmp_path / "r"), *tiny_overrides(
        bccd_records, f"dataset.train_tfrecords={foreign}")])
    assert "lack feature(s)" in err and "dataset-convert" in err


def test_results_dir_not_writable(bccd_records, tmp_path, capsys, spec_file):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = cli_error(capsys, ["train", "-e", spec_file, "-r", str(blocker / "results"), *tiny_overrides(bccd_records)])
    assert str(blocker) in err and "results dir" in err


@pytest.mark.parametrize("damage", ["wrong_key", "truncated", "foreign"])
def test_bad_checkpoint_in_results_dir(bccd_records, tmp_path, capsys, damage, spec_file):
    from effdet_rt.checkpoint import save_checkpoint

    path = tmp_path / "efficientdet-d0_001.edrt"
    save_checkpoint(path, {"w": np.zeros(3, np.float32)}, key="other-key" if damage == "wrong_key" else KEY)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-10])
    if damage == "foreign":
        path.write_bytes(b"PK\x03\x04 this is a zip file, not a checkpoint" * 4)
    before = path.read_bytes()
    err = cli_error(capsys, ["train", "-e", spec_file, "-r", str(tmp_path), *tiny_overrides(bccd_records)])
    assert "efficientdet-d0_001.edrt" in err
    assert path.read_bytes() == before  # never overwritten
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".edrt") == ["efficientdet-d0_001.edrt"]


def test_library_errors_are_user_errors(bccd_records, tmp_path):
    from effdet_rt.trainer.loop import train

    spec = load_spec(None, tiny_overrides(bccd_records, "encryption_key="))
    os.environ.pop("EFFDET_KEY", None)
    with pytest.raises(UserError, match="no encryption key"):
        train(spec, tmp_path, None, log=quiet)
