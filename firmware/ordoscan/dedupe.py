"""De-duplication: one read per appearance of a code, repeats flagged.

A code is "in view" while it keeps being seen with gaps shorter than
`same_code_timeout_s`; it gives one Read when it comes into view, however
long it is held there (presentation scanners call this the same-symbol
timeout). An ordonnance seen again within `repeat_window_s` of its last new
read is a repeat: feedback again, not sent again. Every other kind is read
once per appearance (for the refusal signal) and is never a repeat.

Time comes only from the timestamps given to `update()`, so behaviour is
exactly reproducible. What is remembered is forgotten as soon as it no longer
matters (identifiers are keys to health data), and memory is bounded.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from ordoscan.classifier import Classified, Kind
from ordoscan.errors import ConfigError

# Enough for any real counter; a flood of distinct codes evicts the codes
# seen longest ago, never those in view.
DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Read:
    """A code that came into view: new, or a repeat of a recent ordonnance."""

    item: Classified
    repeat: bool  # an ordonnance read again within repeat_window_s: feedback, not sent
    timestamp: float  # the frame's time (a timestamp that went backwards reads as the last one)


@dataclass(slots=True)
class _Seen:
    """What is remembered of one key: when it was last seen and last read as new."""

    last_seen: float
    last_new: float | None  # ordonnances only: time of the last non-repeat read


class Deduper:
    """Turns per-frame classified symbols into reads, driven by frame timestamps."""

    def __init__(
        self,
        same_code_timeout_s: float,
        repeat_window_s: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        # The config already checks these; a direct caller gets the same words.
        if not same_code_timeout_s > 0:
            raise ConfigError(f"scan.same_code_timeout_s = {same_code_timeout_s!r}: must be > 0")
        if not repeat_window_s >= 0:
            raise ConfigError(f"scan.repeat_window_s = {repeat_window_s!r}: must be >= 0")
        if max_entries < 1:
            raise ConfigError(f"dedupe max_entries = {max_entries!r}: must be >= 1")
        self.same_code_timeout_s = float(same_code_timeout_s)
        self.repeat_window_s = float(repeat_window_s)
        self.max_entries = max_entries
        # Ordered by last sighting, oldest first: eviction takes from the front.
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._now: float | None = None
        # A lower bound of the earliest time any entry can be forgotten: the
        # table is only scanned when that time has come.
        self._next_prune = math.inf

    def __len__(self) -> int:
        """How many codes are remembered (in view, or ordonnances within the window)."""
        return len(self._seen)

    def _forgettable(self, entry: _Seen, now: float) -> bool:
        """Out of view and, for an ordonnance, past its repeat window (same tests as update)."""
        if now - entry.last_seen < self.same_code_timeout_s:
            return False
        return entry.last_new is None or now - entry.last_new >= self.repeat_window_s

    def _expiry(self, entry: _Seen) -> float:
        gone = entry.last_seen + self.same_code_timeout_s
        if entry.last_new is None:
            return gone
        return max(gone, entry.last_new + self.repeat_window_s)

    def _clock(self, timestamp: float) -> float:
        """The time of this frame: never earlier than the previous one."""
        now = self._now
        if not math.isfinite(timestamp):
            return now if now is not None else 0.0
        if now is not None and timestamp < now:
            return now  # a clock going backwards: as if no time had passed
        return float(timestamp)

    def update(self, timestamp: float, items: list[Classified]) -> list[Read]:
        """Feed one analysed frame; returns the reads it produces (often none)."""
        now = self._clock(timestamp)
        self._now = now
        if now >= self._next_prune:
            self._prune(now)
        reads: list[Read] = []
        done: set[str] = set()
        for item in items:
            key = item.key
            if key in done:  # the same code twice in one frame is one sighting
                continue
            done.add(key)
            is_ordonnance = item.kind is Kind.ORDONNANCE
            entry = self._seen.get(key)
            if entry is not None and now - entry.last_seen < self.same_code_timeout_s:
                entry.last_seen = now  # still in view: no new read
                self._seen.move_to_end(key)
                continue
            repeat = (
                is_ordonnance
                and entry is not None
                and entry.last_new is not None
                and now - entry.last_new < self.repeat_window_s
            )
            if entry is None:
                entry = _Seen(last_seen=now, last_new=None)
                self._seen[key] = entry
            else:
                entry.last_seen = now
                self._seen.move_to_end(key)
            if is_ordonnance and not repeat:
                entry.last_new = now
            elif not is_ordonnance:
                entry.last_new = None
            self._next_prune = min(self._next_prune, self._expiry(entry))
            reads.append(Read(item=item, repeat=repeat, timestamp=now))
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return reads

    def _prune(self, now: float) -> None:
        """Forget keys out of view and past their repeat window."""
        next_prune = math.inf
        for key in list(self._seen):
            entry = self._seen[key]
            if self._forgettable(entry, now):
                del self._seen[key]
            else:
                next_prune = min(next_prune, self._expiry(entry))
        self._next_prune = next_prune
