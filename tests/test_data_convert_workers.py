"""dataset-convert with worker processes: TF-free TFRecord framing, shard placement, same bytes for 1 and 2 workers,
and what the process pool does when a worker fails, dies or the user presses Ctrl-C."""

import json
import sys
from pathlib import Path

import pytest

from effdet_rt.cli.main import run
from effdet_rt.data.tfrecord import RecordFileWriter, frame_record, masked_crc32c
from tests.support.data import read_tfrecords


def test_masked_crc32c_known_values():
    # CRC-32C("123456789") is 0xE3069283 (RFC 3720 check value); masked as TFRecord does.
    assert masked_crc32c(b"123456789") == ((((0xE3069283 >> 15) | (0xE3069283 << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32
    assert frame_record(b"")[:8] == b"\x00" * 8 and len(frame_record(b"")) == 16
    assert len(frame_record(b"abc")) == 8 + 4 + 3 + 4


def test_record_file_bytes_equal_tensorflow_writer(tmp_path):
    import tensorflow as tf

    payloads = [b"", b"x", bytes(range(256)) * 40, "é".encode()]
    with RecordFileWriter(tmp_path / "ours.tfrecord") as writer:
        for payload in payloads:
            writer.write(payload)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for payload in payloads:
            writer.write(payload)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))] == payloads


@pytest.fixture(scope="module")
def seven_images(tmp_path_factory) -> tuple[Path, Path]:
    """5 good synthetic images (ids 1..5) with a missing (id 6, position 1) and a corrupt (id 7, position 4) one."""
    root = tmp_path_factory.mktemp("workers")
    assert run(["dataset-synth", "-o", str(root / "set"), "--num-images", "5", "--seed", "3", "--size", "64"]) == 0
    coco = json.loads((root / "set" / "annotations.json").read_text())
    images = root / "set" / "images"
    (images / "corrupt.jpg").write_bytes((images / "000001.jpg").read_bytes()[:200])
    coco["images"].insert(1, {"id": 6, "file_name": "missing.jpg", "width": 64, "height": 64})
    coco["images"].insert(4, {"id": 7, "file_name": "corrupt.jpg", "width": 64, "height": 64})
    (root / "seven.json").write_text(json.dumps(coco))
    return root / "seven.json", images


def _convert(ann: Path, images: Path, out: Path, workers: int, shards: int) -> dict[str, bytes]:
    assert run(["dataset-convert", "-a", str(ann), "-i", str(images), "-o", str(out), "-s", str(shards),
                "--workers", str(workers)]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_image_k_goes_to_shard_k_mod_n_even_when_images_are_skipped(seven_images, tmp_path):
    ann, images = seven_images
    files = _convert(ann, images, tmp_path / "out", 2, 3)
    assert sorted(files) == ["label_map.yaml", "seven-00000-of-00003.tfrecord", "seven-00001-of-00003.tfrecord",
                             "seven-00002-of-00003.tfrecord", "seven_warnings.json"]
    ids = [[int(r["image/source_id"]) for r in read_tfrecords(tmp_path / "out" / f"seven-0000{i}-of-00003.tfrecord")]
           for i in range(3)]
    # positions 0..6 hold ids 1, 6, 2, 3, 7, 4, 5; shard 1 (positions 1 and 4) has only the two skipped images.
    assert ids == [[1, 3, 5], [], [2, 4]]
    assert files["seven-00001-of-00003.tfrecord"] == b""
    warnings = json.loads(files["seven_warnings.json"])
    assert list(warnings) == ["6", "7"]  # image order, whichever worker finished first
    assert "cannot read" in warnings["6"]["image"] and "corrupt image" in warnings["7"]["image"]


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_one_and_two_workers_write_identical_files(seven_images, tmp_path, shards):
    ann, images = seven_images
    one = _convert(ann, images, tmp_path / "one", 1, shards)
    two = _convert(ann, images, tmp_path / "two", 2, shards)
    assert len(one) == shards + 2 and one == two


def test_dataset_convert_never_imports_tensorflow(seven_images, tmp_path):
    import subprocess

    ann, images = seven_images
    code = ("import sys; from effdet_rt.cli.main import run; "
            f"assert run(['dataset-convert', '-a', {str(ann)!r}, '-i', {str(images)!r}, '-o', {str(tmp_path / 'o')!r},"
            " '--workers', '2']) == 0; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_interrupt_with_two_workers_leaves_no_helper_and_no_output(seven_images, tmp_path, monkeypatch):
    import multiprocessing

    from effdet_rt.data import convert
    from effdet_rt.data.coco import load_coco

    class InterruptedProgress:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_task(self, *args, **kwargs):
            return 0

        def update(self, *args, **kwargs):
            raise KeyboardInterrupt

    ann, images = seven_images
    monkeypatch.setattr(convert, "progress_bar", InterruptedProgress)
    with pytest.raises(KeyboardInterrupt):
        convert.convert_dataset(load_coco(ann), images, tmp_path / "out", "seven", num_shards=7, workers=2)
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_a_helper_killed_mid_conversion_is_one_error_line_and_no_output(seven_images, tmp_path, monkeypatch, capsys):
    import os

    from effdet_rt.data import convert

    caller, write_shard = os.getpid(), convert.write_shard

    def dies_in_the_helper(job, index):
        if os.getpid() != caller:
            os._exit(9)  # as if the OOM killer had stopped it
        return write_shard(job, index)

    ann, images = seven_images
    monkeypatch.setattr(convert, "write_shard", dies_in_the_helper)
    code = run(["dataset-convert", "-a", str(ann), "-i", str(images), "-o", str(tmp_path / "out"), "-s", "7",
                "--workers", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: a helper process stopped (exit code 9) before finishing")
    assert list(tmp_path.iterdir()) == []


def test_a_workers_exception_reaches_the_caller_and_nothing_is_written(seven_images, tmp_path, monkeypatch):
    import multiprocessing
    import os

    from effdet_rt.data import convert
    from effdet_rt.data.coco import load_coco

    caller = os.getpid()

    def fails_in_a_worker(job, index):
        assert os.getpid() != caller, "with 2 workers and 7 shards every shard runs in a worker process"
        raise ValueError(f"shard {index} failed in a worker")

    ann, images = seven_images
    monkeypatch.setattr(convert, "write_shard", fails_in_a_worker)
    with pytest.raises(ValueError, match=r"shard \d failed in a worker"):
        convert.convert_dataset(load_coco(ann), images, tmp_path / "out", "seven", num_shards=7, workers=2)
    assert multiprocessing.active_children() == []
    assert list(tmp_path.iterdir()) == []


def test_never_more_processes_than_shards(seven_images, tmp_path, monkeypatch):
    import os

    from effdet_rt.data import convert
    from effdet_rt.data.coco import load_coco

    pids, write_shard = [], convert.write_shard

    def records_its_process(job, index):
        pids.append(os.getpid())
        return write_shard(job, index)

    ann, images = seven_images
    monkeypatch.setattr(convert, "write_shard", records_its_process)
    report = convert.convert_dataset(load_coco(ann), images, tmp_path / "out", "one", num_shards=1, workers=2)
    assert pids == [os.getpid()] and report.images_written == 5  # one shard: no pool, the caller converts it
