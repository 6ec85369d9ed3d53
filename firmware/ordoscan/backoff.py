"""Capped exponential back-off, the one used for camera reopens and broker reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Delays before successive retries; `reset()` after a success starts again.

    Without jitter: first, 2x first, 4x first, ... up to cap. With jitter, each
    delay is drawn between `first` and a ceiling that doubles up to `cap`, so a
    fleet restarted together never retries in lock-step.
    """

    def __init__(
        self, first: float, cap: float, *, jitter: bool = False, rng: random.Random | None = None
    ) -> None:
        if first <= 0 or cap < first:
            raise ValueError(f"back-off needs 0 < first <= cap, got first={first} cap={cap}")
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next retry."""
        n = self.attempt
        self.attempt += 1
        if not self.jitter:
            return min(self.cap, self.first * 2.0 ** min(n, 60))
        return backoff_delay(n, self.first, self.cap, self._rng)

    def reset(self) -> None:
        self.attempt = 0


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Jittered delay before retry number `attempt` (0 first): random between low and a
    ceiling that doubles each attempt up to high."""
    ceiling = min(high, low * 2.0 ** min(attempt + 1, 60))
    return rng.uniform(low, max(low, ceiling))
