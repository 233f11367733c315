"""Marks each test with its tier, taken from the folder it lives in."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "asgi", "ray", "mlflow", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
