"""The platform's signatures, and the owner-only files that hold its secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from models.errors import GameserveError
from pipelines.private_files import write_private
from pipelines.signing import VersionSigner


def test_a_signature_binds_family_checksum_and_contract(tmp_path: Path) -> None:
    signer = VersionSigner.at(tmp_path / "signing.key", create=True)
    signature = signer.sign_version("npc-behavior", "ab" * 32, "contract1")
    assert signer.verifies_version("npc-behavior", "ab" * 32, "contract1", signature)
    for family, sha, contract in [
        ("difficulty-tuning", "ab" * 32, "contract1"),
        ("npc-behavior", "cd" * 32, "contract1"),
        ("npc-behavior", "ab" * 32, "contract2"),
    ]:
        assert not signer.verifies_version(family, sha, contract, signature)
    assert not signer.verifies_version("npc-behavior", "ab" * 32, "contract1", None)
    other = VersionSigner.at(tmp_path / "other.key", create=True)
    assert not other.verifies_version("npc-behavior", "ab" * 32, "contract1", signature)


def test_an_alias_signature_names_its_version(tmp_path: Path) -> None:
    signer = VersionSigner.at(tmp_path / "signing.key", create=True)
    signed = signer.sign_alias("npc-behavior", "champion", "3")
    assert signed.startswith("3:")
    assert signer.verifies_alias("npc-behavior", "champion", "3", signed)
    assert not signer.verifies_alias("npc-behavior", "champion", "4", signed)
    assert not signer.verifies_alias("npc-behavior", "challenger", "3", signed)
    # A version signature is no alias signature, and the other way round.
    version_mac = signer.sign_version("npc-behavior", "champion", "3")
    assert not signer.verifies_alias("npc-behavior", "champion", "3", f"3:{version_mac}")


def test_the_key_is_made_once_owner_only_and_required_where_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    with pytest.raises(GameserveError, match="does not exist"):
        VersionSigner.at(path)
    first = VersionSigner.at(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = VersionSigner.at(path, create=True)  # the existing key, not a new one
    assert again.sign_alias("f", "champion", "1") == first.sign_alias("f", "champion", "1")


def test_private_files_are_owner_only_even_when_they_existed(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    assert write_private(path, "new")
    assert (path.read_text(), stat.S_IMODE(path.stat().st_mode)) == ("new", 0o600)
    assert not write_private(path, "other", exclusive=True)
    assert path.read_text() == "new"
