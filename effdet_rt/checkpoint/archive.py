"""The encrypted ``.edrt`` checkpoint: weights + spec + metadata (+ optimizer / EMA groups for resume).

File layout (format version 1, all integers big-endian)::

    header    magic "EDRTCKPT", version, scrypt cost, chunk size, salt, nonce prefix, key check,
              manifest length, blob length                        (clear text, authenticated as AAD)
    manifest  AES-256-GCM(JSON: metadata, spec_yaml, array index) (nonce = prefix + 0)
    blob      the raw array bytes, 64-byte aligned, encrypted in chunks of ``chunk_size``
              (chunk i uses nonce = prefix + i + 1)

The key comes from scrypt(passphrase, salt); 16 extra derived bytes stored in the header tell a wrong key
apart from a damaged file. The header fixes the exact file size, so a truncated file is reported as such.
Array names are free text (JSON), so '/' and ':' need no escaping. This module needs only numpy.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import secrets
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from effdet_rt.checkpoint.keys import HOW_TO_PASS_KEY, ScryptCost, derive_key, resolve_key
from effdet_rt.checkpoint.weights import LoadReport, assign_weights, model_weights
from effdet_rt.errors import CheckpointError
from effdet_rt.utils.atomic import atomic_path

__all__ = [
    "CHECKPOINT_SUFFIX",
    "Checkpoint",
    "LoadReport",
    "assign_weights",
    "load_checkpoint",
    "model_weights",
    "read_metadata",
    "resolve_key",
    "save_checkpoint",
]

CHECKPOINT_SUFFIX = ".edrt"
MAGIC = b"EDRTCKPT"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 64 * 1024 * 1024
ALIGNMENT = 64
TAG_SIZE = 16
_PREFIX = struct.Struct(">8sH")
_HEADER = struct.Struct(">8sHBBBBI16s8s16sQQ")
WEIGHTS_GROUP = None  # the group value that marks the model weights in the manifest

ArrayDict = dict[str, np.ndarray]


@dataclass
class Checkpoint:
    weights: ArrayDict
    spec_yaml: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, ArrayDict] = field(default_factory=dict)


@dataclass(frozen=True)
class _Header:
    cost: ScryptCost
    chunk_size: int
    salt: bytes
    nonce_prefix: bytes
    key_check: bytes
    manifest_len: int
    blob_len: int

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC, FORMAT_VERSION, self.cost.log2_n, self.cost.r, self.cost.p, 0, self.chunk_size,
            self.salt, self.nonce_prefix, self.key_check, self.manifest_len, self.blob_len,
        )

    def chunk_count(self) -> int:
        return math.ceil(self.blob_len / self.chunk_size)

    def file_size(self) -> int:
        return _HEADER.size + self.manifest_len + self.blob_len + TAG_SIZE * self.chunk_count()


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


# ---------------------------------------------------------------- saving


def save_checkpoint(
    path: str | os.PathLike,
    weights: Mapping[str, np.ndarray],
    *,
    key: str,
    spec_yaml: str = "",
    metadata: Mapping[str, Any] | None = None,
    groups: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cost: ScryptCost = ScryptCost(),
) -> Path:
    """Encrypt and write a checkpoint atomically (temp file beside ``path``, then rename)."""
    entries = _collect_arrays(weights, groups or {})
    index, blob_len = _layout(entries)
    manifest = _manifest_bytes(metadata or {}, spec_yaml, index)
    salt, prefix = secrets.token_bytes(16), secrets.token_bytes(8)
    derived = derive_key(key, salt, cost)
    header = _Header(cost, chunk_size, salt, prefix, derived.check, len(manifest) + TAG_SIZE, blob_len)
    header_bytes = header.pack()
    cipher = AESGCM(derived.cipher_key)
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        out.write(header_bytes)
        out.write(cipher.encrypt(_nonce(prefix, 0), manifest, header_bytes))
        for number, chunk in enumerate(_chunks(_blob_pieces(entries, index), chunk_size), start=1):
            out.write(cipher.encrypt(_nonce(prefix, number), chunk, header_bytes))
    return target


def _collect_arrays(
    weights: Mapping[str, np.ndarray], groups: Mapping[str, Mapping[str, np.ndarray]]
) -> list[tuple[str | None, str, np.ndarray]]:
    entries = [(WEIGHTS_GROUP, name, value) for name, value in weights.items()]
    for group, arrays in groups.items():
        if not isinstance(group, str) or not group:
            raise ValueError(f"checkpoint group names must be non-empty strings, got {group!r}")
        entries.extend((group, name, value) for name, value in arrays.items())
    checked = []
    for group, name, value in entries:
        if not isinstance(name, str) or not name:
            raise ValueError(f"array names must be non-empty strings, got {name!r} (group {group!r})")
        array = np.asarray(value, order="C")
        if array.dtype.hasobject or array.dtype.names:
            raise ValueError(f"array {name!r} has dtype {array.dtype}; only plain numeric arrays can be saved")
        checked.append((group, name, array))
    return checked


def _layout(entries: list[tuple[str | None, str, np.ndarray]]) -> tuple[list[dict[str, Any]], int]:
    index, offset = [], 0
    for group, name, array in entries:
        offset = -(-offset // ALIGNMENT) * ALIGNMENT
        index.append({"group": group, "name": name, "dtype": array.dtype.str, "shape": list(array.shape),
                      "offset": offset, "nbytes": array.nbytes})
        offset += array.nbytes
    return index, offset


def _manifest_bytes(metadata: Mapping[str, Any], spec_yaml: str, index: list[dict[str, Any]]) -> bytes:
    if not isinstance(spec_yaml, str):
        raise ValueError("spec_yaml must be the spec's YAML text")
    try:
        text = json.dumps({"metadata": dict(metadata), "spec_yaml": spec_yaml, "arrays": index},
                          default=_jsonable, allow_nan=True)
    except TypeError as exc:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {exc}") from exc
    return text.encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _blob_pieces(
    entries: list[tuple[str | None, str, np.ndarray]], index: list[dict[str, Any]]
) -> Iterator[memoryview]:
    position = 0
    for (_, _, array), item in zip(entries, index, strict=True):
        if item["offset"] > position:
            yield memoryview(bytes(item["offset"] - position))
        yield memoryview(array.reshape(-1).view(np.uint8))
        position = item["offset"] + item["nbytes"]


def _chunks(pieces: Iterable[memoryview], chunk_size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for piece in pieces:
        while len(piece):
            take = min(chunk_size - len(buffer), len(piece))
            buffer += piece[:take]
            piece = piece[take:]
            if len(buffer) == chunk_size:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


# ---------------------------------------------------------------- loading


def load_checkpoint(path: str | os.PathLike, key: str) -> Checkpoint:
    """Decrypt a checkpoint; wrong key, truncation, damage or a foreign file raise CheckpointError."""
    path = Path(path)
    with _open(path) as handle:
        header, header_bytes, cipher, manifest = _read_head(path, handle, key)
        blob = _read_blob(path, handle, header, header_bytes, cipher)
    weights: ArrayDict = {}
    groups: dict[str, ArrayDict] = {}
    for item in manifest["arrays"]:
        try:
            array = np.frombuffer(blob, dtype=np.dtype(item["dtype"]), count=_count(item),
                                  offset=item["offset"]).reshape(item["shape"])
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: damaged array index entry {item.get('name')!r} ({exc})") from exc
        target = weights if item["group"] is WEIGHTS_GROUP else groups.setdefault(item["group"], {})
        target[item["name"]] = array
    return Checkpoint(weights=weights, spec_yaml=manifest.get("spec_yaml", ""),
                      metadata=manifest.get("metadata", {}), groups=groups)


def read_metadata(path: str | os.PathLike, key: str) -> dict[str, Any]:
    """Only the metadata (decrypts the small manifest, not the weights)."""
    path = Path(path)
    with _open(path) as handle:
        return _read_head(path, handle, key)[3].get("metadata", {})


def _count(item: dict[str, Any]) -> int:
    itemsize = np.dtype(item["dtype"]).itemsize
    return item["nbytes"] // itemsize if itemsize else 0


TAO_SUFFIXES = (".tlt", ".etlt", ".hdf5")


def _open(path: Path) -> BinaryIO:
    if path.suffix.lower() in TAO_SUFFIXES:
        raise CheckpointError(
            f"{path}: TAO's {path.suffix} models are encrypted in NVIDIA's own format, which effdet-rt cannot read; "
            "start from an effdet-rt .edrt checkpoint (train.checkpoint), or convert automl / Keras EfficientNet "
            "weights with `effdet-rt weights import`, or leave train.checkpoint empty to train from scratch"
        )
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file; pass the .edrt file inside it")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file; check the path") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror})") from exc


def _read_head(path: Path, handle: BinaryIO, key: str) -> tuple[_Header, bytes, AESGCM, dict[str, Any]]:
    header_bytes = handle.read(_HEADER.size)
    header = _parse_header(path, header_bytes, os.fstat(handle.fileno()).st_size)
    derived = derive_key(key, header.salt, header.cost)
    if not hmac.compare_digest(derived.check, header.key_check):
        raise CheckpointError(f"{path}: wrong encryption key for this checkpoint; {HOW_TO_PASS_KEY} "
                              "with the key it was saved with")
    cipher = AESGCM(derived.cipher_key)
    sealed = handle.read(header.manifest_len)
    plain = _decrypt(path, cipher, _nonce(header.nonce_prefix, 0), sealed, header_bytes, "manifest")
    try:
        manifest = json.loads(plain.decode("utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), list):
            raise ValueError("no array index")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint manifest ({exc})") from exc
    return header, header_bytes, cipher, manifest


# scrypt needs 128 * r * N bytes: effdet-rt writes 32 MiB (N=2^15, r=8); a header asking for more than 1 GiB, or
# for more than 16 parallel lanes, is damaged
MAX_SCRYPT_MEMORY = 1 << 30
MAX_SCRYPT_P = 16


def _parse_header(path: Path, header_bytes: bytes, size: int) -> _Header:
    if not header_bytes.startswith(MAGIC[: len(header_bytes)]) or not header_bytes:
        raise CheckpointError(f"{path}: not an effdet-rt checkpoint ({_describe_foreign(header_bytes)}); "
                              f"pass a {CHECKPOINT_SUFFIX} file written by effdet-rt train")
    if len(header_bytes) >= _PREFIX.size:
        version = _PREFIX.unpack_from(header_bytes)[1]
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version} is not supported by this "
                                  f"effdet-rt (reads version {FORMAT_VERSION}); use the effdet-rt that wrote it")
    if len(header_bytes) < _HEADER.size:
        raise CheckpointError(f"{path}: truncated checkpoint ({size} bytes, shorter than its header); "
                              "copy the file again or use another checkpoint")
    _, _, log2_n, r, p, _, chunk_size, salt, prefix, check, manifest_len, blob_len = _HEADER.unpack(header_bytes)
    header = _Header(ScryptCost(log2_n, r, p), chunk_size, salt, prefix, check, manifest_len, blob_len)
    if chunk_size == 0 or manifest_len < TAG_SIZE or not 10 <= log2_n <= 22 or not r or not p:
        raise CheckpointError(f"{path}: damaged checkpoint header; use another checkpoint")
    if 128 * r * (1 << log2_n) > MAX_SCRYPT_MEMORY or p > MAX_SCRYPT_P:
        # checked before deriving the key: a damaged (or hostile) header must not make scrypt allocate gigabytes
        raise CheckpointError(f"{path}: damaged checkpoint header (scrypt cost N=2^{log2_n}, r={r}, p={p} is beyond "
                              "what effdet-rt writes); use another checkpoint")
    expected = header.file_size()
    if size < expected:
        raise CheckpointError(f"{path}: truncated checkpoint ({size} of {expected} bytes); "
                              "copy the file again or use another checkpoint")
    if size > expected:
        raise CheckpointError(f"{path}: damaged checkpoint ({size - expected} unexpected bytes after the end)")
    return header


def _describe_foreign(head: bytes) -> str:
    known = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"PK\x03\x04": "a zip archive",
             b"\x89HDF": "an HDF5 / Keras .h5 file", b"\x93NUMPY": "a numpy .npy file", b"{": "a JSON file"}
    for magic, name in known.items():
        if head.startswith(magic):
            return f"it looks like {name}"
    return "the file is empty" if not head else "unknown file type"


def _decrypt(path: Path, cipher: AESGCM, nonce: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    try:
        return cipher.decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise CheckpointError(f"{path}: damaged checkpoint ({what} failed authentication: the file was "
                              "modified or corrupted); use another checkpoint") from None


def _read_blob(path: Path, handle: BinaryIO, header: _Header, header_bytes: bytes, cipher: AESGCM) -> bytearray:
    blob = bytearray(header.blob_len)
    for number in range(1, header.chunk_count() + 1):
        start = (number - 1) * header.chunk_size
        length = min(header.chunk_size, header.blob_len - start)
        sealed = handle.read(length + TAG_SIZE)
        nonce = _nonce(header.nonce_prefix, number)
        blob[start : start + length] = _decrypt(path, cipher, nonce, sealed, header_bytes, f"weights chunk {number}")
    return blob
