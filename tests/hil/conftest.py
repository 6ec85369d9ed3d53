"""The `rig` fixture (pytest --rig virtual|pi) and the table of scenario results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hil.rig import Rig
from tests.hil.scenarios import Row

_ROWS = pytest.StashKey[list[Row]]()
_SOAK = pytest.StashKey[list[str]]()
SOAK_TIMEOUT_MARGIN_S = 300.0  # start, drain and checks on top of the soak's own budget


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak gets a test timeout to match its budget (--soak-seconds) and how long it may
    take to do the work that budget asks for on a loaded machine (tests/hil/test_chaos.py)."""
    from tests.hil.test_chaos import DEFAULT_SECONDS, GIVE_UP

    seconds = config.getoption("--soak-seconds") or DEFAULT_SECONDS
    for item in items:
        if item.name == "test_chaos_soak":
            item.add_marker(pytest.mark.timeout(GIVE_UP * seconds + SOAK_TIMEOUT_MARGIN_S))


def make_rig(config: pytest.Config, workdir: Path) -> Rig:
    """The rig --rig asks for; off a Raspberry Pi, --rig pi skips with the reason."""
    if config.getoption("--rig") == "pi":
        from tests.hil.pi import PiRig, pi_unavailable

        why = pi_unavailable()
        if why:
            pytest.skip(f"--rig pi: {why}")
        return PiRig(workdir)
    from tests.hil.virtual import VirtualRig

    return VirtualRig(workdir)


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(request.config, tmp_path / "rig")
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def report_row(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    """Rows appended here are printed in the session's table."""
    rows = request.config.stash.setdefault(_ROWS, [])
    yield rows


@pytest.fixture
def soak_report(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines appended here are printed at the end of the session."""
    lines = request.config.stash.setdefault(_SOAK, [])
    yield lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    soak = config.stash.get(_SOAK, [])
    if soak:
        terminalreporter.section("chaos soak")
        for line in soak:
            terminalreporter.write_line(line)
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    head = ("scenario", "expected signals", "seen signals", "messages (exp / got)", "verdict")
    table = [head, *((r.scenario, r.expected, r.seen, r.messages, r.verdict) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    terminalreporter.section(f"hardware-in-loop scenarios ({config.getoption('--rig')} rig)")
    for i, row in enumerate(table):
        cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
        terminalreporter.write_line(" | ".join(cells).rstrip())
        if i == 0:
            terminalreporter.write_line("-+-".join("-" * w for w in widths))
