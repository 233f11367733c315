"""API keys: stored hashed, owner-only, rotated and revoked live; token buckets."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from models.errors import InvalidInputError, RateLimitedError, UnauthorizedError
from serving.protocol import keys as keys_module
from serving.protocol.access import RateLimiter, TokenBucket
from serving.protocol.keys import KeyStore, parse_scopes
from serving.settings import AuthSettings, ServingSettings


def _store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json", reload_interval_s=0)


def test_a_key_is_shown_once_and_stored_only_as_a_salted_digest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = store.create("game-server", ["infer"])
    text = (tmp_path / "keys.json").read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text
    assert key not in text
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    record = store.authenticate(key)
    assert (record.name, record.scopes) == ("game-server", ["infer"])
    assert record.allows("infer")
    assert not record.allows("read")


def test_admin_holds_every_scope(tmp_path: Path) -> None:
    record = _store(tmp_path).authenticate(_store(tmp_path).create("ops", ["admin"]))
    assert all(record.allows(scope) for scope in ("infer", "read", "admin"))


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        (None, "send 'Authorization: Bearer"),
        ("", "send 'Authorization: Bearer"),
        ("not-a-key", "unknown or revoked"),
        ("gsk_000000000000_secret", "unknown or revoked"),
    ],
)
def test_missing_and_unknown_keys_are_refused(
    tmp_path: Path, presented: str | None, expected: str
) -> None:
    store = _store(tmp_path)
    store.create("game-server", ["infer"])
    with pytest.raises(UnauthorizedError, match=expected):
        store.authenticate(presented)


def test_a_right_id_with_a_wrong_secret_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = store.create("game-server", ["infer"])
    with pytest.raises(UnauthorizedError, match="unknown or revoked"):
        store.authenticate(key[:-2] + ("AA" if not key.endswith("AA") else "BB"))


def test_rotate_and_revoke_take_effect_in_another_reader(tmp_path: Path) -> None:
    writer, reader = _store(tmp_path), _store(tmp_path)
    old = writer.create("game-server", ["infer", "read"], rate_per_s=50)
    assert reader.authenticate(old).name == "game-server"
    new = writer.rotate("game-server")
    with pytest.raises(UnauthorizedError):
        reader.authenticate(old)
    rotated = reader.authenticate(new)
    assert (rotated.scopes, rotated.rate_per_s) == (["infer", "read"], 50)
    writer.revoke("game-server")
    with pytest.raises(UnauthorizedError):
        reader.authenticate(new)
    assert writer.list() == []


def test_a_new_key_works_at_once_on_a_replica_that_checked_the_file_a_moment_ago(
    tmp_path: Path,
) -> None:
    writer = _store(tmp_path)
    first = writer.create("first", ["infer"])
    replica = KeyStore(writer.path, reload_interval_s=3600.0)  # it will not poll again
    assert replica.authenticate(first).name == "first"
    second = writer.create("second", ["read"])
    assert replica.authenticate(second).name == "second"  # an unknown id looks again


def test_an_expired_key_is_refused_by_name(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = store.create("temp", ["read"], expires_in_s=-1)
    with pytest.raises(UnauthorizedError, match="'temp' has expired"):
        store.authenticate(key)


def test_names_are_unique_and_errors_name_the_field(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create("a", ["read"])
    with pytest.raises(InvalidInputError, match=r"^name: a key named 'a' exists"):
        store.create("a", ["read"])
    with pytest.raises(InvalidInputError, match=r"^name: no key named 'b'"):
        store.revoke("b")
    with pytest.raises(InvalidInputError, match=r"^scopes:"):
        parse_scopes("infer,root")
    assert parse_scopes("read, infer") == ["infer", "read"]


def test_a_key_file_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = store.create("ops", ["admin"])
    os.chmod(tmp_path / "keys.json", 0o666)
    with pytest.raises(UnauthorizedError):
        _store(tmp_path).authenticate(key)


def test_a_key_file_others_can_read_works_and_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It holds digests, never keys (a Kubernetes Secret mounts 0644 by default)."""
    key = _store(tmp_path).create("game-server", ["infer"])
    os.chmod(tmp_path / "keys.json", 0o644)
    with caplog.at_level(logging.WARNING, logger="serving.protocol.keys"):
        assert _store(tmp_path).authenticate(key).name == "game-server"
    assert any("readable by others" in r.getMessage() for r in caplog.records)


