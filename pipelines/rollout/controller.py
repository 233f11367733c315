"""The rollout controller: watches MLflow, runs each rollout, decides, carries it out.

It lives in the pipeline process that owns the registry client and the serving
gateway (``gameserve up``), not in a Ray actor: MLflow is its state of record
(aliases, commands as tags, one run per rollout), it drives serving only
through ``ServeGateway``, and replicas stay free of MLflow writes. If the
process stops mid-rollout, the challenger's traffic is withdrawn and its alias
kept, so the next start runs the rollout again from the beginning.

Each family has its own loop (a thread): a rollout bakes for as long as its
steps say, and meanwhile another family's rollout or champion change goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from models import FAMILIES
from models.errors import GameserveError, ModelNotFoundError, RegistryUnavailableError
from pipelines.registry import CHALLENGER, CHAMPION, ModelRegistry
from pipelines.rollout.policy import Verdict, judge
from pipelines.rollout.preflight import preflight
from pipelines.rollout.record import RolloutRecord
from pipelines.rollout.settings import (
    FamilyRollout,
    Preflight,
    RolloutSettings,
    RolloutStep,
    Thresholds,
)
from serving.app.gateway import ServeGateway
from serving.dataplane.rollout_metrics import RolloutWindow

logger = logging.getLogger(__name__)

COMMAND_TAG = "gameserve.rollout.command"
OUTCOME_TAG = "gameserve.rollout.outcome"
COMMANDS = ("pause", "resume", "abort", "promote")
# How often a step held past its bake logs why it is held.
HELD_REPORT_S = 30.0


@dataclass(frozen=True)
class RolloutResult:
    family: str
    champion: str
    challenger: str
    decision: str  # promoted, rolled_back, interrupted
    reason: str
    run_id: str


class RolloutController:
    def __init__(
        self,
        registry: ModelRegistry,
        gateway: ServeGateway,
        settings: RolloutSettings,
        recorded: Path | None = None,
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        self.settings = settings
        # The payload log's folder: pre-flight replays recorded traffic from it.
        self.recorded = recorded
        self.history: list[RolloutResult] = []
        # Versions refused once are not tried again while their alias stays put:
        # a retry every poll would only repeat the failure (and its MLflow run).
        self._refused_champions: dict[str, str] = {}
        self._rejected: set[tuple[str, str]] = set()
        self._unsent: list[RolloutRecord] = []  # records MLflow could not take yet
        self._unsent_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """One loop per registered family, each on its own thread."""
        for family in FAMILIES:
            thread = threading.Thread(
                target=self._loop, args=(family,), name=f"rollout-{family}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))

    def _loop(self, family: str) -> None:
        last_problem: str | None = None
        while not self._stop.is_set():
            problem = None
            try:
                self._flush_unsent()
                self.run_family(family)
            except GameserveError as exc:
                problem = exc.message
            except Exception as exc:
                problem = repr(exc)
                if problem != last_problem:
                    logger.exception("%s: rollout controller pass failed", family)
            # Once per change, not once per poll: an outage is one line, not thousands.
            if problem != last_problem:
                if problem is None:
                    logger.info("%s: rollout controller passes succeed again", family)
                else:
                    logger.warning("%s: rollout controller: %s", family, problem)
                last_problem = problem
            self._stop.wait(self.settings.poll_interval_s)

    def run_once(self) -> None:
        """One pass over every family in turn (the loops run ``run_family`` each)."""
        self._flush_unsent()
        for family in FAMILIES:
            try:
                self.run_family(family)
            except GameserveError as exc:  # one family's trouble must not stall the others
                logger.debug("%s: %s", family, exc.message)

    def run_family(self, family: str) -> None:
        """Serve the family's champion alias; run its pending challenger to the end."""
        try:
            aliases = self.registry.aliases(family)
        except ModelNotFoundError:
            return  # nothing registered for it yet

        champion = aliases.get(CHAMPION)
        if champion is not None and self.gateway.versions.get(family) != champion:
            self._serve_champion(family, champion)
        challenger = aliases.get(CHALLENGER)
        if champion is None or challenger is None or challenger == champion:
            return
        if (family, challenger) in self._rejected:
            # Rolled back, but its alias could not be removed then: try that alone.
            self.registry.delete_alias(family, CHALLENGER)
            return
        self.history.append(self.run_rollout(family, champion, challenger))

    def _flush_unsent(self) -> None:
        with self._unsent_lock:
            self._unsent = [record for record in self._unsent if not record.flush()]

    def _serve_champion(self, family: str, champion: str) -> None:
        """Serve the champion alias, or keep the current version and say why, once."""
        if self._refused_champions.get(family) == champion:
            return
        logger.info("%s: champion alias is v%s; serving it", family, champion)
        try:
            self.registry.verify_champion(family, champion)  # moved outside the pipeline?
            self.gateway.set_version(family, champion)
        except GameserveError as exc:
            self._refused_champions[family] = champion
            logger.error(
                "%s: champion v%s refused, still serving v%s: %s",
                family,
                champion,
                self.gateway.versions.get(family),
                exc.message,
            )
            return
        self._refused_champions.pop(family, None)

    def run_rollout(self, family: str, champion: str, challenger: str) -> RolloutResult:
        plan = self.settings.family(family)
        record = self.registry.rollout_record(family, champion, challenger)
        record.params(
            {
                "steps": json.dumps([s.model_dump() for s in plan.steps]),
                "thresholds": plan.thresholds.model_dump_json(),
                "preflight": plan.preflight.model_dump_json(),
            }
        )
        self._clear_command(family)
        logger.info("%s: rollout v%s -> v%s (run %s)", family, champion, challenger, record.run_id)
        try:
            return self._run(family, champion, challenger, plan, record)
        finally:
            if not record.flush():
                with self._unsent_lock:
                    self._unsent.append(record)  # sent by a later pass, once MLflow is back

    def _run(
        self,
        family: str,
        champion: str,
        challenger: str,
        plan: FamilyRollout,
        record: RolloutRecord,
    ) -> RolloutResult:
        refusal = self._before_traffic(family, champion, challenger, plan.preflight, record)
        if refusal is not None:
            return self._roll_back(family, champion, challenger, record, refusal)
        record.event("challenger_started")
        for index, step in enumerate(plan.steps):
            self.gateway.set_traffic(
                family, step.weight, step.shadow, salt=record.run_id, step=index,
                step_name=step.name,
            )  # fmt: skip
            self.gateway.rollout_metrics(family, reset=True)
            record.publish(challenger, step.name)
            record.event("step_started", index=index, name=step.name)
            outcome, reason, window = self._bake(record, challenger, step, plan.thresholds)
            record.step(index, step.name, window, outcome)
            if outcome == "pass":
                continue
            if outcome == "promote":
                break
            if outcome == "interrupted":
                return self._interrupted(family, champion, challenger, record, reason)
            return self._roll_back(family, champion, challenger, record, f"{step.name}: {reason}")
        return self._promote(family, champion, challenger, record)

    def _interrupted(
        self, family: str, champion: str, challenger: str, record: RolloutRecord, reason: str
    ) -> RolloutResult:
        self.gateway.stop_challenger(family, promote=False)
        record.finish("interrupted", reason)
        return RolloutResult(family, champion, challenger, "interrupted", reason, record.run_id)

    def _before_traffic(
        self, family: str, champion: str, challenger: str, gates: Preflight, record: RolloutRecord
    ) -> str | None:
        """Pre-flight and the challenger's start; the reason to roll back, if any.

        Whatever goes wrong here (a model ONNX Runtime cannot load, a missing
        artifact, a replica that refuses it) ends this rollout once, with its
        reason; an operator's abort is honoured between the phases.
        """
        try:
            if gates.enabled:
                record.publish(challenger, "preflight")
                report = preflight(
                    self.registry, family, champion, challenger, gates, self.recorded
                )
                record.metrics(report.metrics)
                record.event("preflight", checks=report.checks)
                if not report.passed:
                    return "pre-flight: " + report.reason
            if self._take_command(family) == "abort":
                return "aborted by an operator before traffic"
            self.gateway.start_challenger(family, challenger)
        except (RegistryUnavailableError, MlflowException) as exc:
            # MLflow's outage is not the challenger's fault: no verdict, the next
            # pass after MLflow is back starts this rollout again.
            if family in self.gateway.challengers:
                self.gateway.stop_challenger(family, promote=False)
            record.finish("interrupted", f"MLflow unreachable before traffic: {exc}")
            raise
        except Exception as exc:  # any other failure before traffic ends this rollout, once
            logger.exception("%s: v%s failed before traffic", family, challenger)
            message = exc.message if isinstance(exc, GameserveError) else repr(exc)
            return f"before traffic: {message}"
        return None

    def _bake(
        self, record: RolloutRecord, challenger: str, step: RolloutStep, limits: Thresholds
    ) -> tuple[str, str, RolloutWindow]:
        """Run one step until it passes its bake, fails, or an operator intervenes."""
        family = record.family
        started, paused, registry_down = time.monotonic(), False, False
        window = self.gateway.rollout_metrics(family)
        held = "not judged yet"
        next_report_s = step.bake_s + HELD_REPORT_S
        while not self._stop.wait(self.settings.decision_interval_s):
            # A command once read is cleared in MLflow: it is acted on even if the
            # record's writes fail right after, never dropped with them.
            problem: str | None = None
            try:
                command = self._take_command(family)
            except Exception as exc:  # MLflow down: hold this step, keep judging safety
                command, problem = None, str(exc)
            if problem is None and not record.flush():
                problem = "the rollout's record could not be written"
            if problem is not None and not registry_down:
                logger.error(
                    "%s: MLflow unreachable (%s); rollout of v%s paused at %s",
                    family, problem, challenger, step.name,
                )  # fmt: skip
            elif problem is None and registry_down:
                logger.warning("%s: MLflow is back; rollout of v%s resumes", family, challenger)
            registry_down = problem is not None
            if command == "abort":
                return "abort", "aborted by an operator", window
            if command == "promote":
                return "promote", "promoted by an operator", window
            if command in ("pause", "resume"):
                paused = command == "pause"
                record.publish(challenger, f"{step.name}{' (paused)' if paused else ''}")
            window = self.gateway.rollout_metrics(family)
            waited_s = time.monotonic() - started
            baked = waited_s >= step.bake_s
            verdict = judge(window.champion, window.challenger, limits, baked=baked)
            if verdict.action == "fail":  # even while paused: safety does not wait
                return "fail", verdict.reason, window
            if verdict.action == "pass" and baked and not paused and not registry_down:
                return "pass", verdict.reason, window
            held = _held_because(verdict, paused, registry_down)
            if baked and waited_s >= next_report_s:  # a step held past its bake says why
                logger.warning(
                    "%s: %s of v%s held %.0f s past its bake: %s",
                    family, step.name, challenger, waited_s - step.bake_s, held,
                )  # fmt: skip
                next_report_s = waited_s + HELD_REPORT_S
        return "interrupted", f"the controller stopped; the step was held: {held}", window

    def _promote(
        self, family: str, champion: str, challenger: str, record: RolloutRecord
    ) -> RolloutResult:
        # Registry first: if serving then fails, the next pass reconciles to the alias.
        waiting = False
        while True:
            try:
                self.registry.promote(family, challenger)
                break
            except (RegistryUnavailableError, MlflowException) as exc:
                if not waiting:
                    logger.error("%s: MLflow unreachable (%s); v%s waits to be promoted",
                                 family, exc, challenger)  # fmt: skip
                waiting = True
            if self._stop.wait(self.settings.decision_interval_s):
                reason = "the controller stopped before promoting"
                return self._interrupted(family, champion, challenger, record, reason)
        self.gateway.stop_challenger(family, promote=True)
        record.publish(challenger, "promoted")
        record.finish("promoted", "passed every step")
        logger.info("%s: v%s promoted", family, challenger)
        return RolloutResult(
            family, champion, challenger, "promoted", "passed every step", record.run_id
        )

    def _roll_back(
        self, family: str, champion: str, challenger: str, record: RolloutRecord, reason: str
    ) -> RolloutResult:
        self._rejected.add((family, challenger))
        self.gateway.stop_challenger(family, promote=False)  # traffic first: no MLflow needed
        registry = self.registry
        record.write(
            lambda: registry.record_event(family, challenger, "rolled_back", {"reason": reason})
        )
        record.write(lambda: registry.set_version_tag(family, challenger, OUTCOME_TAG, reason))
        record.write(lambda: registry.delete_alias(family, CHALLENGER))
        record.publish(challenger, "rolled back")
        record.finish("rolled_back", reason)
        logger.warning("%s: v%s rolled back: %s", family, challenger, reason)
        return RolloutResult(family, champion, challenger, "rolled_back", reason, record.run_id)

    def _take_command(self, family: str) -> str | None:
        command = self.registry.family_tags(family).get(COMMAND_TAG)
        if command is None:
            return None
        self._clear_command(family)
        return command if command in COMMANDS else None

    def _clear_command(self, family: str) -> None:
        if COMMAND_TAG in self.registry.family_tags(family):
            self.registry.delete_family_tag(family, COMMAND_TAG)


def _held_because(verdict: Verdict, paused: bool, registry_down: bool) -> str:
    if verdict.action != "pass":
        return verdict.reason
    return "paused by an operator" if paused else "MLflow unreachable" if registry_down else "-"
