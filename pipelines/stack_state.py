"""What a running stack publishes about itself: read by every other command, cheaply.

Kept apart from the stack itself so that reading it never imports Ray or MLflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.settings import Settings


@dataclass(frozen=True)
class StackState:
    """What a running stack publishes about itself."""

    pid: int
    api_url: str
    dashboard_url: str
    tracking_uri: str
    champions: dict[str, str]
    admin_url: str = ""
    grpc_address: str = ""  # "" when serving.grpc.port is None

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.data_dir / "stack.json"

    @classmethod
    def read(cls, settings: Settings) -> StackState | None:
        path = cls.path(settings)
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))
