"""``gameserve up``, ``status`` and ``down``: the local stack's life cycle."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import requests

from models import get_family
from pipelines.key_commands import key_file, stored_admin_key
from pipelines.leftovers import running, stop_leftovers
from pipelines.local_ray import LocalRay, forget
from pipelines.stack_state import StackState

if TYPE_CHECKING:
    from pipelines.local_stack import LocalStack
from pipelines.report import quiet_third_parties, table
from pipelines.settings import Settings
from pipelines.tracking_server import is_healthy

logger = logging.getLogger("gameserve")


def up(settings: Settings, *, exit_after_start: bool) -> int:
    """Start the stack, print where everything is, run until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    started = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        if not started.is_set():
            # Mid-start: unwind what is up so far, the tracking server included.
            raise SystemExit(128 + signum)
        stop.set()

    def handle_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)

    handle_signals()
    from pipelines.local_stack import LocalStack  # Ray, MLflow: only the command that runs them

    quiet_third_parties(settings.log_level)  # again: MLflow set its own level on import

    with LocalStack(settings) as stack:
        # ray.init installs its own SIGTERM handler, which exits without cleanup.
        handle_signals()
        started.set()
        assert stack.gateway is not None
        rows = [
            (
                c.resolved.family,
                c.resolved.version,
                "trained now" if c.trained_now else "existing",
                _headline(c.resolved.family, c.metrics),
            )
            for c in stack.champions
        ]
        print(table(("family", "champion", "origin", "quality"), rows))
        print(f"\nAPI:            {stack.gateway.url}  (OpenAPI: {stack.gateway.url}/docs)")
        if stack.gateway.grpc_address:
            print(f"gRPC (OIP v2):  {stack.gateway.grpc_address}  (tritonclient.grpc; a key)")
        print(f"Metrics:        {stack.gateway.url}/metrics  (Prometheus; a read key)")
        print(f"Ray dashboard:  {stack.dashboard_url}")
        print(f"MLflow UI:      {stack.tracking_uri}")
        if stack.admin is not None:
            print(f"Admin API:      {stack.admin.url}/v1/admin  (admin key; `gameserve rollout`)")
        print(f"Data:           {settings.data_dir.resolve()}")
        _print_keys(settings, stack)
        if exit_after_start:
            return 0
        print("\ngameserve is up; press Ctrl-C to stop.", flush=True)
        stop.wait()
    print("gameserve stopped.")
    return 0


def _print_keys(settings: Settings, stack: LocalStack) -> None:
    if settings.serving.auth.mode == "off":
        print("API keys:       OFF (serving.auth.mode=off; loopback only)")
    elif stack.new_admin_key is not None:
        print(f"API key:        an admin key was created in {stack.new_admin_key} (owner-only);")
        print("                send it as 'Authorization: Bearer <key>'; `gameserve keys` adds")
    else:
        print(f"API keys:       {key_file(settings)}  (`gameserve keys list`)")


def up_detached(settings: Settings, timeout_s: float = 600.0) -> int:
    """Start ``gameserve up`` in the background and return once it serves."""
    state = StackState.read(settings)
    if state is not None and running(state.pid):
        print("a stack is already running here; `gameserve status` shows it")
        return 1
    if state is not None:  # left by a stack that was killed: nothing of it runs
        logger.warning("removing the state file of stopped stack pid %s", state.pid)
        StackState.path(settings).unlink(missing_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "stack.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "up"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"gameserve up exited with code {process.returncode}; see {log_path}")
            print(_tail(log_path))  # the reason, where the person (or CI) is looking
            return 1
        if StackState.read(settings) is not None:
            return status(settings)
        time.sleep(0.5)
    print(f"gameserve up not ready after {timeout_s:.0f}s; see {log_path}")
    print(_tail(log_path))
    return 1


def _tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log, indented under the message that names it."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"  (cannot read it: {error})"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def status(settings: Settings, as_json: bool = False) -> int:
    """What runs: processes, endpoints, and each family's serving version."""
    report = status_report(settings)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report)
    return 0 if report["running"] and report.get("models") is not None else 1


def status_report(settings: Settings) -> dict[str, Any]:
    """``gameserve status`` as data: ``running`` false, or the addresses and the models."""
    state = StackState.read(settings)
    if state is None or not running(state.pid):
        left = LocalRay.recorded(settings.data_dir)
        return {
            "running": False,
            "stale_state": state is not None,
            # The stack process died; the Ray it started serves on, without a controller.
            "serving_without_stack": left is not None and left.alive(),
            "api_url": state.api_url if state else None,
        }
    report: dict[str, Any] = {
        "running": True,
        "pid": state.pid,
        "api_url": state.api_url,
        "grpc_address": state.grpc_address or None,
        "metrics_url": f"{state.api_url}/metrics",
        "dashboard_url": state.dashboard_url,
        "tracking_uri": state.tracking_uri,
        "mlflow_healthy": is_healthy(state.tracking_uri),
        "admin_url": f"{state.admin_url}/v1/admin",
        "models": None,
    }
    try:
        key = stored_admin_key(settings)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answer = requests.get(f"{state.api_url}/v1/models", headers=headers, timeout=10)
        report["models"] = answer.json()["models"]
        scraped = requests.get(f"{state.api_url}/metrics", headers=headers, timeout=10)
        report["forecast"] = _forecast(scraped.text) if scraped.ok else None
        report["capacity_exhausted"] = capacity_exhausted(scraped.text) if scraped.ok else None
    except (requests.RequestException, ValueError, KeyError) as exc:
        report["api_error"] = str(exc)
    return report


