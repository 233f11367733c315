"""The ``gameserve`` command: the composition root of the platform."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from models import FAMILIES, get_family
from models.build import ModelBuild, build
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
