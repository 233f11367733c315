"""The ``gameserve`` command: the composition root of the platform."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from models import FAMILIES, get_family
from models.build import ModelBuild, build
from pipelines.local_stack import LocalStack, StackState
from pipelines.registry import connect
from pipelines.report import table
from pipelines.settings import Settings

logger = logging.getLogger("gameserve")


def _train(settings: Settings, args: argparse.Namespace) -> int:
    """Train, export and evaluate families locally, without the registry."""
    names = args.family or sorted(FAMILIES)
    settings.exports_dir.mkdir(parents=True, exist_ok=True)
    builds: list[ModelBuild] = []
    for name in names:
        result = build(get_family(name), settings.train)
        path = settings.exports_dir / f"{name}.onnx"
        path.write_bytes(result.onnx_model)
        (settings.exports_dir / f"{name}.metrics.json").write_text(
            json.dumps(result.metrics, indent=2, sort_keys=True)
        )
        builds.append(result)
        logger.info("%s: exported %s (sha256 %s)", name, path, result.sha256[:12])
    print(quality_table(builds))
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    """Start the local stack, print where everything is, run until interrupted."""
    stop = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    with LocalStack(settings) as stack:
        rows = [
            (
                c.resolved.family,
                c.resolved.version,
                "trained now" if c.trained_now else "existing",
                _headline(c.metrics),
            )
            for c in stack.champions
        ]
        print(table(("family", "champion", "origin", "quality"), rows))
        print(f"\nMLflow UI:  {stack.tracking_uri}")
        print(f"Data:       {settings.data_dir.resolve()}")
        if args.exit_after_start:
            return 0
        print("\ngameserve is up; press Ctrl-C to stop.", flush=True)
        stop.wait()
    return 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    """List every version of every family with its aliases."""
    state = StackState.read(settings)
    uri = settings.tracking.uri or (state.tracking_uri if state else None)
    if uri is None:
        print("no tracking server: run `gameserve up` or set GAMESERVE_TRACKING__URI")
        return 1
    registry = connect(uri, settings.tracking, settings.cache_dir)
    rows = [
        (v.family, v.version, ",".join(v.aliases), v.tags.get("gameserve.data_seed", ""))
        for name in sorted(FAMILIES)
        for v in registry.list_versions(name)
    ]
    print(table(("family", "version", "aliases", "seed"), rows))
    return 0


def _headline(metrics: dict[str, float]) -> str:
    keys = ("teacher_agreement", "quit_auc", "recall_at_10")
    return ", ".join(f"{k}={metrics[k]:.3f}" for k in keys if k in metrics)


def quality_table(builds: Sequence[ModelBuild]) -> str:
    rows = [
        (b.family.name, metric, value)
        for b in builds
        for metric, value in sorted(b.metrics.items())
    ]
    return table(("family", "metric", "value"), rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gameserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train, export and evaluate model families")
    train.add_argument("--family", action="append", choices=sorted(FAMILIES))
    train.set_defaults(handler=_train)
    up = commands.add_parser("up", help="start MLflow, bootstrap champions, serve until Ctrl-C")
    up.add_argument(
        "--exit-after-start", action="store_true", help="stop again once everything is up"
    )
    up.set_defaults(handler=_up)
    models = commands.add_parser("models", help="list model versions and their aliases")
    models.set_defaults(handler=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code: int = args.handler(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
