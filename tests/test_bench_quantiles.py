"""The presentations bench's quantiles (tests/bench/quantiles.py): never-read times rank
last, and the p95's interval over other draws of the presentations."""

from __future__ import annotations

import math

import pytest

from tests.bench import quantiles


def test_never_read_and_late_times_rank_last_as_infinite() -> None:
    r = quantiles.ranked([0.4, None, 0.2, 3.5, 0.3], within=3.0)
    assert r == [0.2, 0.3, 0.4, math.inf, math.inf]
    assert quantiles.quantile(r, 0.5) == 0.4
    assert math.isnan(quantiles.quantile([], 0.95))


def test_equal_times_give_no_spread() -> None:
    assert quantiles.interval([0.3] * 40, 40, 0.95, 3.0) == (0.3, 0.3)


def test_a_few_slow_presentations_spread_the_p95_and_it_narrows_with_more() -> None:
    # 5 % of the presentations slow: the p95 sits on the edge of that tail, so other draws
    # put it on either side of it
    times = [0.2 + 0.001 * i for i in range(114)] + [1.5] * 6
    lo, hi = quantiles.interval(times, 120, 0.95, 3.0)
    assert lo < 0.5 < 1.5 == hi
    assert lo <= quantiles.quantile(quantiles.ranked(times, 3.0), 0.95) <= hi
    # the same mix, ten times the presentations: the interval holds the point and narrows
    lo10, hi10 = quantiles.interval(times * 10, 1200, 0.95, 3.0)
    assert lo <= lo10 <= hi10 <= hi and hi10 - lo10 < hi - lo


def test_a_presentations_runs_are_drawn_together() -> None:
    # two runs of four presentations, the second slow in both (2.0 s, then 2.2 s): a draw
    # that takes it takes both its runs, so the top of a draw is 2.2 s or 0.1 s, never the
    # first run's 2.0 s alone (as drawing the eight times one by one would give)
    times = [0.1, 2.0, 0.1, 0.1, 0.1, 2.2, 0.1, 0.1]
    tops = quantiles.bootstrap(times, 4, 1.0, 3.0, draws=500)
    assert set(tops) == {0.1, 2.2}
    assert quantiles.interval(times, 4, 1.0, 3.0, draws=500) == (0.1, 2.2)
    with pytest.raises(ValueError, match="not whole runs"):
        quantiles.interval(times[:7], 4, 0.95, 3.0)
