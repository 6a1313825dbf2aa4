"""infer/files.py: any task's model over a list of image files in fixed chunks of the list, and
backends.model_file_backend, where every task's `load` starts."""

from pathlib import Path

import numpy as np
import pytest

from effdet_rt.backends import model_file_backend
from effdet_rt.errors import DataError, ModelFileError
from effdet_rt.infer.files import fixed_batches, image_inputs, run_files


def reader(bad: set[int]):
    """Loads file i as a 1x1 image of value i; the files numbered in ``bad`` cannot be read."""

    def load(path: Path) -> np.ndarray:
        index = int(path.stem)
        if index in bad:
            raise DataError(f"{path}: unreadable")
        return np.full((1, 1, 1), index, np.float32)

    return load


def paths(count: int) -> list[Path]:
    return [Path(f"{i}.png") for i in range(count)]


def test_chunks_follow_the_list_and_an_unreadable_file_leaves_its_batch_short():
    skipped = []
    batches = list(fixed_batches(paths(7), reader({1, 4, 5}), 3, 2, on_error=lambda p, why: skipped.append(p.name)))
    assert [indices for indices, _ in batches] == [[0, 2], [3], [6]]  # not [0, 2, 3], [6]
    assert [images.ravel().tolist() for _, images in batches] == [[0.0, 2.0], [3.0], [6.0]]
    assert skipped == ["1.png", "4.png", "5.png"]


def test_an_unreadable_file_raises_without_on_error():
    with pytest.raises(DataError, match="3.png: unreadable"):
        list(fixed_batches(paths(5), reader({3}), 2, 1))


def test_run_files_keeps_rows_in_list_order_and_lists_the_skipped():
    seen = []

    def run(images: np.ndarray) -> np.ndarray:
        seen.append(len(images))
        return np.concatenate([images.reshape(-1, 1), 10 * images.reshape(-1, 1)], axis=1)

    out = run_files(run, paths(5), reader({2}), 2, 1, 2, "test", "fake")
    assert seen == [2, 1, 1]
    assert [p.name for p in out.paths] == ["0.png", "1.png", "3.png", "4.png"]
    assert out.outputs.tolist() == [[0, 0], [1, 10], [3, 30], [4, 40]]
    assert out.skipped == [("2.png", "2.png: unreadable")]


def test_run_files_with_nothing_readable_has_rows_of_the_given_width():
    out = run_files(lambda images: images, paths(2), reader({0, 1}), 4, 1, 5, "test", "fake")
    assert out.outputs.shape == (0, 5) and out.paths == [] and len(out.skipped) == 2


def test_image_inputs(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.jpg", "1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert image_inputs(tmp_path) == [tmp_path / "1.png", tmp_path / "b" / "2.jpg"]
    assert image_inputs(tmp_path / "1.png") == [tmp_path / "1.png"]
    with pytest.raises(DataError, match="not an image file"):
        image_inputs(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="no such image or folder"):
        image_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        image_inputs(tmp_path / "empty")


def test_model_file_backend(tmp_path):
    with pytest.raises(ModelFileError, match=r"m\.onnx: model file not found; pass a model file: \.edrt"):
        model_file_backend(tmp_path / "m.onnx")
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "m.bin").write_bytes(b"")
    assert model_file_backend(tmp_path / "m.onnx").name == "onnxruntime"
    with pytest.raises(ModelFileError, match="unknown model type '.bin'"):
        model_file_backend(tmp_path / "m.bin")
