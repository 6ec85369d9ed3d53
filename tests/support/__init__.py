"""What the tests share: brokers, doubles of the hardware, helper processes."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
# where the slow suites keep what they build or render once (images, frames, counts)
TEST_CACHE = Path(os.environ.get("ORDOSCAN_TEST_CACHE", "/var/cache/ordoscan-test"))


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python that must run this checkout: its firmware first on
    the path (the environment's ordoscan, installed editable, may be another checkout's, as
    from a git worktree sharing a venv), then its root (for tests.*); `extra` on top."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "firmware"), str(ROOT))),
            **extra}
