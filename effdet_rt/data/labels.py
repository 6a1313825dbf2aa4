"""label_map.yaml: the category id -> class name table written beside converted datasets.

The file is a YAML mapping ``{1: RBC, 2: WBC, 3: Platelets}``. Ids are the COCO category ids that also appear
as ``image/object/class/label`` in the TFRecords (1..N for VOC imports; 0 is background), so a spec trained on
them sets ``num_classes = N + 1``. TAO's label files (``labels.txt``, one class name per line) are read too:
line k names category id k.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from effdet_rt.errors import DataError
from effdet_rt.utils.atomic import atomic_write_text

LABEL_MAP_NAME = "label_map.yaml"


TEXT_SUFFIXES = (".txt",)


def load_label_map(path: str | os.PathLike) -> dict[int, str]:
    """Read a label map (YAML, or TAO's one-name-per-line .txt); raise DataError naming the file and the bad entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the label map ({exc.strerror}); pass an existing label_map.yaml "
                        "or labels.txt") from exc
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; a label map is YAML ('1: RBC') or one class name per line") from None
    if path.suffix.lower() in TEXT_SUFFIXES:
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise DataError(f"{path}: no class names in the file; write one class name per line")
        return dict(enumerate(names, start=1))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc}); expected lines like '1: RBC'") from exc
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a non-empty mapping of category id to name, like '1: RBC'")
    return {_category_id(path, key): _category_name(path, key, value) for key, value in raw.items()}


def write_label_map(path: str | os.PathLike, mapping: dict[int, str]) -> Path:
    """Write ``mapping`` as YAML sorted by id (atomically)."""
    path = Path(path)
    checked = {_category_id(path, key): _category_name(path, key, value) for key, value in mapping.items()}
    if not checked:
        raise DataError(f"{path}: refusing to write an empty label map; the dataset has no categories")
    text = yaml.safe_dump(dict(sorted(checked.items())), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return atomic_write_text(path, text)


def _category_id(path: Path, key: object) -> int:
    if isinstance(key, bool):
        raise DataError(f"{path}: label map key {key!r} is not a category id; use positive integers")
    try:
        value = int(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{path}: label map key {key!r} is not a category id; use positive integers") from None
    if value < 1 or str(value) != str(key).strip():
        raise DataError(f"{path}: label map key {key!r} must be a positive integer (0 is background)")
    return value


def _category_name(path: Path, key: object, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: label map entry {key!r} needs a non-empty class name, got {value!r}")
    return value
