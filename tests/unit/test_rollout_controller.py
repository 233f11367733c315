"""The rollout controller's loop with a fake clock, registry and gateway: every
transition, an operator's every command, MLflow away, and a kill between (and
inside) every pair of transitions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.errors import RegistryUnavailableError
from pipelines.registry import CHALLENGER, CHAMPION, PREVIOUS
from pipelines.rollout.controller import RolloutController
from pipelines.rollout.settings import FamilyRollout, Preflight, RolloutSettings, RolloutStep
from pipelines.rollout.state import Command, Decision, Phase, RolloutState, RolloutStore
from tests.unit.rollout_fakes import FakeClock, FakeGateway, FakeRegistry, Killed, window

FAMILY = "npc-behavior"
STEPS = [
    RolloutStep(name="shadow", weight=0.0, shadow=1.0, bake_s=10),
    RolloutStep(name="10%", weight=0.1, bake_s=10),
    RolloutStep(name="100%", weight=1.0, bake_s=10),
]


@dataclass
class World:
    """What outlives a controller: MLflow, the state folder, the clock, maybe serving."""

    registry: FakeRegistry
    gateway: FakeGateway
    store: RolloutStore
    clock: FakeClock

    def controller(self) -> RolloutController:
        settings = RolloutSettings(
            families={FAMILY: FamilyRollout(steps=STEPS, preflight=Preflight(enabled=False))}
        )
        return RolloutController(
            self.registry, self.gateway, settings, self.store, clock=self.clock
        )

    def state(self) -> RolloutState | None:
        return self.store.load(FAMILY)

    def restart_serving(self) -> None:
        """The stack restarted with it: champions deployed, no challenger, no window."""
        self.gateway = FakeGateway(FAMILY, self.registry.alias[CHAMPION])


@pytest.fixture
def world(tmp_path: Path) -> World:
    registry = FakeRegistry(FAMILY, "1")
    registry.alias[CHALLENGER] = "2"
    return fresh(registry, tmp_path / "rollouts")


def fresh(registry: FakeRegistry, folder: Path) -> World:
    return World(registry, FakeGateway(FAMILY, "1"), RolloutStore(folder), FakeClock())


def drive(controller: RolloutController, world: World, passes: int = 200) -> list[tuple[str, int]]:
    """Passes one second apart until the rollout is decided; the (phase, step) of each."""
    seen: list[tuple[str, int]] = []
    for _ in range(passes):
        if controller.reconciler.advance(FAMILY):
            state = world.state()
            assert state is not None
            seen.append((state.phase.value, state.step))
            if not state.active:
                return seen
        else:
            world.clock.t += 1.0
    raise AssertionError(f"not decided in {passes} passes: {world.state()}")


def test_a_good_challenger_passes_each_step_after_its_bake_and_is_promoted(world: World) -> None:
    controller = world.controller()
    seen = drive(controller, world)
    assert seen == [
        ("starting", 0), ("step", 0), ("step", 0), ("step", 1), ("step", 1), ("step", 2),
        ("step", 2), ("promoting", 2), ("done", 2),
    ]  # fmt: skip
    (result,) = controller.history
    assert (result.decision, result.reason) == (Decision.PROMOTED, "passed every step")
    assert world.registry.alias == {CHAMPION: "2", PREVIOUS: "1"}
    assert world.gateway.versions[FAMILY] == "2"
    assert world.gateway.challengers == {}
    assert [d for name, d in world.gateway.calls if name == "set_traffic"] == [0, 1, 2]
    run = world.registry.runs[result.run_id]
    assert run.steps == [(0, "shadow", "pass"), (1, "10%", "pass"), (2, "100%", "pass")]
    assert run.decision == ("promoted", "passed every step")
    assert run.published[-1] == "promoted"


def test_a_step_passes_only_after_its_bake(world: World) -> None:
    controller = world.controller()
    for _ in range(3):  # run, challenger, traffic of the first step
        assert controller.reconciler.advance(FAMILY)
    world.clock.t += 9.9
    assert not controller.reconciler.advance(FAMILY)
    world.clock.t += 0.1
    assert controller.reconciler.advance(FAMILY)
    assert world.state().step == 1  # type: ignore[union-attr]


def test_invalid_outputs_withdraw_the_challenger_first_and_roll_it_back(world: World) -> None:
    world.gateway.window = window(challenger_invalid=0.01)
    controller = world.controller()
    seen = drive(controller, world)
    assert seen[-2:] == [("withdrawing", 0), ("done", 0)]
    (result,) = controller.history
    assert result.decision is Decision.ROLLED_BACK
    assert result.reason.startswith("shadow: invalid outputs: 1.0% of 500 requests")
    assert world.registry.alias == {CHAMPION: "1"}
    assert world.gateway.versions[FAMILY] == "1"
    assert world.gateway.challengers == {}
    assert world.registry.version_tags["2"]["gameserve.rollout.outcome"] == result.reason
    # Its alias gone before the state said done: the same version is not retried ...
    assert not controller.reconciler.advance(FAMILY)
    # ... unless an operator starts it again, which is a new rollout with a new run.
    world.registry.alias[CHALLENGER] = "2"
    assert controller.reconciler.advance(FAMILY)
    assert world.state().run_id != result.run_id  # type: ignore[union-attr]


def _reference(tmp_path: Path, invalid: float) -> tuple[list[tuple[str, int]], int]:
    registry = FakeRegistry(FAMILY, "1")
    registry.alias[CHALLENGER] = "2"
    gateway = FakeGateway(FAMILY, "1")
    gateway.window = window(challenger_invalid=invalid)
    world = World(registry, gateway, RolloutStore(tmp_path), FakeClock())
    seen = drive(world.controller(), world)
    return seen, len(gateway.calls)


@pytest.mark.parametrize("serving_survives", [True, False], ids=["serving-survives", "restarted"])
@pytest.mark.parametrize("invalid", [0.0, 0.01], ids=["good", "poisoned"])
def test_killed_between_any_two_transitions_it_resumes_the_same_run_at_the_same_step(
    tmp_path: Path, serving_survives: bool, invalid: float
) -> None:
    reference, _ = _reference(tmp_path / "reference", invalid)
    expected = Decision.PROMOTED if invalid == 0.0 else Decision.ROLLED_BACK
    for kill_after in range(1, len(reference)):
        registry = FakeRegistry(FAMILY, "1")
        registry.alias[CHALLENGER] = "2"
        world = fresh(registry, tmp_path / f"k{kill_after}")
        world.gateway.window = window(challenger_invalid=invalid)
        first = world.controller()
        done = 0
        while done < kill_after:
            if first.reconciler.advance(FAMILY):
                done += 1
            else:
                world.clock.t += 1.0
        at_kill = world.state()
        assert at_kill is not None
        traffic_before = [d for n, d in world.gateway.calls if n == "set_traffic"]
        calls_before = len(world.gateway.calls)
        if not serving_survives:
            world.restart_serving()
            world.gateway.window = window(challenger_invalid=invalid)
        second = world.controller()  # a new process: nothing in memory
        drive(second, world)
        (result,) = second.history
        assert result.decision is expected, (kill_after, result)
        assert result.run_id == at_kill.run_id
        assert len(registry.runs) == 1
        after = world.gateway.calls[calls_before:] if serving_survives else world.gateway.calls
        traffic_after = [d for n, d in after if n == "set_traffic"]
        steps = traffic_before + traffic_after if serving_survives else traffic_after
        # No earlier step again: the resumed controller starts from the step it saved.
        assert steps == sorted(steps), (kill_after, steps)
        if traffic_after:
            assert traffic_after[0] >= at_kill.step
        if serving_survives:
            # The step kept its traffic and window: set once, never again.
            assert steps == sorted(set(steps)), (kill_after, steps)
        run = registry.runs[result.run_id]
        assert run.decision is not None
        assert run.decision[0] == expected.value
        assert sum(e["event"] == "resumed" for e in run.events) == 1


@pytest.mark.parametrize("kill_at", range(1, 6))
def test_killed_inside_a_transition_after_acting_it_finishes_the_same_rollout(
    tmp_path: Path, kill_at: int
) -> None:
    """Dies right after the gateway acted and before the next state was saved."""
    _, calls = _reference(tmp_path / "reference", 0.0)
    assert calls == 5  # start, three steps' traffic, stop: a kill after each
    registry = FakeRegistry(FAMILY, "1")
    registry.alias[CHALLENGER] = "2"
    world = fresh(registry, tmp_path / "w")
    world.gateway.kill_at = kill_at
    with pytest.raises(Killed):
        drive(world.controller(), world)
    world.gateway.kill_at = None
    second = world.controller()
    drive(second, world)
    assert [r.decision for r in second.history] == [Decision.PROMOTED]
    assert registry.alias == {CHAMPION: "2", PREVIOUS: "1"}
    assert len(registry.runs) == 1
    assert world.gateway.versions[FAMILY] == "2"
    assert world.gateway.challengers == {}


def test_restarted_serving_restarts_the_window_of_the_same_step(world: World) -> None:
    first = world.controller()
    for _ in range(5):  # ... to the second step, its traffic set
        first.reconciler.advance(FAMILY)
        world.clock.t += 10
    state = world.state()
    assert state is not None
    assert (state.phase, state.step) == (Phase.STEP, 1)
    assert state.step_started is not None
    world.restart_serving()
    second = world.controller()
    assert second.reconciler.advance(FAMILY)
    again = world.state()
    assert again is not None
    assert (again.step, again.run_id) == (1, state.run_id)
    assert again.step_started == world.clock.t  # a new window: the old one died with serving
    assert list(world.gateway.calls) == [("start_challenger", "2"), ("set_traffic", 1)]
    run = world.registry.runs[state.run_id]
    assert [e["event"] for e in run.events][-3:] == ["resumed", "step_restarted", "step_started"]


def test_pause_holds_a_passing_step_and_resume_releases_it(world: World) -> None:
    controller = world.controller()
    for _ in range(3):
        controller.reconciler.advance(FAMILY)
    controller.send(FAMILY, Command.PAUSE)
    assert controller.reconciler.advance(FAMILY)  # the pause, saved: one transition
    assert world.state().paused  # type: ignore[union-attr]
    world.clock.t += 100
    assert not controller.reconciler.advance(FAMILY)
    assert world.state().step == 0  # type: ignore[union-attr]
    assert world.registry.runs["run-1"].published[-1] == "shadow (paused)"
    controller.send(FAMILY, Command.RESUME)
    assert controller.reconciler.advance(FAMILY)
    assert controller.reconciler.advance(FAMILY)
    assert world.state().step == 1  # type: ignore[union-attr]


def test_a_paused_step_still_fails_on_safety(world: World) -> None:
    controller = world.controller()
    for _ in range(3):
        controller.reconciler.advance(FAMILY)
    controller.send(FAMILY, Command.PAUSE)
    controller.reconciler.advance(FAMILY)
    world.gateway.window = window(challenger_invalid=0.5)
    assert controller.reconciler.advance(FAMILY)
    assert world.state().phase is Phase.WITHDRAWING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("command", "decision", "reason"),
    [
        (Command.ABORT, Decision.ROLLED_BACK, "aborted by an operator"),
        (Command.PROMOTE, Decision.PROMOTED, "promoted by an operator"),
    ],
)
def test_abort_and_promote_end_a_step_on_the_next_pass(
    world: World, command: Command, decision: Decision, reason: str
) -> None:
    controller = world.controller()
    for _ in range(3):
        controller.reconciler.advance(FAMILY)
    controller.send(FAMILY, command)
    drive(controller, world)
    (result,) = controller.history
    assert (result.decision, result.reason) == (decision, reason)
    assert world.registry.runs[result.run_id].steps == [(0, "shadow", command.value)]


def test_abort_before_traffic_never_starts_the_challenger(world: World) -> None:
    controller = world.controller()
    controller.send(FAMILY, Command.ABORT)
    assert controller.reconciler.advance(FAMILY)  # the run; the command waits for it
    drive(controller, world)
    assert controller.history[0].reason == "aborted by an operator before traffic"
    assert [name for name, _ in world.gateway.calls] == []


def test_a_command_with_no_rollout_is_dropped_and_said(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    del world.registry.alias[CHALLENGER]
    controller = world.controller()
    controller.send(FAMILY, Command.PAUSE)
    with caplog.at_level(logging.WARNING):
        assert not controller.reconciler.advance(FAMILY)
    assert "pause ignored: no rollout is running" in caplog.text
    world.registry.alias[CHALLENGER] = "2"
    drive(controller, world)
    assert controller.history[0].decision is Decision.PROMOTED  # the pause did not linger


def test_mlflow_away_holds_a_baked_step_says_so_once_and_resumes(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    controller = world.controller()
    for _ in range(3):
        controller.reconciler.advance(FAMILY)
    world.registry.down = True
    with caplog.at_level(logging.INFO, logger="pipelines.rollout.controller"):
        for _ in range(20):
            world.clock.t += 1
            assert not controller.reconciler.advance(FAMILY)
        assert world.state().step == 0  # type: ignore[union-attr]
        world.registry.down = False
        drive(controller, world)
    lines = caplog.text.splitlines()
    assert sum("MLflow unreachable" in line for line in lines) == 1, lines
    assert sum("MLflow is back" in line for line in lines) == 1, lines
    assert controller.history[0].decision is Decision.PROMOTED


def test_mlflow_away_does_not_keep_a_failing_challenger_on_the_air(world: World) -> None:
    controller = world.controller()
    for _ in range(3):
        controller.reconciler.advance(FAMILY)
    world.registry.down = True
    world.gateway.window = window(challenger_invalid=0.2)
    assert controller.reconciler.advance(FAMILY)  # the failure, saved
    with pytest.raises(RegistryUnavailableError):  # the loop says so once and tries again
        controller.reconciler.advance(FAMILY)
    assert world.gateway.challengers == {}  # withdrawn, MLflow or not
    assert world.state().phase is Phase.WITHDRAWING  # type: ignore[union-attr]
    world.registry.down = False
    drive(controller, world)
    assert world.registry.alias == {CHAMPION: "1"}
    assert controller.history[0].decision is Decision.ROLLED_BACK


def test_aliases_moved_by_hand_interrupt_the_rollout_and_the_new_one_starts(
    world: World,
) -> None:
    controller = world.controller()
    for _ in range(3):
        controller.reconciler.advance(FAMILY)
    world.registry.alias[CHALLENGER] = "3"
    drive(controller, world)
    (interrupted,) = controller.history
    assert interrupted.decision is Decision.INTERRUPTED
    assert "aliases moved" in interrupted.reason
    assert world.gateway.challengers == {}
    assert world.registry.alias[CHALLENGER] == "3"  # not the interrupted rollout's to delete
    assert controller.reconciler.advance(FAMILY)
    state = world.state()
    assert state is not None
    assert state.challenger == "3"
    assert state.run_id != interrupted.run_id


def test_the_champion_alias_is_served_when_no_rollout_runs(world: World) -> None:
    del world.registry.alias[CHALLENGER]
    world.registry.alias[CHAMPION] = "5"
    controller = world.controller()
    assert not controller.reconciler.advance(FAMILY)
    assert world.gateway.versions[FAMILY] == "5"


def test_an_unreadable_state_file_is_kept_aside(world: World) -> None:
    path = world.store.path(FAMILY)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert world.store.load(FAMILY) is None
    assert path.with_suffix(".unreadable").read_text() == "{not json"


def test_the_state_round_trips_with_its_enums(world: World) -> None:
    controller = world.controller()
    drive(controller, world)
    state = world.state()
    assert state is not None
    assert RolloutState.from_json(state.to_json()) == state
    assert state.decision is Decision.PROMOTED
    assert state.transitions == 8
