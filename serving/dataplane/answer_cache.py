"""The answer a player got moments ago: a fallback where the model cannot be afforded.

When a difficulty or personalization request misses its deadline or is
turned away by admission, the model's own answer to the same player's same
question a few seconds earlier is a better stand-in than a designer's rule
(personalization's rule is not personalized at all). Each batch row has a key the family
declares (``GameRoute.row_keys``: a player id, with the offers asked about
for personalization); a request is answered from here only when every one of
its rows has an answer younger than the family's ``cache_ttl_s``, all from
one version, so an answer never mixes versions or players. Answers are kept
only from the model (never a fallback's), and the newest win.

Bounded by entry count (least recently stored go first) and by age: a
replica that sees a million players keeps at most ``max_entries`` rows.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class _Entry:
    version: str
    at: float
    row: dict[str, np.ndarray]


class AnswerCache:
    """Per family and row key, the model's last answer row and the version that gave it."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self, family: str, version: str, keys: Sequence[str], outputs: Mapping[str, np.ndarray]
    ) -> None:
        """Keep each row of a model answer under its key (rows in ``keys``' order)."""
        now = self._clock()
        for index, key in enumerate(keys):
            entry_key = (family, key)
            # Copies: a row view would keep the whole batch's arrays alive.
            row = {name: np.array(array[index]) for name, array in outputs.items()}
            self._entries[entry_key] = _Entry(version, now, row)
            self._entries.move_to_end(entry_key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(
        self, family: str, keys: Sequence[str], ttl_s: float
    ) -> tuple[str, dict[str, np.ndarray]] | None:
        """The version and outputs for every row of ``keys``, or None unless all are
        fresh and from one version."""
        if not keys:
            return None
        oldest = self._clock() - ttl_s
        rows = []
        for key in keys:
            entry = self._entries.get((family, key))
            if entry is None or entry.at < oldest:
                return None
            rows.append(entry)
        versions = {entry.version for entry in rows}
        if len(versions) != 1:
            return None
        names = rows[0].row.keys()
        outputs = {name: np.stack([entry.row[name] for entry in rows]) for name in names}
        return versions.pop(), outputs
