"""The rollout controller: a reconcile loop per family over saved rollout state.

It lives in the pipeline process that owns the registry client and the serving
gateway (``gameserve up``), not in a Ray actor: MLflow holds the aliases and one
run per rollout, the store beside the stack holds each rollout's progress, it
drives serving only through ``ServeGateway``, and replicas stay free of MLflow
writes. Each pass advances a family by at most one transition
(``pipelines/rollout/reconcile.py``), so a controller stopped or killed
anywhere resumes where it was: the same run, the same step.

Each family has its own loop (a thread): a rollout bakes for as long as its
steps say, and meanwhile another family's rollout or champion change goes on.
Operator commands arrive in-process from the admin API and wake the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from models import FAMILIES
from models.errors import GameserveError
from pipelines.rollout.reconcile import Reconciler, registry_away
from pipelines.rollout.seams import Gateway, Registry, RolloutResult
from pipelines.rollout.settings import RolloutSettings
from pipelines.rollout.state import Clock, Command, Decision, RolloutStore, SystemClock

logger = logging.getLogger(__name__)

# A bound on one run_once pass's transitions: a rollout whose steps need no
# traffic to pass still waits for their bake between passes.
MAX_TRANSITIONS_PER_PASS = 50


class RolloutController:
    def __init__(
        self,
        registry: Registry,
        gateway: Gateway,
        settings: RolloutSettings,
        store: RolloutStore,
        recorded: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.reconciler = Reconciler(
            registry, gateway, settings, store, clock or SystemClock(), recorded
        )
        self._stop = threading.Event()
        self._wake: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    @property
    def history(self) -> list[RolloutResult]:
        """Rollouts this controller decided, oldest first."""
        return self.reconciler.history

    def send(self, family: str, command: Command) -> None:
        """An operator's command, applied by the family's next pass (which it wakes)."""
        self.reconciler.send(family, command)
        self._wake.setdefault(family, threading.Event()).set()

    def start(self) -> None:
        """One loop per registered family, each on its own thread."""
        for family in FAMILIES:
            self._wake.setdefault(family, threading.Event())
            thread = threading.Thread(
                target=self._loop, args=(family,), name=f"rollout-{family}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the loops; every rollout stays where it is, to be resumed by the next start."""
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))

    def _loop(self, family: str) -> None:
        wake = self._wake[family]
        last_problem: str | None = None
        while not self._stop.is_set():
            moved, problem = self._pass(family, last_problem)
            # Once per change, not once per poll: an outage is one line, not thousands.
            if problem != last_problem and not problem_is_registry(problem):
                if problem is None:
                    logger.info("%s: rollout controller passes succeed again", family)
                else:
                    logger.warning("%s: rollout controller: %s", family, problem)
            last_problem = problem
            if moved:
                continue  # the next transition at once: a decision waits for nothing
            state = self.store.load(family)
            active = state is not None and state.active
            settings = self.settings
            wake.wait(settings.decision_interval_s if active else settings.poll_interval_s)
            wake.clear()

    def _pass(self, family: str, last_problem: str | None) -> tuple[bool, str | None]:
        try:
            return self.reconciler.advance(family), None
        except Exception as exc:
            if registry_away(exc):
                message = exc.message if isinstance(exc, GameserveError) else str(exc)
                self.reconciler.mark_registry(family, message)
                return False, _REGISTRY + message
            problem = exc.message if isinstance(exc, GameserveError) else repr(exc)
            if problem != last_problem and not isinstance(exc, GameserveError):
                logger.exception("%s: rollout controller pass failed", family)
            return False, problem

    def run_once(self) -> None:
        """Every family in turn, each advanced until it waits (what a loop does between sleeps)."""
        for family in FAMILIES:
            try:
                for _ in range(MAX_TRANSITIONS_PER_PASS):
                    if not self.reconciler.advance(family):
                        break
            except GameserveError as exc:  # one family's trouble must not stall the others
                logger.debug("%s: %s", family, exc.message)

    def run_rollout(self, family: str, timeout_s: float = 1_800.0) -> RolloutResult:
        """Drive ``family``'s passes here until its next rollout is decided.

        The blocking form (tests, notebooks): the challenger alias must be set.
        Stopped before a decision, it answers ``interrupted`` and leaves the
        rollout's saved state as it was, to be resumed.
        """
        decided = len(self.history)
        deadline = time.monotonic() + timeout_s
        wake = self._wake.setdefault(family, threading.Event())
        last_problem: str | None = None
        while len(self.history) == decided:
            if self._stop.is_set() or time.monotonic() > deadline:
                state = self.store.load(family)
                where = "not started" if state is None else state.phase.value
                return RolloutResult(
                    family, "", "", Decision.INTERRUPTED,
                    f"the controller stopped at {where}", "" if state is None else state.run_id,
                )  # fmt: skip
            moved, last_problem = self._pass(family, last_problem)
            if not moved:
                wake.wait(self.settings.decision_interval_s)
                wake.clear()
        return self.history[decided]


_REGISTRY = "registry: "


def problem_is_registry(problem: str | None) -> bool:
    """MLflow's outages are said by ``Reconciler.mark_registry``, once each way."""
    return problem is not None and problem.startswith(_REGISTRY)
