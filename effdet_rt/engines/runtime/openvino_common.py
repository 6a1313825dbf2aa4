"""Lazy access to OpenVINO and the metadata our IR files carry, shared by the OpenVINO builder and runtime.

OpenVINO is an extra (`pip install 'effdet-rt[openvino]'`): every import of it goes through `import_openvino`, so a
missing install is one clear error and the rest of effdet-rt never needs it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from effdet_rt.errors import ModelFileError, UserError

INSTALL_HINT = "install it with: pip install 'effdet-rt[openvino]' (wheels for x86-64 Linux/Windows, ARM64 Linux/macOS)"
RT_INFO_SECTION = "effdet_rt"  # our metadata lives under this name in the IR's rt_info, one JSON string per key
BIN_DIGEST_KEY = "bin_sha256"  # the .bin's SHA-256, so a .bin from another build (or a damaged one) is refused


def import_openvino() -> ModuleType:
    try:
        import openvino
    except ImportError as exc:
        raise UserError(f"OpenVINO is not installed ({exc}); {INSTALL_HINT}, or use --backend onnxruntime") from exc
    return openvino


def openvino_status() -> tuple[bool, str]:
    """(usable, why): whether OpenVINO imports and has its CPU plugin."""
    try:
        ov = import_openvino()
    except UserError as exc:
        return False, str(exc).split(";")[0]
    try:
        devices = ov.Core().available_devices
    except RuntimeError as exc:
        return False, f"OpenVINO {ov.__version__} cannot start ({exc})"
    if "CPU" not in devices:
        return False, f"OpenVINO {ov.__version__} has no CPU plugin here"
    return True, f"OpenVINO {ov.__version__.split('-')[0]}"


def weights_file(xml: Path) -> Path:
    """OpenVINO keeps an IR's weights beside its .xml, same name, suffix .bin."""
    return xml.with_suffix(".bin")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def set_rt_metadata(model: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        model.set_rt_info(json.dumps(value), [RT_INFO_SECTION, key])


def read_rt_metadata(model: Any) -> dict[str, Any]:
    """Our metadata from an IR's rt_info (empty when the IR was not written by `effdet-rt build`)."""
    info = model.get_rt_info()
    if RT_INFO_SECTION not in info:
        return {}
    section = info[RT_INFO_SECTION]
    try:
        return {key: json.loads(value.astype(str)) for key, value in section.items()}
    except (AttributeError, ValueError) as exc:  # a hand-edited or foreign rt_info section
        raise ModelFileError(f"the IR's rt_info '{RT_INFO_SECTION}' section is not effdet-rt metadata ({exc})") from exc


def check_ir_pair(xml: Path, metadata: dict[str, Any]) -> None:
    """Refuse an IR whose .bin is missing or is not the one written with this .xml."""
    weights = weights_file(xml)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing; an OpenVINO model is an .xml and a .bin with the same name: "
                             "copy both, or rebuild with `effdet-rt build --backend openvino`")
    expected = metadata.get(BIN_DIGEST_KEY)
    if expected is None:
        raise ModelFileError(f"{xml}: no effdet-rt metadata in this OpenVINO IR; build it with "
                             "`effdet-rt build -m model.onnx -o OUT.xml --backend openvino`")
    if file_digest(weights) != expected:
        raise ModelFileError(f"{weights}: does not belong to {xml.name} (damaged, or from another build); "
                             "rebuild the pair with `effdet-rt build --backend openvino`")
