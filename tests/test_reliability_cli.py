"""What a new user hits first: TensorFlow's start-up noise, results dirs left by failed set-ups, deepstream-config
without --num-classes, and damaged TFRecords (a clear error naming the file, never a TensorFlow stack trace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from effdet_rt.cli.main import run
from effdet_rt.cli.stderr_filter import is_startup_noise
from effdet_rt.data.tfrecord import frame_problem, frame_record
from tests.support.fake_tensorrt import tiny_onnx

pytestmark = pytest.mark.slow  # builds, trains or exports models (or runs 1,000-example properties)

REPO = Path(__file__).resolve().parents[1]

# Lines TensorFlow 2.21 writes on a healthy start on a CPU-only machine (from a real run), and real errors.
NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796178069.088583    5361 port.cc:153] oneDNN custom operations are on. You may see slightly",
    b"I0000 00:00:1796178069.089161    5361 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU "
    b"will not be used.",
    b"I0000 00:00:1796178069.221845    5361 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.",
    b"E0000 00:00:1796178071.956433    5361 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    b"Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    b"E0000 00:00:1796178071.956433    5361 op_kernel.cc:1842] OP_REQUIRES failed: No such file or directory",
    b"F0000 00:00:1796178071.956433    5361 allocator.cc:10] Check failed: size > 0",
    b"error: dataset.train_tfrecords: no TFRecord files match",
    b"Traceback (most recent call last):",
]


def test_only_known_startup_lines_count_as_noise():
    assert all(is_startup_noise(line, gpu_machine=False) for line in NOISE)
    assert not any(is_startup_noise(line, gpu_machine=False) for line in REAL)
    # With an NVIDIA driver installed, a failing cuInit is a real fault and must be shown.
    assert not is_startup_noise(NOISE[-1], gpu_machine=True)
    assert not is_startup_noise(NOISE[2], gpu_machine=True)


def _python(code: str, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


HEALTHY_TF = """
import os, sys
from effdet_rt.cli.stderr_filter import install_stderr_filter
assert install_stderr_filter()
import tensorflow as tf
print(tf.config.list_physical_devices("CPU")[0].device_type, float(tf.reduce_sum(tf.ones([3]))))
os.write(2, b"E0000 00:00:1.0    1 real_op.cc:7] a genuine native error\\n")
print("python error line", file=sys.stderr)
"""


def test_healthy_tensorflow_start_prints_no_noise_but_real_errors_pass():
    done = _python(HEALTHY_TF)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "CPU 3.0\n"
    lines = done.stderr.splitlines()
    assert "E0000 00:00:1.0    1 real_op.cc:7] a genuine native error" in lines
    assert "python error line" in lines
    for noise in ("cuInit", "oneDNN custom operations", "cudart_stub", "cpu_feature_guard", "absl::InitializeLog"):
        assert not any(noise in line for line in lines), done.stderr


def truncated_tfrecord(path: Path) -> Path:
    """One 100-byte record cut short: 86 of its 116 bytes."""
    path.write_bytes(frame_record(b"x" * 100)[:-30])
    return path


def test_frame_check_finds_truncation_and_corruption(tmp_path):
    good = tmp_path / "good.tfrecord"
    good.write_bytes(frame_record(b"a" * 10) + frame_record(b""))
    assert frame_problem(good) is None
    assert frame_problem(truncated_tfrecord(tmp_path / "cut.tfrecord")) == "truncated: record 0 at byte 0 ends before its 100 bytes"
    two = tmp_path / "two.tfrecord"
    two.write_bytes(good.read_bytes() + frame_record(b"z" * 50)[:-1])
    assert frame_problem(two) == "truncated: record 2 at byte 42 ends before its 50 bytes"
    flipped = bytearray(good.read_bytes())
    flipped[15] ^= 0xFF
    (tmp_path / "flip.tfrecord").write_bytes(bytes(flipped))
    assert frame_problem(tmp_path / "flip.tfrecord") == "corrupt: record 0 at byte 0 fails its CRC check"
    (tmp_path / "short.tfrecord").write_bytes(b"\x01\x02")
    assert "header bytes" in frame_problem(tmp_path / "short.tfrecord")


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text("model:\n  name: efficientdet-d0\n  input_width: 128\n  input_height: 128\n"
                    "dataset:\n  num_classes: 4\ntrain:\n  batch_size: 2\nencryption_key: k\n")
    return str(path)


def test_glob_matching_nothing_leaves_no_results_dir(tmp_path, capsys, spec_file):
    results = tmp_path / "new" / "results"
    code = run(["train", "-e", spec_file, "-r", str(results), f"dataset.train_tfrecords={tmp_path}/none-*.tfrecord"])
    assert code == 2
    assert "no TFRecord files match" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_damaged_tfrecord_names_the_file_in_one_line_and_leaves_no_results_dir(tmp_path, spec_file):
    """Through the real entry point (a subprocess, as a user runs it): TensorFlow is imported to read the records,
    and stderr is exactly one `error:` line: no start-up noise, no stack trace."""
    bad = truncated_tfrecord(tmp_path / "train-00001.tfrecord")
    results = tmp_path / "runs" / "results"
    code = ("import sys; from effdet_rt.cli.main import main; sys.argv = ['effdet-rt'] + sys.argv[1:]; main()")
    done = _python(code, "train", "-e", spec_file, "-r", str(results), f"dataset.train_tfrecords={bad}",
                   env_extra={"EFFDET_NO_PROGRESS": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {bad}: damaged TFRecord file (truncated: record 0 at byte 0")
    assert not (tmp_path / "runs").exists()


def test_deepstream_config_reads_num_classes_from_onnx_metadata(tmp_path):
    model_path = Path(tiny_onnx(tmp_path / "model.onnx", batch=1, size=16))
    model = onnx.load(str(model_path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "effdet_rt.num_classes", json.dumps(3)
    onnx.save(model, str(model_path))
    out = tmp_path / "ds"
    assert run(["deepstream-config", "-m", str(model_path), "-o", str(out), "--threshold", "0.45"]) == 0
    assert (out / "labels.txt").read_text() == "class_1\nclass_2\nclass_3\n"
    text = (out / "config_infer_primary_effdet.txt").read_text()
    assert "\nnum-detected-classes=3\n" in text and text.endswith("[class-attrs-all]\npre-cluster-threshold=0.45\n")
    # --num-classes still wins over the metadata
    assert run(["deepstream-config", "-m", str(model_path), "-o", str(tmp_path / "ds5"), "--num-classes", "5"]) == 0
    assert "\nnum-detected-classes=5\n" in (tmp_path / "ds5" / "config_infer_primary_effdet.txt").read_text()
    # a plan: its build record names the ONNX it came from
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"PLAN")
    (tmp_path / "m.plan.json").write_text(json.dumps({"precision": "fp16", "onnx": str(model_path), "profile": {
        "min": [1, 16, 16, 3], "opt": [1, 16, 16, 3], "max": [4, 16, 16, 3]}}))
    assert run(["deepstream-config", "-m", str(plan), "-o", str(tmp_path / "dsp")]) == 0
    text = (tmp_path / "dsp" / "config_infer_primary_effdet.txt").read_text()
    for line in ("num-detected-classes=3", "network-mode=2", "batch-size=4", f"model-engine-file={plan.resolve()}"):
        assert f"\n{line}\n" in text


@pytest.mark.slow
def test_damaged_tfrecord_met_during_training_names_the_file(bccd_root, tmp_path, monkeypatch, capsys, spec_file):
    """The up-front check reads only the first records; damage further on surfaces inside tf.data during training
    and must still end as one error naming the file, not a DataLossError stack trace."""
    from effdet_rt.data import pipeline
    from tests.support.data import bccd_val_head, steps_run_eagerly

    good = bccd_val_head(bccd_root, tmp_path / "records", 4)
    data = good.read_bytes()
    bad = tmp_path / "records" / "z-damaged.tfrecord"
    bad.write_bytes(data + data[: len(data) // 2])  # four whole records, then half of the file again
    monkeypatch.setattr(pipeline, "SCAN_RECORDS", 4)
    with steps_run_eagerly():
        code = run(["train", "-e", spec_file, "-r", str(tmp_path / "results"), "dataset.loader.shuffle_buffer=16",
                    f"dataset.train_tfrecords=[{good}, {bad}]", "train.batch_size=4", "train.num_epochs=1",
                    "train.num_examples_per_epoch=8", "train.image_preview=false"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {bad}: damaged TFRecord file (truncated: record ") and err.count("\n") == 1
    started = (tmp_path / "results" / "status.json").read_text()
    assert "training efficientdet-d0 128x128" in started  # the damage was met by training, past the first check


def test_train_removes_temp_files_of_interrupted_checkpoint_writes(tmp_path, capsys, spec_file):
    results = tmp_path / "results"
    results.mkdir()
    stale = results / ".efficientdet-d0_002.edrt.k3j9x1.tmp"  # what a SIGKILL during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    kept = results / "notes.txt"
    kept.write_text("mine")
    bad = truncated_tfrecord(tmp_path / "train.tfrecord")
    assert run(["train", "-e", spec_file, "-r", str(results), f"dataset.train_tfrecords={bad}"]) == 2
    assert "removed .efficientdet-d0_002.edrt.k3j9x1.tmp" in capsys.readouterr().out
    assert not stale.exists() and kept.read_text() == "mine"  # an existing results dir is never removed


def test_dataset_convert_removes_the_staging_folder_of_a_killed_conversion(tmp_path):
    synth = tmp_path / "synth"
    assert run(["dataset-synth", "-o", str(synth), "--num-images", "2", "--seed", "3", "--size", "64"]) == 0
    stale = tmp_path / ".records.x7k2p9.tmp"  # what SIGKILL during `dataset-convert -o records` leaves
    stale.mkdir()
    (stale / "train-00000-of-00002.tfrecord").write_bytes(b"half")
    other = tmp_path / ".other.abc.tmp"
    other.mkdir()
    annotations = next(synth.rglob("*.json"))
    images = next(p.parent for p in synth.rglob("*.jpg"))
    assert run(["dataset-convert", "-i", str(images), "-a", str(annotations), "-o", str(tmp_path / "records")]) == 0
    assert not stale.exists() and other.is_dir()  # only staging folders of this output are removed
    assert list((tmp_path / "records").glob("*.tfrecord"))
