"""The ``gameserve`` command: the composition root of the platform."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from models import FAMILIES, get_family
from models.build import ModelBuild, build
from pipelines import stack_commands
from pipelines.local_stack import StackState
from pipelines.registry import ModelRegistry, connect
from pipelines.report import table
from pipelines.rollout import commands as rollout_commands
from pipelines.settings import Settings

logger = logging.getLogger("gameserve")


def _train(settings: Settings, args: argparse.Namespace) -> int:
    """Train, export and evaluate families locally, without the registry."""
    settings.exports_dir.mkdir(parents=True, exist_ok=True)
    builds: list[ModelBuild] = []
    for name in args.family or sorted(FAMILIES):
        result = build(get_family(name), settings.train)
        path = settings.exports_dir / f"{name}.onnx"
        path.write_bytes(result.onnx_model)
        (settings.exports_dir / f"{name}.metrics.json").write_text(
            json.dumps(result.metrics, indent=2, sort_keys=True)
        )
        builds.append(result)
        logger.info("%s: exported %s (sha256 %s)", name, path, result.sha256[:12])
    rows = [(b.family.name, k, v) for b in builds for k, v in sorted(b.metrics.items())]
    print(table(("family", "metric", "value"), rows))
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    if args.detach:
        return stack_commands.up_detached(settings)
    return stack_commands.up(settings, exit_after_start=args.exit_after_start)


def _status(settings: Settings, _: argparse.Namespace) -> int:
    return stack_commands.status(settings)


def _down(settings: Settings, _: argparse.Namespace) -> int:
    return stack_commands.down(settings)


def _models(settings: Settings, _: argparse.Namespace) -> int:
    """List every version of every family with its aliases."""
    registry = _registry(settings)
    if registry is None:
        return 1
    rows = [
        (v.family, v.version, ",".join(v.aliases), v.tags.get("gameserve.data_seed", ""))
        for name in sorted(FAMILIES)
        for v in registry.list_versions(name)
    ]
    print(table(("family", "version", "aliases", "seed"), rows))
    return 0


def _registry(settings: Settings) -> ModelRegistry | None:
    state = StackState.read(settings)
    uri = settings.tracking.uri or (state.tracking_uri if state else None)
    if uri is None:
        print("no tracking server: run `gameserve up` or set GAMESERVE_TRACKING__URI")
        return None
    return connect(uri, settings.tracking, settings.cache_dir)


def _rollout(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings)
    if registry is None:
        return 1
    if args.action == "start":
        if args.version is None:
            print("rollout start needs a VERSION")
            return 2
        print(rollout_commands.start(registry, args.family, args.version))
    elif args.action == "status":
        print(rollout_commands.status(registry, args.family))
    else:
        print(rollout_commands.command(registry, args.family, args.action))
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings)
    if registry is None:
        return 1
    print(rollout_commands.rollback(registry, args.family))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gameserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train, export and evaluate model families")
    train.add_argument("--family", action="append", choices=sorted(FAMILIES))
    train.set_defaults(handler=_train)
    up = commands.add_parser("up", help="start the local stack and serve until Ctrl-C")
    mode = up.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run in the background")
    mode.add_argument(
        "--exit-after-start", action="store_true", help="stop again once everything is up"
    )
    up.set_defaults(handler=_up)
    for name, handler, text in (
        ("status", _status, "show what the local stack runs"),
        ("down", _down, "stop a stack started in the background"),
        ("models", _models, "list model versions and their aliases"),
    ):
        commands.add_parser(name, help=text).set_defaults(handler=handler)
    rollout = commands.add_parser("rollout", help="start, watch and steer canary rollouts")
    rollout.add_argument(
        "action", choices=("start", "status", "pause", "resume", "abort", "promote")
    )
    rollout.add_argument("family", choices=sorted(FAMILIES))
    rollout.add_argument("version", nargs="?", help="with start: the version to roll out")
    rollout.set_defaults(handler=_rollout)
    rollback = commands.add_parser("rollback", help="make the previous champion serve again")
    rollback.add_argument("family", choices=sorted(FAMILIES))
    rollback.set_defaults(handler=_rollback)
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
