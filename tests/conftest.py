import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EFFDET_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BCCD_ROOT = SHARED_DATA / "bccd" / "BCCD"


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    if not (BCCD_ROOT / "Annotations").is_dir():
        pytest.skip(f"real data not found at {BCCD_ROOT} (the shared/ folder beside the checkout)")
    return BCCD_ROOT
