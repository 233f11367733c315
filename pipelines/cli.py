"""The ``gameserve`` command: the composition root of the platform."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from models import FAMILIES, trainable_family
from models.errors import GameserveError
from pipelines import key_commands, progress, stack_commands
from pipelines.admin_client import AdminClient
from pipelines.report import quiet_third_parties, table
from pipelines.settings import Settings
from serving.dataplane.game_time import PRIORITIES

if TYPE_CHECKING:
    from models.build import ModelBuild

# Commands import torch (train), MLflow (models) or Ray (up) only when they run
# them: `gameserve rollout pause` starts in well under a second.

logger = logging.getLogger("gameserve")


def _train(settings: Settings, args: argparse.Namespace) -> int:
    """Train, export and evaluate families locally, without the registry."""
    from models.build import build

    settings.exports_dir.mkdir(parents=True, exist_ok=True)
    builds: list[ModelBuild] = []
    trainable = sorted(name for name, family in FAMILIES.items() if family.trainable)
    for name in args.family or trainable:
        with progress.training(name, settings.train.epochs) as on_epoch:
            result = build(trainable_family(name), settings.train, on_epoch=on_epoch)
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


def _status(settings: Settings, args: argparse.Namespace) -> int:
    return stack_commands.status(settings, as_json=args.json)


def _down(settings: Settings, _: argparse.Namespace) -> int:
    return stack_commands.down(settings)


def _models(settings: Settings, args: argparse.Namespace) -> int:
    """List every version of every family with its aliases."""
    from pipelines.registry import connect_to_stack

    registry = connect_to_stack(settings)  # no tracking server: the CLI's error boundary says so
    versions = [v for name in sorted(FAMILIES) for v in registry.list_versions(name)]
    if args.json:
        listed = [
            {"family": v.family, "version": v.version, "aliases": v.aliases, "tags": v.tags}
            for v in versions
        ]
        print(json.dumps(listed, indent=2))
        return 0
    rows = [
        (v.family, v.version, ",".join(v.aliases), v.tags.get("gameserve.data_seed", ""))
        for v in versions
    ]
    print(table(("family", "version", "aliases", "seed"), rows))
    return 0


def _rollout(settings: Settings, args: argparse.Namespace) -> int:
    admin = AdminClient.for_stack(settings)
    if args.action == "start":
        if args.version is None:
            print("rollout start needs a VERSION")
            return 2
        print(admin.start(args.family, args.version))
    elif args.action == "status":
        from pipelines.rollout.commands import describe

        if args.watch:
            from pipelines.rollout.watch import watch_rollout

            return watch_rollout(admin, args.family, settings, args.watch_s)
        status = admin.status(args.family)
        print(json.dumps(status, indent=2) if args.json else describe(status))
    else:
        print(admin.command(args.family, args.action))
    return 0


def _build_config(settings: Settings, args: argparse.Namespace) -> int:
    """The Serve config (or RayService) of the registry's champions, or of --version flags."""
    from pipelines import deploy_config

    if args.ray_env:
        print(deploy_config.ray_start_env(settings))
        return 0
    versions: dict[str, str | None] = dict.fromkeys(sorted(FAMILIES))
    flagged = deploy_config.parse_versions(args.version, list(versions))
    if len(flagged) < len(versions):
        try:
            versions.update(deploy_config.registry_champions(settings, list(versions)))
        except GameserveError as exc:  # no registry here: the flags say which versions
            print(f"versions from --version only: {exc.message}", file=sys.stderr)
    versions.update(flagged)
    kuberay = deploy_config.KubeRaySettings(**({"image": args.image} if args.image else {}))
    serve = deploy_config.cluster_serve_config(settings, versions, kuberay)
    manifest = deploy_config.rayservice(serve, kuberay, deploy_config.ray_env(settings, kuberay))
    print(deploy_config.write_or_print(serve, manifest, args.kuberay, args.out, kuberay))
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    print(AdminClient.for_stack(settings).rollback(args.family))
    return 0