def _forecast(metrics: str) -> dict[str, Any] | None:
    """The ingress's demand forecast, from the stack's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, Any] = {}
    floors: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            ingress = sample.labels.get("deployment") == "ingress"
            if sample.name == "gameserve_forecast_requests_per_second" and ingress:
                found.update(peak_requests_per_s=sample.value, method=sample.labels["method"])
            elif sample.name == "gameserve_forecast_replicas":
                floors[sample.labels["deployment"]] = int(sample.value)
    if "ingress" in floors:
        found["ingress_floor"] = floors.pop("ingress")
    if floors:
        found["family_floors"] = floors
    return found or None


def capacity_exhausted(metrics: str) -> dict[str, dict[str, int]]:
    """The deployments whose cluster is full, from the stack's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    full: set[str] = set()
    short: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "gameserve_capacity_exhausted" and sample.value:
                full.add(sample.labels["deployment"])
            elif sample.name == "gameserve_capacity_short_replicas":
                short[sample.labels["deployment"]] = int(sample.value)
    return {name: {"short_replicas": short.get(name, 0)} for name in sorted(full)}


def _print_status(report: dict[str, Any]) -> None:
    if not report["running"]:
        print(
            "gameserve is not running here"
            + (" (stale state file)" if report["stale_state"] else "")
        )
        if report.get("serving_without_stack"):
            print(
                f"Serving continues at {report['api_url']} without its stack process (no "
                "rollouts, no admin API): `gameserve up` reattaches, `gameserve down` stops it"
            )
        return
    print(f"gameserve is up (pid {report['pid']})")
    print(f"API:            {report['api_url']}")
    if report["grpc_address"]:
        print(f"gRPC (OIP v2):  {report['grpc_address']}")
    print(f"Metrics:        {report['metrics_url']}")
    print(f"Ray dashboard:  {report['dashboard_url']}")
    mlflow_health = "healthy" if report["mlflow_healthy"] else "NOT RESPONDING"
    print(f"MLflow UI:      {report['tracking_uri']}  ({mlflow_health})")
    print(f"Admin API:      {report['admin_url']}")
    models = report["models"]
    if models is None:
        print(f"API not answering: {report['api_error']}")
        return
    rows = [
        (
            m["name"], m["version"], m["replicas"], m["device"], m["ready"], m["healthy"],
            f"{m['deadline_ms']:g} ms", m["priority"],
            sum(m["game_time"]["fallbacks"].values()), sum(m["game_time"]["shed"].values()),
        )
        for m in models
    ]  # fmt: skip
    columns = ("family", "version", "replicas", "device", "ready", "healthy", "deadline",
               "priority", "fallbacks", "shed")  # fmt: skip
    print(table(columns, rows))
    for model in models:
        if model["problem"]:
            print(f"{model['name']}: {model['problem']}")
    forecast = report.get("forecast") or {}
    if "ingress_floor" in forecast:
        print(
            f"Forecast:       peak {forecast['peak_requests_per_s']:,.0f} req/s ahead "
            f"({forecast['method']}): ingress floor {forecast['ingress_floor']} replicas"
        )
    for deployment, floor in forecast.get("family_floors", {}).items():
        print(f"Forecast:       {deployment} floor {floor} replicas")
    for deployment, full in (report.get("capacity_exhausted") or {}).items():
        print(
            f"Capacity exhausted: {deployment} wants {full['short_replicas']} more replicas "
            "than the cluster holds; the edge sheds and fallbacks answer the rest"
        )


def down(settings: Settings, timeout_s: float = 120.0) -> int:
    """Stop a stack started in the background, and wait until it is gone."""
    state = StackState.read(settings)
    if state is None or not running(state.pid):
        left = LocalRay.recorded(settings.data_dir)
        StackState.path(settings).unlink(missing_ok=True)
        if left is None or not left.processes():
            print("gameserve is not running here")
            return 0
        # The stack process died and its Ray serves on: stop that, and its HAProxy.
        stopped = left.stop()
        forget(settings.data_dir)
        stop_leftovers(settings.data_dir)
        print(f"stopped the serving a dead stack left running ({stopped} Ray processes)")
        print("gameserve stopped.")
        return 0
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running(state.pid):
            print("gameserve stopped.")
            return 0
        time.sleep(0.5)
    print(f"pid {state.pid} still running after {timeout_s:.0f}s")
    return 1


def _headline(family: str, metrics: dict[str, float]) -> str:
    key = get_family(family).headline_metric
    return f"{key}={metrics[key]:.3f}" if key in metrics else ""
