"""Reading a spec file's text, with the one error line for each way that fails; shared by the YAML loader and the
TF1 prototxt converter."""

from __future__ import annotations

from pathlib import Path

from effdet_rt.errors import SpecError


def read_spec_text(path: Path) -> str:
    if not path.exists():
        raise SpecError(f"{path}: spec file not found; check the -e/--experiment-spec path")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, not a spec file; pass the .yaml file inside it")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: is not a UTF-8 text file; a spec is YAML (or a TF1 prototxt)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror}); check its permissions") from None
