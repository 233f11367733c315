"""Keeps the embedded MLflow server running: restarted with backoff when it dies.

Serving does not depend on MLflow while it runs (replicas hold their models,
the registry falls back to its verified cache), but the rollout controller and
every CLI command do. A watcher thread checks the server every
``interval_s``; a dead one is stopped for good (its orphaned worker too) and
started again on the same port, waiting ``backoff`` seconds more after each
failed start. It logs once per change of state, never once per poll.

Stop it only together with the server: a server it restarted was started from
its thread, and the server's parent-death signal (PDEATHSIG) follows the thread
that started it, so it gets SIGTERM when the watcher ends.
"""

from __future__ import annotations

import logging
import threading
import time

from models.errors import GameserveError
from pipelines.tracking_server import EmbeddedTrackingServer

logger = logging.getLogger(__name__)


class TrackingSupervisor:
    def __init__(
        self,
        server: EmbeddedTrackingServer,
        interval_s: float = 2.0,
        backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0),
    ) -> None:
        self.server = server
        self.interval_s = interval_s
        self.backoff_s = backoff_s
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="mlflow-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.server.alive():
                continue
            down_since = time.monotonic()
            logger.error(
                "MLflow at %s stopped; serving continues on cached models, rollouts pause; "
                "restarting it",
                self.server.url,
            )
            if self._restart():
                logger.warning(
                    "MLflow at %s is back after %.1f s",
                    self.server.url,
                    time.monotonic() - down_since,
                )

    def _restart(self) -> bool:
        """Start the server again, backing off between failures; False if told to stop."""
        attempt = 0
        while not self._stop.is_set():
            self.server.stop()  # what is left of it: an orphaned worker holds the port
            try:
                self.server.start()
            except GameserveError as exc:
                wait_s = self.backoff_s[min(attempt, len(self.backoff_s) - 1)]
                if attempt == 0:
                    logger.error("MLflow did not start again (%s); retrying with backoff", exc)
                attempt += 1
                self._stop.wait(wait_s)
                continue
            self.restarts += 1
            return True
        return False
