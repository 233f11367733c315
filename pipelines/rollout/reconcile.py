"""One pass of the rollout controller: a family's saved state, advanced one transition.

``Reconciler.advance`` reads the family's ``RolloutState``, does what its phase
stands for, and saves the next state. A transition is saved *before* the
action it decides (a failed step is saved as ``WITHDRAWING`` and withdrawn on
the next pass), and each phase's action is safe to repeat (it checks what
serving and the registry already show), so a controller killed between any
two passes, or inside one, resumes with nothing done twice that matters.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
from mlflow.exceptions import MlflowException

from models.errors import GameserveError, ModelNotFoundError, RegistryUnavailableError
from pipelines.registry import CHALLENGER, CHAMPION
from pipelines.rollout.policy import StepOutcome, held_because, judge, step_outcome
from pipelines.rollout.preflight import PreflightReport, preflight
from pipelines.rollout.seams import Gateway, Record, Registry, RolloutResult
from pipelines.rollout.settings import Preflight, RolloutSettings
from pipelines.rollout.state import (
    Clock,
    Command,
    Decision,
    Phase,
    RolloutState,
    RolloutStore,
)

# The controller's log is one stream, whichever module writes a line.
logger = logging.getLogger("pipelines.rollout.controller")

OUTCOME_TAG = "gameserve.rollout.outcome"
# How often a step held past its bake logs why it is held.
HELD_REPORT_S = 30.0


Preflight_ = Callable[[Any, str, str, str, Preflight, Path | None], PreflightReport]


class Reconciler:
    def __init__(
        self,
        registry: Registry,
        gateway: Gateway,
        settings: RolloutSettings,
        store: RolloutStore,
        clock: Clock,
        recorded: Path | None = None,
        run_preflight: Preflight_ = preflight,
    ) -> None:
        self.registry = registry
        self.gateway = gateway
        self.settings = settings
        self.store = store
        self.clock = clock
        self.recorded = recorded  # the payload log's folder, which pre-flight replays
        self.run_preflight = run_preflight
        self.history: list[RolloutResult] = []
        self._records: dict[str, Record] = {}
        self._unsent: list[Record] = []  # finished runs MLflow could not take yet
        self._inbox: dict[str, deque[Command]] = {}
        self._lock = threading.Lock()
        # Versions refused once are not tried again while their alias stays put.
        self._refused_champions: dict[str, str] = {}
        self._registry_down: dict[str, bool] = {}
        self._held_report: dict[str, float] = {}

    # -- commands -------------------------------------------------------------

    def send(self, family: str, command: Command) -> None:
        """An operator's command; the family's next pass applies it."""
        with self._lock:
            self._inbox.setdefault(family, deque()).append(command)

    def _take(self, family: str) -> list[Command]:
        with self._lock:
            queue = self._inbox.get(family)
            taken = list(queue or ())
            if queue:
                queue.clear()
        return taken

    # -- the pass -------------------------------------------------------------

    def advance(self, family: str) -> bool:
        """One pass over ``family``; True if it made a transition."""
        self.flush_unsent()
        state = self.store.load(family)
        if state is None or not state.active:
            return self._idle(family, state)
        record = self._record(state)
        commanded = self._commanded(state, record)
        if commanded is not None:
            return self._save(commanded, record)
        handler = {
            Phase.PREFLIGHT: self._preflight,
            Phase.STARTING: self._starting,
            Phase.STEP: self._step,
            Phase.PROMOTING: self._promoting,
            Phase.WITHDRAWING: self._withdrawing,
        }[state.phase]
        after = handler(state, record)
        return after is not None and self._save(after, record)

    def mark_registry(self, family: str, problem: str | None) -> None:
        """Say once when MLflow goes away under a family's rollout, and once when it is back."""
        state = self.store.load(family)
        what = "" if state is None or not state.active else f"; rollout of v{state.challenger}"
        was_down = self._registry_down.get(family, False)
        if problem is not None and not was_down:
            logger.error("%s: MLflow unreachable (%s)%s holds", family, problem, what)
        elif problem is None and was_down:
            logger.warning("%s: MLflow is back%s resumes", family, what)
        self._registry_down[family] = problem is not None

    def flush_unsent(self) -> None:
        with self._lock:
            self._unsent = [record for record in self._unsent if not record.flush()]

    def _save(self, state: RolloutState, record: Record) -> bool:
        self.store.save(state)
        if not state.active:
            assert state.decision is not None
            self.history.append(
                RolloutResult(state.family, state.champion, state.challenger,
                              state.decision, state.reason, state.run_id)
            )  # fmt: skip
            self._records.pop(state.run_id, None)
            if not record.flush():
                with self._lock:
                    self._unsent.append(record)  # sent by a later pass, once MLflow is back
        return True

    def _record(self, state: RolloutState) -> Record:
        record = self._records.get(state.run_id)
        if record is None:  # a restarted controller: the same run, carried on
            record = self.registry.resume_record(state.family, state.run_id, state.started_at)
            self._records[state.run_id] = record
            record.event("resumed", phase=state.phase.value, step=state.step)
            logger.warning(
                "%s: resuming the rollout of v%s at %s (run %s)",
                state.family, state.challenger, _where(state), state.run_id,
            )  # fmt: skip
        return record

    # -- no rollout running ---------------------------------------------------

    def _idle(self, family: str, last: RolloutState | None) -> bool:
        try:
            aliases = self.registry.aliases(family)
        except ModelNotFoundError:
            return False  # nothing registered for it yet
        self.mark_registry(family, None)
        champion = aliases.get(CHAMPION)
        if champion is not None and self.gateway.versions.get(family) != champion:
            self._serve_champion(family, champion)
        challenger = aliases.get(CHALLENGER)
        if champion is None or challenger is None or challenger == champion:
            for command in self._take(family):
                logger.warning("%s: %s ignored: no rollout is running", family, command.value)
            return False
        plan = self.settings.family(family)
        record = self.registry.rollout_record(family, champion, challenger)
        record.params(
            {
                "steps": json.dumps([s.model_dump() for s in plan.steps]),
                "thresholds": plan.thresholds.model_dump_json(),
                "preflight": plan.preflight.model_dump_json(),
            }
        )
        self._records[record.run_id] = record
        first = Phase.PREFLIGHT if plan.preflight.enabled else Phase.STARTING
        state = RolloutState(
            family, champion, challenger, record.run_id, plan.model_dump(mode="json"), first,
            started_at=record.started_at,
        )  # fmt: skip
        logger.info("%s: rollout v%s -> v%s (run %s)", family, champion, challenger, record.run_id)
        return self._save(state, record)

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
                family, champion, self.gateway.versions.get(family), exc.message,
            )  # fmt: skip
            return
        self._refused_champions.pop(family, None)

    # -- a rollout's phases ---------------------------------------------------

    def _commanded(self, state: RolloutState, record: Record) -> RolloutState | None:
        """The state an operator's commands lead to; None if they change nothing."""
        paused, before_traffic = state.paused, state.phase in (Phase.PREFLIGHT, Phase.STARTING)
        for command in self._take(state.family):
            if command is Command.ABORT and state.phase not in (Phase.PROMOTING, Phase.WITHDRAWING):
                reason = "aborted by an operator" + (" before traffic" if before_traffic else "")
                self._end_step(state, record, "abort")
                return state.to(Phase.WITHDRAWING, decision=Decision.ROLLED_BACK, reason=reason)
            if command is Command.PROMOTE and state.phase is Phase.STEP:
                self._end_step(state, record, "promote")
                return state.to(Phase.PROMOTING, reason="promoted by an operator")
            if command in (Command.PAUSE, Command.RESUME):
                paused = command is Command.PAUSE
            else:
                logger.warning("%s: %s ignored at %s", state.family, command.value, _where(state))
        if paused == state.paused:
            return None
        if state.phase is Phase.STEP:
            record.publish(state.challenger, _step_phase(state, paused))
        record.event("paused" if paused else "resumed_by_operator")
        return state.to(state.phase, paused=paused)

    def _end_step(self, state: RolloutState, record: Record, outcome: str) -> None:
        if state.phase is Phase.STEP and state.step_started is not None:
            step = state.rollout().steps[state.step]
            window = self.gateway.rollout_metrics(state.family)
            record.step(state.step, step.name, window, outcome)

    def _preflight(self, state: RolloutState, record: Record) -> RolloutState:
        gates = state.rollout().preflight
        record.publish(state.challenger, "preflight")
        try:
            report = self.run_preflight(
                self.registry, state.family, state.champion, state.challenger, gates,
                self.recorded,
            )  # fmt: skip
        except Exception as exc:  # any failure but MLflow's ends this rollout, once
            if registry_away(exc):
                raise  # the same pre-flight runs again once MLflow is back
            logger.exception("%s: pre-flight of v%s failed", state.family, state.challenger)
            return _rolled_back(state, f"before traffic: {_message(exc)}")
        self.mark_registry(state.family, None)
        record.metrics(report.metrics)
        record.event("preflight", checks=report.checks)
        if not report.passed:
            return _rolled_back(state, "pre-flight: " + report.reason)
        return state.to(Phase.STARTING)

    def _starting(self, state: RolloutState, record: Record) -> RolloutState:
        try:
            if self.gateway.challengers.get(state.family) != state.challenger:
                self.gateway.start_challenger(state.family, state.challenger)
        except Exception as exc:
            if registry_away(exc):
                raise
            logger.exception("%s: v%s failed before traffic", state.family, state.challenger)
            return _rolled_back(state, f"before traffic: {_message(exc)}")
        self.mark_registry(state.family, None)
        record.event("challenger_started")
        return state.to(Phase.STEP, step=0, step_started=None)

    def _step(self, state: RolloutState, record: Record) -> RolloutState | None:
        family, plan = state.family, state.rollout()
        step = plan.steps[state.step]
        aliases = self._aliases(family)
        if aliases is not None and _superseded(state, aliases):
            reason = f"the aliases moved during the rollout: {aliases}"
            return state.to(Phase.WITHDRAWING, decision=Decision.INTERRUPTED, reason=reason)
        if state.step_started is None or self.gateway.traffic(family) != (
            state.run_id,
            state.step,
        ):
            return self._step_traffic(state, record)
        window = self.gateway.rollout_metrics(family)
        registry_down = aliases is None or not record.flush()
        waited_s = self.clock.now() - state.step_started
        baked = waited_s >= step.bake_s
        verdict = judge(window.champion, window.challenger, plan.thresholds, baked=baked)
        outcome = step_outcome(verdict, baked, state.paused, registry_down)
        if outcome is StepOutcome.HOLD:
            self._report_held(state, waited_s, held_because(verdict, state.paused, registry_down))
            return None
        record.step(state.step, step.name, window, outcome.value)
        if outcome is StepOutcome.FAIL:
            return _rolled_back(state, f"{step.name}: {verdict.reason}")
        if state.step + 1 < len(plan.steps):
            return state.to(Phase.STEP, step=state.step + 1, step_started=None)
        return state.to(Phase.PROMOTING, reason="passed every step")

    def _step_traffic(self, state: RolloutState, record: Record) -> RolloutState:
        """Set the step's traffic: a new step, or one whose serving was restarted under it."""
        family, step = state.family, state.rollout().steps[state.step]
        if state.step_started is not None:
            # Serving restarted (with the stack): the step's window went with it.
            record.event("step_restarted", index=state.step, name=step.name,
                         why="serving restarted; the step's window starts again")  # fmt: skip
        try:
            if self.gateway.challengers.get(family) != state.challenger:
                self.gateway.start_challenger(family, state.challenger)
        except Exception as exc:
            if registry_away(exc):
                raise
            reason = f"{step.name}: the challenger did not start again: {_message(exc)}"
            return _rolled_back(state, reason)
        self.gateway.set_traffic(
            family, step.weight, step.shadow, salt=state.run_id, step=state.step,
            step_name=step.name,
        )  # fmt: skip
        self.gateway.rollout_metrics(family, reset=True)
        record.publish(state.challenger, _step_phase(state, state.paused))
        record.event("step_started", index=state.step, name=step.name)
        self._held_report.pop(family, None)
        return state.to(Phase.STEP, step_started=self.clock.now())

    def _report_held(self, state: RolloutState, waited_s: float, why: str) -> None:
        step = state.rollout().steps[state.step]
        next_s = self._held_report.get(state.family, step.bake_s + HELD_REPORT_S)
        if waited_s >= next_s:
            logger.warning(
                "%s: %s of v%s held %.0f s past its bake: %s",
                state.family, step.name, state.challenger, waited_s - step.bake_s, why,
            )  # fmt: skip
            next_s = waited_s + HELD_REPORT_S
        self._held_report[state.family] = next_s

    def _promoting(self, state: RolloutState, record: Record) -> RolloutState:
        # Registry first: if serving then fails, the next pass reconciles to the alias.
        family, challenger = state.family, state.challenger
        aliases = self.registry.aliases(family)
        if aliases.get(CHAMPION) != challenger:
            self.registry.promote(family, challenger)
        elif aliases.get(CHALLENGER) == challenger:
            self.registry.delete_alias(family, CHALLENGER)  # killed between the two
        self.mark_registry(family, None)
        if self.gateway.challengers.get(family) == challenger:
            self.gateway.stop_challenger(family, promote=True)
        elif self.gateway.versions.get(family) != challenger:
            self.gateway.set_version(family, challenger)  # serving restarted meanwhile
        record.publish(challenger, "promoted")
        record.finish(Decision.PROMOTED, state.reason)
        logger.info("%s: v%s promoted (%s)", family, challenger, state.reason)
        return state.done(Decision.PROMOTED, state.reason)

    def _withdrawing(self, state: RolloutState, record: Record) -> RolloutState:
        family, challenger = state.family, state.challenger
        # Traffic first, with no MLflow needed: a failing challenger leaves at once.
        if family in self.gateway.challengers or self.gateway.traffic(family) is not None:
            self.gateway.stop_challenger(family, promote=False)
        decision = state.decision or Decision.ROLLED_BACK
        if decision is Decision.ROLLED_BACK:
            # The alias goes before the state says done: a challenger alias left on a
            # version after its rollback is then an operator's new request.
            if self.registry.aliases(family).get(CHALLENGER) == challenger:
                self.registry.delete_alias(family, CHALLENGER)
            self.mark_registry(family, None)
            registry, reason = self.registry, state.reason
            record.write(
                lambda: registry.record_event(family, challenger, "rolled_back", {"reason": reason})
            )
            record.write(lambda: registry.set_version_tag(family, challenger, OUTCOME_TAG, reason))
            logger.warning("%s: v%s rolled back: %s", family, challenger, reason)
        else:
            logger.warning("%s: rollout of v%s interrupted: %s", family, challenger, state.reason)
        rolled_back = decision is Decision.ROLLED_BACK
        record.publish(challenger, "rolled back" if rolled_back else "interrupted")
        record.finish(decision, state.reason)
        return state.done(decision, state.reason)

    def _aliases(self, family: str) -> dict[str, str] | None:
        """The aliases, or None while MLflow cannot say (the step then holds)."""
        try:
            aliases = self.registry.aliases(family)
        except Exception as exc:
            if not registry_away(exc):
                raise
            self.mark_registry(family, _message(exc))
            return None
        self.mark_registry(family, None)
        return aliases


def _rolled_back(state: RolloutState, reason: str) -> RolloutState:
    return state.to(Phase.WITHDRAWING, decision=Decision.ROLLED_BACK, reason=reason)


def _superseded(state: RolloutState, aliases: Mapping[str, str]) -> bool:
    """Someone moved the aliases: a new challenger, or a champion set by hand."""
    return aliases.get(CHALLENGER) != state.challenger or aliases.get(CHAMPION) != state.champion


def registry_away(exc: BaseException) -> bool:
    """MLflow unreachable or failing: nobody's verdict, the same pass runs again later."""
    return isinstance(exc, (RegistryUnavailableError, MlflowException, requests.RequestException))


def _step_phase(state: RolloutState, paused: bool) -> str:
    name = state.rollout().steps[state.step].name
    return f"{name} (paused)" if paused else name


def _where(state: RolloutState) -> str:
    if state.phase is Phase.STEP:
        return f"step {state.step} ({state.rollout().steps[state.step].name})"
    return state.phase.value


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, GameserveError) else repr(exc)
