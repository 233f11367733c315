"""What every scenario of the cluster tier needs: no Ray of the session's left running."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_shared_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """AutoscalingCluster runs `ray stop --force`: the session's Ray goes first.

    And no call left running in this process (a thread of a failed test) may start
    or join a Ray now: connected to the scenario's cluster when it is stopped, this
    process would exit without a word a minute later, taking the test report along.
    """
    import ray
    from ray import serve
    from ray._private import auto_init_hook

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
    monkeypatch.setattr(auto_init_hook, "enable_auto_connect", False)
