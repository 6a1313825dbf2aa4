"""The encrypted .edrt archive: round trip, key handling, damage detection, atomic writes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from effdet_rt.checkpoint import (
    Checkpoint,
    load_checkpoint,
    read_metadata,
    resolve_key,
    save_checkpoint,
)
from effdet_rt.checkpoint import archive as archive_module
from effdet_rt.checkpoint.keys import ScryptCost
from effdet_rt.errors import CheckpointError

FAST = ScryptCost(log2_n=10, r=8, p=1)  # cheap key derivation for tests; the default is checked once below
KEY = "correct horse battery staple"


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "efficientnet-b0/stem/conv2d/kernel": rng.standard_normal((3, 3, 3, 8)).astype(np.float32),
        "box_net/box-predict/bias:extra": rng.standard_normal(36).astype(np.float32),
        "bn/moving_mean": np.array([np.nan, np.inf, -0.0, 1e-40], np.float32),
        "step": np.array(12345, np.int64),
        "half": rng.standard_normal((2, 5)).astype(np.float16),
        "empty": np.zeros((0, 4), np.float32),
        "flags": np.array([True, False, True]),
    }


def _save(path: Path, **kwargs) -> Path:
    kwargs.setdefault("key", KEY)
    kwargs.setdefault("cost", FAST)
    return save_checkpoint(path, kwargs.pop("weights", _weights()), **kwargs)


def _assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert got[name].tobytes() == want[name].tobytes(), name


def test_round_trip_is_bit_identical_with_spec_metadata_and_groups(tmp_path):
    weights = _weights()
    groups = {
        "optimizer": {"Adam/iter": np.array(7, np.int64), "Adam/m/kernel": np.full((2, 3), 0.5, np.float32)},
        "ema": {name: value * 2 for name, value in weights.items() if value.dtype == np.float32},
    }
    spec = "model:\n  name: efficientdet-d0\ndataset:\n  num_classes: 4  # é\n"
    meta = {"model_name": "efficientdet-d0", "epoch": np.int64(3), "step": 120, "num_classes": 4,
            "input_size": [512, 512], "path": Path("/x")}
    path = _save(tmp_path / "model_epoch_003.edrt", weights=weights, spec_yaml=spec, metadata=meta, groups=groups,
                 chunk_size=100)  # many chunks, arrays cross chunk borders
    ckpt = load_checkpoint(path, KEY)
    assert isinstance(ckpt, Checkpoint)
    _assert_same_arrays(ckpt.weights, weights)
    assert sorted(ckpt.groups) == ["ema", "optimizer"]
    for group, arrays in groups.items():
        _assert_same_arrays(ckpt.groups[group], arrays)
    assert ckpt.spec_yaml == spec
    assert ckpt.metadata == {"model_name": "efficientdet-d0", "epoch": 3, "step": 120, "num_classes": 4,
                             "input_size": [512, 512], "path": "/x"}
    assert read_metadata(path, KEY) == ckpt.metadata


def test_file_is_encrypted_and_sized_as_the_header_says(tmp_path):
    weights = {"w": np.arange(1000, dtype=np.float32)}
    path = _save(tmp_path / "a.edrt", weights=weights, spec_yaml="secret_spec_marker: 1",
                 metadata={"model_name": "model_name_marker_efficientdet"})
    data = path.read_bytes()
    assert data[:8] == b"EDRTCKPT"
    assert struct.unpack(">H", data[8:10]) == (1,)
    assert weights["w"].tobytes()[:64] not in data
    # markers long enough that random ciphertext cannot hold them by chance (a 2-byte one did, 1 run in ~16)
    assert b"secret_spec_marker" not in data and b"model_name_marker" not in data and KEY.encode() not in data
    # header + manifest + 4000 data bytes + one GCM tag
    header_size = archive_module._HEADER.size
    manifest_len = struct.unpack(">Q", data[header_size - 16 : header_size - 8])[0]
    assert len(data) == header_size + manifest_len + 4000 + 16


def test_two_saves_of_the_same_weights_differ(tmp_path):
    a = _save(tmp_path / "a.edrt").read_bytes()
    b = _save(tmp_path / "b.edrt").read_bytes()
    assert a != b  # fresh salt and nonce each time


def test_default_scrypt_cost_round_trips(tmp_path):
    path = save_checkpoint(tmp_path / "d.edrt", {"w": np.ones(3, np.float32)}, key="k")
    assert path.read_bytes()[10:13] == bytes([15, 8, 1])
    assert load_checkpoint(path, "k").weights["w"].tolist() == [1.0, 1.0, 1.0]


def test_wrong_key_is_reported_as_a_wrong_key(tmp_path):
    path = _save(tmp_path / "a.edrt")
    with pytest.raises(CheckpointError, match=r"wrong encryption key.*-k/--key") as info:
        load_checkpoint(path, "not the key")
    assert "not the key" not in str(info.value) and KEY not in str(info.value)
    with pytest.raises(CheckpointError, match="wrong encryption key"):
        read_metadata(path, "not the key")


def test_empty_key_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="key is empty"):
        _save(tmp_path / "a.edrt", key="")
    assert not (tmp_path / "a.edrt").exists()


@pytest.mark.parametrize("keep", [0, 5, 9, 30, -1])
def test_truncated_file_is_reported_as_truncated(tmp_path, keep):
    path = _save(tmp_path / "a.edrt")
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    expected = "not an effdet-rt checkpoint.*empty" if keep == 0 else "truncated checkpoint"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path, KEY)


def test_flipped_byte_in_weights_is_reported_as_damage_not_wrong_key(tmp_path):
    path = _save(tmp_path / "a.edrt")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"damaged checkpoint \(weights chunk 1 failed authentication"):
        load_checkpoint(path, KEY)


def test_edited_header_fails_authentication(tmp_path):
    path = _save(tmp_path / "a.edrt", chunk_size=64)
    data = bytearray(path.read_bytes())
    data[14:18] = struct.pack(">I", 65)  # chunk size: the file size no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged|truncated"):
        load_checkpoint(path, KEY)


@pytest.mark.parametrize("log2_n, r, p", [(22, 255, 1), (20, 8, 200)])
def test_a_header_asking_scrypt_for_gigabytes_is_refused_before_deriving(tmp_path, monkeypatch, log2_n, r, p):
    """Bytes 10-12 hold scrypt's N, r and p: a damaged header must not make key derivation allocate 100+ GB."""
    path = _save(tmp_path / "a.edrt")
    data = bytearray(path.read_bytes())
    data[10:13] = bytes([log2_n, r, p])
    path.write_bytes(bytes(data))
    monkeypatch.setattr(archive_module, "derive_key", lambda *a: pytest.fail("scrypt ran on a damaged header"))
    with pytest.raises(CheckpointError, match=r"damaged checkpoint header \(scrypt cost"):
        load_checkpoint(path, KEY)