def test_a_key_file_mounted_as_a_kubernetes_secret_is_followed_through_its_swaps(
    tmp_path: Path,
) -> None:
    """The kubelet mounts a Secret as a link to a link (keys.json -> ..data/keys.json,
    ..data -> a timestamped folder) and updates it by swapping ..data atomically."""
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(folder: str, keys: KeyStore) -> None:
        (mount / folder).mkdir()
        os.replace(keys.path, mount / folder / "keys.json")
        link = mount / "..data.tmp"
        link.symlink_to(folder)
        os.replace(link, mount / "..data")  # the atomic swap

    first = _store(tmp_path / "first")
    old = first.create("game-server", ["infer"])
    publish("..2026_12_07_a", first)
    (mount / "keys.json").symlink_to("..data/keys.json")
    replica = KeyStore(mount / "keys.json", reload_interval_s=0)
    assert replica.authenticate(old).name == "game-server"
    second = _store(tmp_path / "second")
    new = second.create("game-server", ["infer"])
    publish("..2026_12_07_b", second)
    assert replica.authenticate(new).name == "game-server"
    with pytest.raises(UnauthorizedError, match="unknown or revoked"):
        replica.authenticate(old)  # the old Secret's key is gone with it


def test_a_wall_clock_stepped_back_does_not_stop_a_revocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reloads are paced by the monotonic clock: an NTP step back of an hour does not
    keep a revoked key working for that hour. (Expiry is a wall time, written by the
    CLI, perhaps on another machine: a clock stepped back before it re-opens a key
    until the clock passes it again.)"""
    clock = {"wall": 1_000_000.0, "monotonic": 50.0}
    fake = SimpleNamespace(time=lambda: clock["wall"], monotonic=lambda: clock["monotonic"])
    writer = _store(tmp_path)
    key = writer.create("game-server", ["infer"])
    monkeypatch.setattr(keys_module, "time", fake)
    replica = KeyStore(writer.path, reload_interval_s=1.0)
    assert replica.authenticate(key).name == "game-server"
    writer.revoke("game-server")
    clock["wall"] -= 3600.0  # the step back
    clock["monotonic"] += 1.5  # while real time moves on past the reload interval
    with pytest.raises(UnauthorizedError, match="unknown or revoked"):
        replica.authenticate(key)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=3, tokens=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0


def test_rate_limiter_uses_the_keys_own_rate_and_says_when_to_retry() -> None:
    limiter = RateLimiter(rate_per_s=None, burst=2)
    for _ in range(100):
        limiter.check("unlimited", None, None, now=0.0)
    limiter.check("slow", 1.0, 2, now=0.0)
    limiter.check("slow", 1.0, 2, now=0.0)
    with pytest.raises(RateLimitedError) as refused:
        limiter.check("slow", 1.0, 2, now=0.0)
    assert refused.value.status == 429
    assert refused.value.retry_after_s == pytest.approx(1.0)
    assert "'slow' is over its 1 requests/s" in refused.value.message


def test_each_replica_enforces_its_share_of_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=10, share=0.5)
    for _ in range(5):
        limiter.check("k", None, None, now=0.0)
    with pytest.raises(RateLimitedError):
        limiter.check("k", None, None, now=0.0)


def test_a_replicas_share_follows_the_live_ingress_replicas() -> None:
    """Scaled from 2 ingress replicas to 4, each takes a quarter of the key's rate
    (the ingress sets ``share`` from the collector's heartbeat answer)."""
    limiter = RateLimiter(rate_per_s=20, burst=20, share=0.5)
    for _ in range(10):
        limiter.check("k", None, None, now=0.0)
    limiter.share = 1 / 4
    for _ in range(5):
        limiter.check("k", None, None, now=1.0)  # a new share starts a full bucket of it
    with pytest.raises(RateLimitedError, match="over its 20 requests/s"):
        limiter.check("k", None, None, now=1.0)


def test_auth_off_is_refused_off_loopback() -> None:
    ServingSettings(host="127.0.0.1", auth=AuthSettings(mode="off"))
    ServingSettings(host="::1", auth=AuthSettings(mode="off"))
    with pytest.raises(ValueError, match=r"auth\.mode: 'off' is for loopback only"):
        ServingSettings(host="0.0.0.0", auth=AuthSettings(mode="off"))
