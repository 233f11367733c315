"""Signatures the platform puts on what it registers and promotes.

MLflow's checksum tag only proves the file arrived as its uploader meant it:
whoever can write to MLflow writes the file and its hash. So every version the
pipeline registers also carries an HMAC over (family, checksum, contract), and
every champion alias the pipeline moves an HMAC over (family, alias, version),
made with a key that only the platform holds (``<data_dir>/signing.key``,
owner-only, or a cluster Secret mounted at the same path). Serving, the
model cache and the rollout controller verify before they load or follow:
neither a writer to MLflow nor a writer to the cache can get a model served.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from models.errors import GameserveError
from pipelines.private_files import write_private

KEY_BYTES = 32


class VersionSigner:
    """HMAC-SHA256 with the platform's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise GameserveError(f"signing key: at least {KEY_BYTES} bytes are required")
        self._key = key

    @classmethod
    def at(cls, path: Path, create: bool = False) -> VersionSigner:
        """The key in ``path``; made there (owner-only) when ``create`` and absent."""
        if not path.is_file():
            if not create:
                raise GameserveError(
                    f"signing key: {path} does not exist; the stack that registers "
                    "versions creates it"
                )
            # Exclusive: if another process made it first, its key is the one.
            write_private(path, secrets.token_hex(KEY_BYTES), exclusive=True)
        return cls(bytes.fromhex(path.read_text().strip()))

    def _mac(self, *parts: str) -> str:
        message = "\0".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign_version(self, family: str, sha256: str, contract: str) -> str:
        return self._mac("gameserve.version", family, sha256, contract)

    def verifies_version(
        self, family: str, sha256: str, contract: str, signature: str | None
    ) -> bool:
        expected = self.sign_version(family, sha256, contract)
        return signature is not None and hmac.compare_digest(expected, signature)

    def sign_alias(self, family: str, alias: str, version: str) -> str:
        """``version:mac``, the value of the alias's signature tag."""
        return f"{version}:{self._mac('gameserve.alias', family, alias, version)}"

    def verifies_alias(self, family: str, alias: str, version: str, signed: str | None) -> bool:
        expected = self.sign_alias(family, alias, version)
        return signed is not None and hmac.compare_digest(expected, signed)
