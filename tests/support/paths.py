"""Where the tests find the real data: the shared/ folder beside the checkout (see shared/data/README.md)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
BCCD_ROOT = SHARED_DATA / "bccd" / "BCCD"
