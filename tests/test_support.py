"""The shared aids of the tests and the demo: one raising wait, one local broker helper."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from ordoscan.devtools.frames import FrameCounter
from ordoscan.devtools.mosquitto import Broker, find_mosquitto
from ordoscan.errors import BrokerError

import tests.support.kiosk as kiosk
from tests.support.mosquitto import Subscriber
from tests.support.wait import WaitTimeout, wait_until


def test_wait_until_raises_naming_what_never_came() -> None:
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.1 s waiting for the moon"):
        wait_until(lambda: False, 0.1, "the moon")
    assert wait_until(lambda: 7, 1) == 7


def test_there_is_one_polling_helper() -> None:
    assert kiosk.wait_until is wait_until


def test_a_subscriber_that_waits_in_vain_raises(broker: Broker) -> None:
    sub = Subscriber(broker.host, broker.port, ["nothing/#"], client_id="waits-in-vain")
    try:
        with pytest.raises(WaitTimeout, match="a scan"):
            sub.wait_for(lambda s: s.on("/scan"), 0.3, "a scan")
    finally:
        sub.close()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("/nonexistent", "ORDOSCAN_MOSQUITTO=/nonexistent: that path does not exist"),
        ("/", "ORDOSCAN_MOSQUITTO=/: not an executable file"),
        ("", "ORDOSCAN_MOSQUITTO is empty, so no broker is started"),
        ("/bin/x\x1b[2J", r"ORDOSCAN_MOSQUITTO=/bin/x\e[2J: that path does not exist"),
    ],
)
def test_find_mosquitto_says_what_is_wrong(value: str, said: str) -> None:
    with pytest.raises(BrokerError) as err:
        find_mosquitto({"ORDOSCAN_MOSQUITTO": value})
    assert said in str(err.value)
    assert "not installed" not in str(err.value)


def test_find_mosquitto_without_one_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"not installed.*apt-get install mosquitto"):
        find_mosquitto({"PATH": str(tmp_path)}, fallback=())


def test_a_broker_that_will_not_start_names_the_reason(tmp_path: Path) -> None:
    b = Broker(tmp_path / "b", conf="this is not a mosquitto option\n")
    with pytest.raises(BrokerError, match=r"mosquitto did not listen on 127\.0\.0\.1:\d+: .*"):
        b.start(5)
    assert not b.running


def test_frame_counter_waits_past_a_count() -> None:
    frames = FrameCounter()
    assert not frames.wait_past(0, 0.05)
    threading.Timer(0.05, frames).start()
    assert frames.wait_past(0, 10)
    assert frames.count == 1
    stop = threading.Event()
    stop.set()
    assert not frames.wait_past(1, 10, stop)