def _champion(settings: Settings, args: argparse.Namespace) -> int:
    print(AdminClient.for_stack(settings).set_champion(args.family, args.version))
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        print(key_commands.listing(settings))
        return 0
    if args.name is None:
        print(f"keys {args.action} needs a NAME")
        return 2
    if args.action == "create":
        print(
            key_commands.create(
                settings,
                args.name,
                args.scopes,
                args.expires_in_days,
                args.rate,
                args.burst,
                args.max_priority,
            )
        )
    elif args.action == "rotate":
        print(key_commands.rotate(settings, args.name))
    else:
        print(key_commands.revoke(settings, args.name))
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
        command = commands.add_parser(name, help=text)
        command.set_defaults(handler=handler)
        if name != "down":
            command.add_argument("--json", action="store_true", help="print JSON, for scripts")
    rollout = commands.add_parser("rollout", help="start, watch and steer canary rollouts")
    rollout.add_argument(
        "action", choices=("start", "status", "pause", "resume", "abort", "promote")
    )
    rollout.add_argument("family", choices=sorted(FAMILIES))
    rollout.add_argument("version", nargs="?", help="with start: the version to roll out")
    rollout.add_argument("--json", action="store_true", help="with status: print JSON")
    rollout.add_argument(
        "--watch", action="store_true", help="with status: follow the rollout until it ends"
    )
    rollout.add_argument(
        "--watch-s", type=float, default=3600.0, help="with --watch: give up after this long"
    )
    rollout.set_defaults(handler=_rollout)
    build = commands.add_parser(
        "build-config", help="print the Serve config (or the KubeRay RayService) to deploy"
    )
    build.add_argument("--kuberay", action="store_true", help="the RayService manifest")
    build.add_argument("--out", type=Path, help="write both into this folder")
    build.add_argument(
        "--version", action="append", default=[], metavar="FAMILY=VERSION",
        help="a champion version (default: the registry's, when it is reachable)",
    )  # fmt: skip
    build.add_argument("--image", help="the container image (gameserve installed)")
    build.add_argument(
        "--ray-env", action="store_true",
        help="the environment every `ray start` of a cluster needs (ray-cluster.yaml)",
    )  # fmt: skip
    build.set_defaults(handler=_build_config)
    rollback = commands.add_parser("rollback", help="make the previous champion serve again")
    rollback.add_argument("family", choices=sorted(FAMILIES))
    rollback.set_defaults(handler=_rollback)
    champion = commands.add_parser("champion", help="make a given version the champion")
    champion.add_argument("action", choices=("set",))
    champion.add_argument("family", choices=sorted(FAMILIES))
    champion.add_argument("version")
    champion.set_defaults(handler=_champion)
    keys = commands.add_parser("keys", help="create, list, rotate and revoke API keys")
    keys.add_argument("action", choices=("create", "list", "rotate", "revoke"))
    keys.add_argument("name", nargs="?", help="the key's name (all but list)")
    keys.add_argument("--scopes", default="infer", help="with create: infer,read,admin")
    keys.add_argument("--expires-in-days", type=float, help="with create: lifetime")
    keys.add_argument("--rate", type=float, help="with create: requests/s (default: settings)")
    keys.add_argument("--burst", type=int, help="with create: requests allowed at once")
    keys.add_argument(
        "--max-priority",
        choices=PRIORITIES,
        help="with create: the highest class X-Priority may ask for (default: each family's)",
    )
    keys.set_defaults(handler=_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings()
    except ValidationError as exc:  # a mistyped variable: which, and why; no traceback
        print(f"invalid_settings: {_settings_problems(exc)}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # MLflow's client retries through urllib3, which warns on every retry: while MLflow
    # is down that is a line a second; the controller and supervisor say it once.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    quiet_third_parties(settings.log_level)
    try:
        # Before the parser: its family choices include spec-file and installed families.
        settings = settings.with_families()
        args = _parser().parse_args(argv)
        code: int = args.handler(settings, args)
    except GameserveError as exc:  # the CLI's one error boundary
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # a third party's (Ray, MLflow, the OS): one line, not a trace
        logger.debug("the command failed", exc_info=True)
        print(
            f"internal_error: {type(exc).__name__}: {exc} "
            "(GAMESERVE_LOG_LEVEL=DEBUG shows the traceback)",
            file=sys.stderr,
        )
        return 1
    return code


def _settings_problems(error: ValidationError) -> str:
    """Each wrong setting as its dotted path (``train.epochs``: GAMESERVE_TRAIN__EPOCHS)
    and pydantic's reason."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )


if __name__ == "__main__":
    sys.exit(main())
