"""Where the checkpoint passphrase comes from, and how it becomes an AES key.

The passphrase is never printed or logged; errors only say how to pass one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from effdet_rt.errors import CheckpointError

KEY_ENV_VAR = "EFFDET_KEY"
HOW_TO_PASS_KEY = f"pass it with -k/--key, set ${KEY_ENV_VAR}, or set encryption_key in the spec"


def resolve_key(cli_key: str | None, spec_key: str | None) -> str:
    """The passphrase to use: ``-k/--key`` first, then ``$EFFDET_KEY``, then the spec's ``encryption_key``."""
    for candidate in (cli_key, os.environ.get(KEY_ENV_VAR), spec_key):
        if candidate is not None and str(candidate) != "":
            return str(candidate)
    raise CheckpointError(f"no encryption key for the checkpoint; {HOW_TO_PASS_KEY}")


@dataclass(frozen=True)
class ScryptCost:
    """scrypt work factors; stored in each file's header so older files stay readable if defaults change."""

    log2_n: int = 15
    r: int = 8
    p: int = 1


@dataclass(frozen=True)
class DerivedKey:
    cipher_key: bytes  # 32 bytes for AES-256-GCM
    check: bytes  # 16 bytes stored in the header, so a wrong key is told apart from a damaged file


def derive_key(passphrase: str, salt: bytes, cost: ScryptCost) -> DerivedKey:
    if not passphrase:
        raise CheckpointError(f"the encryption key is empty; {HOW_TO_PASS_KEY}")
    kdf = Scrypt(salt=salt, length=48, n=2**cost.log2_n, r=cost.r, p=cost.p)
    material = kdf.derive(passphrase.encode("utf-8"))
    return DerivedKey(cipher_key=material[:32], check=material[32:48])
