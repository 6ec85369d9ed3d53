"""Times to read, ranked; their quantiles, and how far a quantile moves with the sample.

A p95 over 120 presentations is their sixth slowest: another draw of 120 presentations
of the same kinds (a fresh held-out epoch) gives another sixth slowest. `interval` says how
far: the presentations drawn again with replacement (a bootstrap), each with all its runs,
the quantile taken on each draw, and the middle 90 % of those quantiles kept. The same
decoder measured 0.49 s and 0.61 s on two held-out epochs of 120 presentations: a target
met or missed by less than that interval is not told apart by one epoch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def ranked(times: Sequence[float | None], within: float) -> list[float]:
    """The times read within `within` seconds, sorted; never-read ones (None, or later) last,
    as beyond any time (math.inf)."""
    ok = sorted(t for t in times if t is not None and t <= within)
    return ok + [math.inf] * (len(times) - len(ok))


def quantile(ranked_times: Sequence[float], q: float) -> float:
    """The `q` quantile of sorted times (nearest rank; NaN for none)."""
    return ranked_times[round(q * (len(ranked_times) - 1))] if ranked_times else math.nan


def interval(times: Sequence[float | None], presentations: int, q: float, within: float,
             draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The middle 90 % of the `q` quantile over `draws` bootstrap draws of the presentations
    (see the module and bootstrap)."""
    qs = sorted(bootstrap(times, presentations, q, within, draws, seed))
    return qs[int(0.05 * draws)], qs[math.ceil(0.95 * draws) - 1]


def bootstrap(times: Sequence[float | None], presentations: int, q: float, within: float,
              draws: int, seed: int = 0) -> list[float]:
    """The `q` quantile of each of `draws` draws of the presentations with replacement.
    `times` holds runs one after the other, each `presentations` long, in the same order; a
    draw keeps each presentation's runs together (the runs of one presentation are not
    independent draws of the kind of presentation)."""
    if presentations < 1 or len(times) % presentations:
        raise ValueError(f"{len(times)} times are not whole runs of {presentations}"
                         " presentations")
    runs = len(times) // presentations
    each = [[times[r * presentations + i] for r in range(runs)] for i in range(presentations)]
    rng = random.Random(seed)
    return [quantile(ranked([t for _ in range(presentations)
                             for t in each[rng.randrange(presentations)]], within), q)
            for _ in range(draws)]
