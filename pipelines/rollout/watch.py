"""``gameserve rollout status --watch``: a rollout followed phase by phase from a console."""

from __future__ import annotations

import time

from pipelines import progress
from pipelines.admin_client import AdminClient
from pipelines.settings import Settings

FINAL_PHASES = ("promoted", "rolled back", "interrupted")


def watch_rollout(
    admin: AdminClient, family: str, settings: Settings, limit_s: float, poll_s: float = 2.0
) -> int:
    """Follow ``family``'s rollout phase by phase until it ends (1: it was rolled back)."""
    names = ["preflight", *(s.name for s in settings.rollout.family(family).steps), "promoted"]
    deadline = time.monotonic() + limit_s
    last = None
    with progress.steps(f"{family} rollout", names) as bar:
        while time.monotonic() < deadline:
            state = admin.status(family)["rollout"]
            if state is None:
                print(f"{family}: no rollout has run")
                return 0
            phase = state.get("phase", "none")
            if phase != last:
                last = phase
                done = names.index(phase) if phase in names else 0
                if bar is None:
                    print(f"{family}: v{state.get('challenger', '-')} {phase}", flush=True)
                else:
                    bar.update(bar.task_ids[0], completed=done, detail=phase)
            if phase in FINAL_PHASES:
                return 0 if phase == "promoted" else 1
            time.sleep(poll_s)
    print(f"{family}: still {last} after {limit_s:.0f} s")
    return 1
