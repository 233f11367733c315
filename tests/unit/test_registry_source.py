"""Replicas load a cached, signed version without MLflow; anything else goes to MLflow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from models import get_family
from pipelines.model_cache import ModelCache, sha256_of
from pipelines.signing import VersionSigner

NPC = "npc-behavior"


def _cache_a_signed_version(tmp_path: Path, signer: VersionSigner) -> Path:
    source = tmp_path / "source.onnx"
    source.write_bytes(b"not a real graph: the cache checks bytes, not ONNX")
    digest = sha256_of(source)
    contract = get_family(NPC).contract.fingerprint()
    cache = ModelCache(tmp_path / "cache")
    return cache.put(NPC, "3", source, digest, signer.sign_version(NPC, digest, contract))


def test_a_cached_signed_version_is_fetched_without_importing_mlflow(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    cached = _cache_a_signed_version(tmp_path, VersionSigner.at(key, create=True))
    # A fresh interpreter, as a replica is: nothing imported MLflow before the fetch.
    script = textwrap.dedent(f"""
        import sys
        from pipelines.registry_source import RegistryModelSource
        source = RegistryModelSource(
            "http://127.0.0.1:9", {str(tmp_path / "cache")!r}, 1, 0, {str(key)!r}
        )
        print(source.fetch({NPC!r}, "3"))
        print("mlflow" in sys.modules)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    path, mlflow_imported = done.stdout.split()
    assert Path(path) == cached
    assert mlflow_imported == "False"


def test_a_file_not_signed_by_this_platform_is_not_taken_from_the_cache(tmp_path: Path) -> None:
    _cache_a_signed_version(tmp_path, VersionSigner.at(tmp_path / "theirs.key", create=True))
    ours = VersionSigner.at(tmp_path / "ours.key", create=True)
    assert ModelCache(tmp_path / "cache").verified(NPC, "3", ours) is None


def test_a_damaged_cached_file_is_discarded(tmp_path: Path) -> None:
    signer = VersionSigner.at(tmp_path / "signing.key", create=True)
    cached = _cache_a_signed_version(tmp_path, signer)
    cached.write_bytes(b"changed after it was signed")
    assert ModelCache(tmp_path / "cache").verified(NPC, "3", signer) is None
    assert not cached.exists()
