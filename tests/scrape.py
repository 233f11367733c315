"""Prometheus' side of the metrics endpoint: scrape it over HTTP, in the background."""

from __future__ import annotations

import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str, headers: dict[str, str]) -> list[Sample]:
    response = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    response.raise_for_status()
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def values(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.name == name and labels.items() <= s.labels.items()]


class Scraper:
    """Scrapes every ``interval_s`` until stopped (or ``max_s``), keeping each scrape."""

    def __init__(
        self, url: str, headers: dict[str, str], interval_s: float = 0.5, max_s: float = 300.0
    ) -> None:
        self.url, self.headers, self.interval_s, self.max_s = url, headers, interval_s, max_s
        self.scrapes: list[list[Sample]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.scrapes.append(scrape(self.url, self.headers))
            except (requests.RequestException, ValueError) as exc:
                self.failures.append(repr(exc))
            self._stop.wait(self.interval_s)

    def seen(self, name: str, **labels: str) -> list[Sample]:
        """Every sample of ``name`` with ``labels`` in any scrape."""
        return [s for scrape in self.scrapes for s in values(scrape, name, **labels)]

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
