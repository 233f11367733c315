"""Progress a person can watch: bars on a terminal, one line per step in a log file."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.training import EpochCallback

logger = logging.getLogger(__name__)


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        transient=False,
    )


@contextmanager
def training(label: str, epochs: int) -> Iterator[EpochCallback]:
    """An ``on_epoch`` for training ``label``: a bar on a terminal, a log line per epoch
    elsewhere (``gameserve up --detach`` writes to a file)."""
    if not sys.stderr.isatty():

        def log(epoch: int, loss: float) -> None:
            logger.info("%s: epoch %d of %d, loss %.4f", label, epoch, epochs, loss)

        yield log
        return
    with _bar() as bar:
        task = bar.add_task(label, total=epochs, detail="")

        def advance(epoch: int, loss: float) -> None:
            bar.update(task, completed=epoch, detail=f"loss {loss:.4f}")

        yield advance


@contextmanager
def steps(label: str, names: list[str]) -> Iterator[Progress | None]:
    """A bar over a rollout's phases on a terminal; None elsewhere (lines are printed)."""
    if not sys.stdout.isatty():
        yield None
        return
    with _bar() as bar:
        bar.add_task(label, total=len(names), detail="")
        yield bar
