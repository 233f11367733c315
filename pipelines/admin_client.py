"""The admin API from the CLI and notebooks: one authenticated HTTP call per command."""

from __future__ import annotations

from typing import Any

import requests

from models.errors import GameserveError, RegistryUnavailableError, error_for
from pipelines.key_commands import stored_admin_key
from pipelines.settings import Settings
from pipelines.stack_state import StackState


def game_api(settings: Settings) -> tuple[str, str | None]:
    """(URL, key) of the game API of ``settings.api_url``, or of the stack running here."""
    url = settings.api_url
    if url is None:
        state = StackState.read(settings)
        if state is None:
            raise RegistryUnavailableError(
                "api_url: no running stack here; run `gameserve up` or set GAMESERVE_API_URL"
            )
        url = state.api_url
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return url, key or stored_admin_key(settings)


class AdminClient:
    def __init__(self, url: str, key: str | None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/v1/admin"
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.timeout_s = timeout_s

    @classmethod
    def for_stack(cls, settings: Settings) -> AdminClient:
        """The admin API of ``settings.admin_url``, or of the stack running here."""
        url = settings.admin_url
        if url is None:
            state = StackState.read(settings)
            if state is None or not state.admin_url:
                raise RegistryUnavailableError(
                    "admin_url: no running stack here; run `gameserve up` or set "
                    "GAMESERVE_ADMIN_URL"
                )
            url = state.admin_url
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(url, key or stored_admin_key(settings))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            answer = self.session.request(
                method, self.url + path, json=body, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise RegistryUnavailableError(f"admin API {self.url}: {exc}") from None
        try:
            payload = answer.json()
        except ValueError:
            payload = None
        if answer.ok:
            return payload
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            raise error_for(str(error.get("code")), str(error.get("message")))
        raise GameserveError(f"admin API answered {answer.status_code}: {answer.text[:200]}")

    def status(self, family: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/families/{family}")
        return result

    def start(self, family: str, version: str) -> str:
        body = {"version": version}
        return str(self.call("POST", f"/families/{family}/rollout", body)["message"])

    def command(self, family: str, action: str) -> str:
        return str(self.call("POST", f"/families/{family}/rollout/{action}")["message"])

    def rollback(self, family: str) -> str:
        return str(self.call("POST", f"/families/{family}/rollback")["message"])

    def set_champion(self, family: str, version: str) -> str:
        body = {"version": version}
        return str(self.call("PUT", f"/families/{family}/champion", body)["message"])
