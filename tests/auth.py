"""API keys for tests that talk to a served app through a real socket."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from serving.dataplane.game_time import DEADLINE_HEADER
from serving.protocol.keys import KeyStore
from serving.settings import AuthSettings

PATIENT_DEADLINE_MS = "5000"


@dataclass(frozen=True)
class TestKeys:
    """A key file with one admin key (admin holds every scope)."""

    __test__ = False  # not a test class, whatever pytest's name pattern says

    path: Path
    admin: str

    @classmethod
    def create(cls, path: Path) -> TestKeys:
        return cls(path, KeyStore(path).create("tests-admin", ["admin"]))

    @property
    def auth(self) -> AuthSettings:
        return AuthSettings(keys_file=self.path)

    @property
    def headers(self) -> dict[str, str]:
        """The admin key, and a deadline for tests of something else than game time.

        On two busy cores a request can take longer than a family's default
        deadline (NPC 20 ms) and be answered by its fallback, with no version:
        tests of rollouts, swaps and faults judge which version answered, so
        they give their requests a game server's most patient budget.
        Game time's own tests set their deadlines themselves.
        """
        return {**bearer(self.admin), DEADLINE_HEADER: PATIENT_DEADLINE_MS}

    def session(self) -> requests.Session:
        """One connection per request, as the tests made before keys existed: a
        pooled keep-alive connection can outlive the HAProxy process (Ray reloads
        it when an app is redeployed) whose backends it was opened on."""
        session = requests.Session()
        session.headers.update({**self.headers, "Connection": "close"})
        return session


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
