"""Benchmarks run only when asked for: `./dev bench` (pytest tests/bench -m bench -s)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("markexpr", default="") or ""
    if "bench" in markexpr and "not bench" not in markexpr:
        return
    skip = pytest.mark.skip(
        reason="benchmark: run it with ./dev bench (pytest tests/bench -m bench -s)"
    )
    for item in items:
        if item.get_closest_marker("bench") is not None:
            item.add_marker(skip)
