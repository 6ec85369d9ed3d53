"""The shared small parts: back-off, the clocks, the ISO formatter, safe text."""

from __future__ import annotations

import random
import sys
import threading

import pytest
from ordoscan.backoff import Backoff
from ordoscan.clock import SYSTEM_CLOCK, iso_ms
from ordoscan.devtools.clock import ManualClock
from ordoscan.privacy import printable


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_jittered_backoff_stays_between_first_and_a_doubling_ceiling() -> None:
    b = Backoff(1.0, 8.0, jitter=True, rng=random.Random(3))
    delays = [b.next() for _ in range(200)]
    assert all(1.0 <= d <= 8.0 for d in delays)
    assert delays[0] <= 2.0 and len({round(d, 6) for d in delays}) > 100


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(0, 1)


def test_iso_ms_is_utc_with_milliseconds() -> None:
    assert iso_ms(1764066667.4129) == "2025-11-25T10:31:07.412Z"


def test_manual_clock_wakes_waiters_when_advanced() -> None:
    clock = ManualClock()
    ev = threading.Event()
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(clock.wait(ev, 5.0)))
    t.start()
    clock.advance(4.9)
    assert t.is_alive()
    clock.advance(0.2)
    t.join(5)
    assert done == [False] and clock.waits == [5.0]
    assert SYSTEM_CLOCK.wait(ev, 0.0) is False


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("a\x1b[2Jb", "a\\e[2Jb"),
        ("x\nINFO forged", "x\\nINFO forged"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("c1\x9bz", "c1\\x9bz"),
        ("del\x7f", "del\\x7f"),
    ],
)
def test_printable_escapes_what_acts_on_a_terminal(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_cuts_long_text_and_says_how_much() -> None:
    assert printable("x" * 60_000, limit=10) == "x" * 10 + "…(+59990 chars)"


def test_log_lines_cannot_be_forged_or_flooded() -> None:
    import io
    import logging

    from ordoscan.log import setup_logging
    from ordoscan.privacy import LOG_LIMIT

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("info", stream=stream)
        log = logging.getLogger("ordoscan.camera")
        log.info("replay: %s", "a.png\nINFO ordoscan.app: scan …YGHZ delivered")
        log.warning("%s", "x" * 60_000)
        log.info("command %s", "\x1b]0;pwned\x07\u202e")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("replay: a.png\\nINFO ordoscan.app: scan …YGHZ delivered")
    assert len(lines[1]) < LOG_LIMIT + 100 and lines[1].endswith("…(+59000 chars)")
    assert lines[2].endswith("command \\e]0;pwned\\x07\\u202e")


def test_a_command_run_in_the_tests_sets_up_logging_on_their_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from ordoscan.cli import main as cli_main

    assert cli_main(["config", "schema", "--message"]) == 0
    assert '"$schema"' in capsys.readouterr().out
    # the daemon's logging set-up, on the stream capsys closes after this test
    assert any(getattr(h, "stream", None) is sys.stderr for h in logging.getLogger().handlers)


def test_no_later_test_logs_to_a_stream_an_earlier_one_closed() -> None:
    """(After the test above, in file order: conftest's _root_logging_restored.)"""
    import logging

    closed = [h for h in logging.getLogger().handlers
              if getattr(getattr(h, "stream", None), "closed", False)]
    assert closed == []


def test_json_line_escapes_what_would_act_on_a_terminal() -> None:
    import json

    from ordoscan.privacy import json_line

    doc = {"payload": "a\u202eb\x9bc\x1b[2J\u2028", "kind": "2d_doc"}
    line = json_line(doc)
    assert json.loads(line) == doc
    assert line.isprintable()
    assert all(ch not in line for ch in "\u202e\x9b\x1b\u2028")