def test_appended_bytes_are_reported(tmp_path):
    path = _save(tmp_path / "a.edrt")
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(CheckpointError, match="2 unexpected bytes after the end"):
        load_checkpoint(path, KEY)


def test_foreign_files_are_named(tmp_path):
    png = tmp_path / "picture.edrt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(CheckpointError, match=r"picture.edrt: not an effdet-rt checkpoint \(it looks like a PNG image\)"):
        load_checkpoint(png, KEY)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(CheckpointError, match="HDF5"):
        load_checkpoint(h5, KEY)


def test_newer_format_version_is_named(tmp_path):
    path = _save(tmp_path / "a.edrt")
    data = bytearray(path.read_bytes())
    data[8:10] = struct.pack(">H", 9)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="format version 9 is not supported"):
        load_checkpoint(path, KEY)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.edrt", KEY)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path, KEY)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_crash_during_rename_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = _save(tmp_path / "latest.edrt", metadata={"epoch": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        _save(path, metadata={"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == ["latest.edrt"]
    assert read_metadata(path, KEY) == {"epoch": 1}


def test_crash_mid_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = _save(tmp_path / "latest.edrt", metadata={"epoch": 1})
    before = path.read_bytes()
    real_chunks = archive_module._chunks

    def chunks_then_crash(pieces, chunk_size):
        for number, chunk in enumerate(real_chunks(pieces, chunk_size)):
            if number == 2:
                raise RuntimeError("simulated crash mid-write")
            yield chunk

    monkeypatch.setattr(archive_module, "_chunks", chunks_then_crash)
    with pytest.raises(RuntimeError, match="mid-write"):
        _save(path, metadata={"epoch": 2}, chunk_size=16)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == ["latest.edrt"]


def test_unserialisable_metadata_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        _save(tmp_path / "a.edrt", metadata={"bad": object()})
    with pytest.raises(ValueError, match="only plain numeric"):
        _save(tmp_path / "a.edrt", weights={"o": np.array([object()])})
    assert _leftovers(tmp_path) == []


def test_resolve_key_order(monkeypatch):
    monkeypatch.setenv("EFFDET_KEY", "from-env")
    assert resolve_key("from-cli", "from-spec") == "from-cli"
    assert resolve_key(None, "from-spec") == "from-env"
    monkeypatch.delenv("EFFDET_KEY")
    assert resolve_key(None, "from-spec") == "from-spec"
    assert resolve_key("", "from-spec") == "from-spec"
    with pytest.raises(CheckpointError, match=r"no encryption key.*-k/--key.*\$EFFDET_KEY.*encryption_key"):
        resolve_key(None, None)
