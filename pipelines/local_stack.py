"""The local stack: the embedded MLflow server and bootstrapped champions.

``gameserve up`` runs it in the foreground. While it is up, a state file in
the data directory says where everything is; other commands and tests poll it.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from pipelines.bootstrap import ChampionStatus, ensure_champions
from pipelines.registry import ModelRegistry, connect
from pipelines.settings import Settings
from pipelines.tracking_server import EmbeddedTrackingServer, is_healthy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackState:
    """What a running stack publishes about itself."""

    pid: int
    tracking_uri: str
    mlflow_ui: str
    champions: dict[str, str]

    @staticmethod
    def path(settings: Settings) -> Path:
        return settings.data_dir / "stack.json"

    @classmethod
    def read(cls, settings: Settings) -> StackState | None:
        path = cls.path(settings)
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


class LocalStack:
    """Starts what the settings ask for, in order, and stops it in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._exit = ExitStack()
        self.registry: ModelRegistry | None = None
        self.champions: list[ChampionStatus] = []
        self.tracking_uri = ""

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def _start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.tracking.uri is None:
            server = EmbeddedTrackingServer(
                settings.mlflow_dir,
                host=settings.tracking.host,
                port=settings.tracking.port,
                startup_timeout_s=settings.tracking.startup_timeout_s,
            )
            self._exit.enter_context(server)
            self.tracking_uri = server.url
        else:
            self.tracking_uri = settings.tracking.uri
            if not is_healthy(self.tracking_uri):
                logger.warning("tracking server %s is not healthy", self.tracking_uri)
        self.registry = connect(self.tracking_uri, settings.tracking, settings.cache_dir)
        self.champions = ensure_champions(self.registry, settings.train)
        state = StackState(
            pid=os.getpid(),
            tracking_uri=self.tracking_uri,
            mlflow_ui=self.tracking_uri,
            champions={c.resolved.family: c.resolved.version for c in self.champions},
        )
        path = StackState.path(settings)
        path.write_text(json.dumps(asdict(state), indent=2))
        self._exit.callback(path.unlink, missing_ok=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()
