"""One family's loaded version, swapped in place without dropping a request.

Shared by the two places a model runs: a family deployment's replica and the
ingress replica (for families served in-process, see ``serving/dataplane/colocated.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os

from models.errors import GameserveError, ModelNotReadyError
from models.family import AnyFamily
from models.runtime import OnnxModel, open_verified
from serving.dataplane.model_source import ModelSource

logger = logging.getLogger(__name__)


class ModelSlot:
    """Holds (session, version); requests read both at once, so a swap never mixes them."""

    def __init__(self, family: AnyFamily, source: ModelSource, intra_op_threads: int = 1) -> None:
        self.family = family
        self._source = source
        self._threads = intra_op_threads
        self._loaded: tuple[OnnxModel, str] | None = None

    @property
    def version(self) -> str | None:
        return self._loaded[1] if self._loaded else None

    @property
    def device(self) -> str:
        return self._loaded[0].device if self._loaded else "none"

    def describe(self) -> dict[str, object]:
        """Process, version, device and providers: the head of every replica's stats."""
        model = self._loaded[0] if self._loaded else None
        return {
            "pid": os.getpid(),
            "version": self.version,
            "device": self.device,
            "providers": model.providers if model else [],
        }

    def current(self) -> tuple[OnnxModel, str]:
        loaded = self._loaded
        if loaded is None:
            raise ModelNotReadyError(f"model {self.family.name!r} has no version loaded yet")
        return loaded

    async def load(self, version: str | None) -> None:
        """Serve ``version`` from now on; ``None`` unloads.

        A version that fails to load is refused while an older one keeps
        serving: the error is logged, not raised, so a bad push cannot take a
        running replica down. With nothing loaded yet the error propagates.
        """
        if version is None:
            self._loaded = None
            return
        if version == self.version:
            return
        try:
            # Off the event loop: the replica keeps answering while it loads.
            model = await asyncio.to_thread(self._open, version)
        except GameserveError as exc:
            if self._loaded is None:
                raise
            logger.error(
                "%s: keeping v%s, v%s failed to load: %s",
                self.family.name,
                self.version,
                version,
                exc.message,
            )
            return
        self._loaded = (model, version)
        logger.info("%s: now serving v%s on %s", self.family.name, version, model.device)

    def _open(self, version: str) -> OnnxModel:
        path = self._source.fetch(self.family.name, version)
        return open_verified(
            path,
            self.family.contract,
            self.family.example_inputs(rows=2),
            label=f"{self.family.name} v{version}",
            intra_op_threads=self._threads,
        )
