"""Drive a load with wrk (C, event-driven), so the generator is not the bottleneck."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# wrk sends the same prepared request over and over; the body comes from a file
# so binary v2 bodies survive unchanged.
_SCRIPT = """
wrk.method = "POST"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*all")
f:close()
{headers}
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class Load:
    """One load point: a request and how hard to send it."""

    path: str
    body: bytes
    headers: dict[str, str]
    connections: int
    rows_per_request: int = 1


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx answers, socket errors and timeouts

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.bad == 0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    return found


def run(base_url: str, load: Load, duration_s: float, timeout_s: float = 5.0) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="gameserve-wrk-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(load.body)
        headers = "\n".join(
            f'wrk.headers["{name}"] = "{value}"' for name, value in load.headers.items()
        )
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT.format(body=body, headers=headers))
        completed = subprocess.run(
            [
                wrk_binary(),
                "-t1",
                f"-c{load.connections}",
                f"-d{duration_s:.0f}s",
                f"--timeout={timeout_s:.0f}s",
                "--latency",
                "-s",
                str(script),
                base_url + load.path,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration_s + 30,
        )
    return parse(completed.stdout)


def parse(output: str) -> WrkResult:
    def latency(percentile: str) -> float:
        match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    bad = int(non_2xx.group(1)) if non_2xx else 0
    if socket:
        bad += sum(int(n) for n in socket.groups())
    return WrkResult(
        requests_per_s=float(rps.group(1)) if rps else 0.0,
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(total.group(1)) if total else 0,
        bad=bad,
    )
