"""The one polling helper of the tests: it raises on timeout, so a timeout is never ignored."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition the test waited for never came."""


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", every: float = 0.02
) -> T:
    """Poll `predicate` until it returns something true, and return that; raise WaitTimeout
    naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
