"""A checksum-verified on-disk cache of ONNX files, and of what each alias last was.

It lets whatever was already resolved keep working while MLflow is down.
Writes go to a temporary file and are renamed into place, so replicas sharing
the folder never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import get_family
from pipelines.signing import VersionSigner

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ResolvedModel:
    """A version's ONNX file on local disk, verified."""

    family: str
    version: str
    path: Path
    sha256: str
    source: str  # "registry" when MLflow answered, "cache" when it did not


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ModelCache:
    """``root/<family>/<version>/model.onnx`` plus ``root/<family>/aliases.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def model_path(self, family: str, version: str) -> Path:
        return self.root / family / version / MODEL_FILE

    def get(self, family: str, version: str, sha256: str) -> Path | None:
        """The cached file if present and intact; a damaged one is discarded."""
        path = self.model_path(family, version)
        if not path.is_file():
            return None
        if sha256_of(path) != sha256:
            shutil.rmtree(path.parent, ignore_errors=True)
            return None
        return path

    def put(self, family: str, version: str, source: Path, sha256: str, signature: str) -> Path:
        path = self.model_path(family, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, source.read_bytes())
        _atomic_write(
            path.parent / "meta.json",
            json.dumps(
                {"family": family, "version": version, "sha256": sha256, "signature": signature}
            ).encode(),
        )
        return path

    def meta(self, family: str, version: str) -> dict[str, Any] | None:
        path = self.root / family / version / "meta.json"
        if not path.is_file():
            return None
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta

    def remember_alias(self, family: str, alias: str, version: str) -> None:
        aliases = self._aliases(family)
        aliases[alias] = {"version": version, "resolved_at": time.time()}
        (self.root / family).mkdir(parents=True, exist_ok=True)
        _atomic_write(self.root / family / "aliases.json", json.dumps(aliases).encode())

    def alias(self, family: str, alias: str) -> tuple[str, float] | None:
        """(version, when it was last resolved) for ``alias``, if ever resolved here."""
        entry = self._aliases(family).get(alias)
        if entry is None:
            return None
        return str(entry["version"]), float(entry["resolved_at"])

    def verified(self, family: str, version: str, signer: VersionSigner) -> ResolvedModel | None:
        """The cached file of ``version`` if intact and signed by this platform, else None.

        A version's file never changes once registered, and the signature covers its
        checksum and the family's contract: a file that passes is the one MLflow holds,
        so a replica may load it without asking MLflow (or importing its client)."""
        meta = self.meta(family, version)
        path = self.get(family, version, str(meta["sha256"])) if meta else None
        if meta is None or path is None:
            return None
        contract = get_family(family).contract.fingerprint()
        if not signer.verifies_version(
            family, str(meta["sha256"]), contract, meta.get("signature")
        ):
            logger.error(
                "%s v%s: cached file is not signed by this platform; ignored", family, version
            )
            return None
        return ResolvedModel(family, version, path, str(meta["sha256"]), "cache")

    def _aliases(self, family: str) -> dict[str, Any]:
        path = self.root / family / "aliases.json"
        if not path.is_file():
            return {}
        aliases: dict[str, Any] = json.loads(path.read_text())
        return aliases


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
