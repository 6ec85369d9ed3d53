"""Shared fixtures: a real mosquitto per test, the ZXing corpus, mock GPIO."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import MOSQUITTO, Broker

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpora" / "zxing-blackbox"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--rig", default="virtual", choices=["virtual", "pi"],
                     help="hardware-in-loop rig: virtual (default) or pi (a real Raspberry Pi rig)")
    parser.addoption("--soak-seconds", type=float, default=None,
                     help="chaos soak time budget in seconds (default: a short CI budget)")
    parser.addoption("--soak-seed", type=int, default=None, help="chaos soak seed")


@pytest.fixture
def corpus() -> Path:
    """ZXing's black-box images, used in place from ../shared (never copied)."""
    if not CORPUS.is_dir():
        pytest.skip(
            f"ZXing black-box corpus not found at {CORPUS} (it ships beside the repo, not in it)"
        )
    return CORPUS


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plaintext mosquitto on a free loopback port, anonymous, stopped after the test."""
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: run the README set-up (./dev test installs it)")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture(autouse=True)
def _no_relay_left_behind() -> Iterator[None]:
    """Kills a relay child process that a failed test left running (it would hold its
    outbox lock and its broker connection into the next tests)."""
    yield
    relay_proc = sys.modules.get("tests.support.relay_proc")
    if relay_proc is not None:
        relay_proc.RelayProcess.kill_leftovers()


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The root logger's handlers and level put back after each test. The commands'
    entry point (cli.main) sets up a process's logging: a handler on the sys.stderr of the
    moment, which under capsys is the test's own stream, closed with it. Left on the root
    logger, every later test's log line failed to write to it ("--- Logging error ---
    ... I/O operation on closed file": the end-to-end tests, after test_desk_config)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


@pytest.fixture
def mock_pins() -> Iterator[object]:
    """gpiozero's MockFactory as the default pin factory, reset after the test."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    previous = Device.pin_factory
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


# Suites that run only when `-m` names the word given: the benchmarks (`./dev bench`), and
# the parts of the virtual kiosk suite that only `./dev appliance` (-m appliance) runs. The
# rest of that suite (boot, systemd, the package, 5 power cuts) is in every test run. The
# arm64 kiosk (`./dev appliance-arm64`) is emulated end to end: far too slow for a test run.
ON_REQUEST = {
    "bench": ("bench", "benchmark: run with ./dev bench (pytest -m bench)"),
    "appliance_full": ("appliance", "virtual kiosk, full suite only: run with ./dev appliance "
                                    "(pytest -m appliance)"),
    "arm64": ("arm64", "arm64 virtual kiosk, emulated (its first image build alone takes "
                       "over 20 min): run with ./dev appliance-arm64 (pytest -m arm64)"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Suites in ON_REQUEST run only when `-m` names their word (and not as `not WORD`)."""
    markexpr = config.getoption("-m") or ""
    for marker, (word, reason) in ON_REQUEST.items():
        if re.search(rf"\b{word}\b", markexpr) and not re.search(rf"\bnot\s+{word}\b", markexpr):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(skip)
