"""Health: sd_notify on a real notify socket, the liveness watchdog, clock sync, system figures."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordoscan import health
from ordoscan.health import (
    STA_UNSYNC,
    TIME_ERROR,
    SystemdNotifier,
    Watchdog,
    clock_synced,
    frames_arriving,
    sync_state,
    system_info,
    thread_alive,
)

WAIT = 30.0  # generous: only a broken implementation waits this long


class Listener:
    """The systemd side: a datagram socket that collects notify messages."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # as NOTIFY_SOCKET holds it

    def recv(self, timeout: float = WAIT) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        assert data.endswith("\n")
        return dict(line.split("=", 1) for line in data.splitlines())

    def drain(self) -> list[dict[str, str]]:
        """Every message waiting now, without waiting."""
        out = []
        while True:
            try:
                out.append(self.recv(timeout=0.0))
            except (BlockingIOError, TimeoutError):
                return out

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, **extra}


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield Listener(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"ordoscan-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield Listener(sock, "@" + name)
    sock.close()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- sd_notify ------------------------------------------------------------------


def test_notify_messages_on_a_path_socket(listener: Listener) -> None:
    with SystemdNotifier(listener.env()) as n:
        assert n.enabled
        assert n.ready("starting")
        assert listener.recv() == {"READY": "1", "STATUS": "starting"}
        assert n.status("queue 3, broker connected")
        assert listener.recv() == {"STATUS": "queue 3, broker connected"}
        assert n.watchdog()
        assert listener.recv() == {"WATCHDOG": "1"}
        assert n.stopping()
        assert listener.recv() == {"STOPPING": "1"}
        assert n.notify(STATUS="two\nlines", MAINPID=os.getpid())
        assert listener.recv() == {"STATUS": "two lines", "MAINPID": str(os.getpid())}


def test_notify_on_an_abstract_socket(abstract_listener: Listener) -> None:
    n = SystemdNotifier(abstract_listener.env())
    assert n.ready()
    assert abstract_listener.recv() == {"READY": "1"}
    n.close()


def test_no_notify_socket_is_a_quiet_no_op() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x") and not n.stopping()
    assert n.watchdog_interval() is None
    wd = Watchdog(n, {"never": lambda: (False, "never ok")})
    wd.start()  # no systemd: no thread, nothing sent, no error
    assert wd.tick() is False
    wd.stop()
    n.close()


def test_a_bad_notify_socket_is_named_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ordoscan.health")
    n = SystemdNotifier({"NOTIFY_SOCKET": "relative/notify"})
    assert not n.enabled and not n.ready()
    assert "NOTIFY_SOCKET = 'relative/notify'" in caplog.text


def test_a_lowercase_field_is_refused_not_sent(listener: Listener) -> None:
    n = SystemdNotifier(listener.env())
    assert not n.notify(status="lower case")
    assert listener.drain() == []


def test_a_vanished_socket_is_logged_once_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ordoscan.health")
    path = tmp_path / "gone.sock"
    n = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    assert not n.watchdog()
    assert not n.watchdog()
    assert caplog.text.count("sd_notify to") == 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        assert n.watchdog()
        assert Listener(sock, str(path)).recv() == {"WATCHDOG": "1"}
        assert "works again" in caplog.text
    finally:
        sock.close()
        n.close()


def test_watchdog_interval_from_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ordoscan.health")
    assert SystemdNotifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    mine = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier(mine).watchdog_interval() == 2.5
    other = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(other).watchdog_interval() is None
    assert SystemdNotifier({}).watchdog_interval() is None
    assert SystemdNotifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert "WATCHDOG_USEC = 'soon'" in caplog.text
    assert SystemdNotifier({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "me"}).watchdog_interval() is None
    assert "WATCHDOG_PID = 'me'" in caplog.text


# -- the watchdog, driven by hand ---------------------------------------------------


def test_watchdog_pings_only_while_frames_arrive(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ordoscan.health")
    clock = FakeClock()
    frames: list[float] = []
    camera = frames_arriving(lambda: frames[-1] if frames else None, 3.0, clock=clock)
    notifier = SystemdNotifier(listener.env(WATCHDOG_USEC="2000000"))
    wd = Watchdog(notifier, {"camera": camera}, status=lambda: "queue 0", clock=clock)
    assert wd.ping_every == 1.0  # half of WatchdogSec

    for _ in range(3):  # frames keep coming: a ping every round
        frames.append(clock.now)
        assert wd.tick()
        clock.now += 1.0
    messages = listener.drain()
    assert messages.count({"WATCHDOG": "1"}) == 3
    assert {"STATUS": "queue 0"} in messages

    clock.now += 4.0  # the camera stalls: no frame for 5 s
    assert not wd.tick()
    withheld = listener.drain()
    reason = "camera: no camera frame for 5 s (limit 3 s)"
    assert withheld == [{"STATUS": f"unhealthy: {reason} | queue 0"}]
    for _ in range(5):
        clock.now += 1.0
        assert not wd.tick()
    assert all("WATCHDOG" not in m for m in listener.drain())
    assert caplog.text.count("watchdog ping withheld") == 1  # logged once, with the reason
    assert "camera: no camera frame for 5 s" in caplog.text

    frames.append(clock.now)  # frames again: pings resume at once
    assert wd.tick()
    assert listener.drain() == [{"WATCHDOG": "1"}, {"STATUS": "queue 0"}]
    assert "watchdog pings resumed" in caplog.text


def test_watchdog_counts_from_start_before_the_first_frame(listener: Listener) -> None:
    clock = FakeClock()
    camera = frames_arriving(lambda: None, 3.0, clock=clock)
    wd = Watchdog(SystemdNotifier(listener.env()), {"camera": camera}, ping_every=1.0, clock=clock)
    assert wd.tick()
    clock.now += 3.5
    assert not wd.tick()
    assert "no camera frame yet for 4 s" in listener.drain()[-1]["STATUS"]


def test_watchdog_status_at_most_every_few_seconds(listener: Listener) -> None:
    clock = FakeClock()
    depth = [0]
    wd = Watchdog(
        SystemdNotifier(listener.env()), status=lambda: f"queue {depth[0]}",
        ping_every=1.0, status_every=5.0, clock=clock,
    )
    sent = []
    for second in range(12):
        depth[0] = second  # changes every round
        wd.tick()
        sent += [(second, m["STATUS"]) for m in listener.drain() if "STATUS" in m]
        clock.now += 1.0
    assert sent == [(0, "queue 0"), (5, "queue 5"), (10, "queue 10")]
    wd.tick()  # unchanged text: nothing sent even when due
    clock.now += 10
    depth[0] = 10
    wd.tick()
    assert [m for m in listener.drain() if "STATUS" in m] == []


def test_a_check_that_raises_withholds_the_ping(listener: Listener) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("sensor gone")

    wd = Watchdog(SystemdNotifier(listener.env()), {"publisher": broken}, ping_every=1.0)
    assert not wd.tick()
    assert listener.drain() == [
        {"STATUS": "unhealthy: publisher: check raised RuntimeError: sensor gone"}
    ]


def test_thread_alive_check() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, args=(WAIT,), name="publisher")
    check = thread_alive(t)
    assert check() == (False, "thread 'publisher' is not running")  # not started yet
    t.start()
    assert check() == (True, "")
    stop.set()
    t.join(WAIT)
    assert check() == (False, "thread 'publisher' is not running")
    assert thread_alive(lambda: None)() == (False, "thread 'worker' is not running")


# -- the watchdog thread, in real time ----------------------------------------------


def test_watchdog_thread_stops_pinging_when_a_check_fails_and_resumes(listener: Listener) -> None:
    alive = threading.Event()
    alive.set()
    notifier = SystemdNotifier(listener.env(WATCHDOG_USEC="200000"))  # 0.2 s: a ping every 0.1 s

    def publisher() -> tuple[bool, str]:
        return (True, "") if alive.is_set() else (False, "stuck")

    with Watchdog(notifier, {"publisher": publisher}, status=lambda: "ok"):
        pings = 0
        while pings < 3:
            pings += listener.recv() == {"WATCHDOG": "1"}
        alive.clear()
        while "unhealthy" not in listener.recv().get("STATUS", ""):
            pass  # pings sent before the failure was seen may still be in the socket
        # ten ping periods of silence: nothing may come (this wait cannot fail a correct build)
        with pytest.raises(TimeoutError):
            while True:
                message = listener.recv(timeout=1.0)
                assert "WATCHDOG" not in message, message
        alive.set()
        while listener.recv() != {"WATCHDOG": "1"}:
            pass


# -- the clock --------------------------------------------------------------------


def test_sync_state_reads_the_kernel_answer() -> None:
    assert sync_state(0, 0) is True  # TIME_OK
    assert sync_state(1, 0) is True  # TIME_INS: a leap second is due, still in sync
    assert sync_state(TIME_ERROR, 0) is False
    assert sync_state(0, STA_UNSYNC) is False
    assert sync_state(0, STA_UNSYNC | 0x1) is False
    assert sync_state(-1, 0) is False


def test_clock_synced_asks_the_kernel() -> None:
    synced = clock_synced()
    assert isinstance(synced, bool)
    result = health._adjtimex()
    if result is None:
        pytest.skip("adjtimex is not available here")
    state, tx = result
    # the struct layout is right if the kernel's own time field reads as now
    assert abs(tx.time.tv_sec - time.time()) < 60
    assert synced == sync_state(state, tx.status)


# -- system figures -----------------------------------------------------------------


def test_system_info_off_a_pi(tmp_path: Path) -> None:
    info = system_info(
        tmp_path, thermal_path=tmp_path / "none", throttled_path=tmp_path / "none", vcgencmd=None
    )
    keys = {"cpu_temp_c", "throttled", "throttled_flags", "disk_free_bytes", "load_avg"}
    assert set(info) == keys
    assert info["cpu_temp_c"] is None
    assert info["throttled"] is None and info["throttled_flags"] is None
    assert isinstance(info["disk_free_bytes"], int) and info["disk_free_bytes"] > 0
    assert len(info["load_avg"]) == 3 and all(x >= 0 for x in info["load_avg"])
    json.dumps(info)  # goes into telemetry as it is


def test_system_info_never_raises_on_missing_or_odd_paths(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "outbox.sqlite3"
    info = system_info(missing, thermal_path=tmp_path, throttled_path=Path("/proc/self/mem"))
    assert info["cpu_temp_c"] is None  # a directory, not a file
    assert info["throttled"] is None  # unreadable
    # the outbox folder may not exist yet: the free space of the disk it will be on
    assert isinstance(info["disk_free_bytes"], int) and info["disk_free_bytes"] > 0
    assert isinstance(system_info("")["disk_free_bytes"], int)  # the working directory
    assert system_info("/\0bad")["disk_free_bytes"] is None


def test_system_info_reads_a_pi(tmp_path: Path) -> None:
    thermal = tmp_path / "temp"
    thermal.write_text("48312\n")
    throttled = tmp_path / "get_throttled"
    throttled.write_text("50005\n")
    info = system_info(tmp_path, thermal_path=thermal, throttled_path=throttled, vcgencmd=None)
    assert info["cpu_temp_c"] == 48.3
    assert info["throttled"] == 0x50005
    assert info["throttled_flags"] == [
        "under-voltage", "throttled", "under-voltage occurred", "throttling occurred",
    ]
    thermal.write_text("hot\n")
    throttled.write_text("\x00\xff")
    info = system_info(tmp_path, thermal_path=thermal, throttled_path=throttled, vcgencmd=None)
    assert info["cpu_temp_c"] is None and info["throttled"] is None


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "vcgencmd"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ('[ "$1" = get_throttled ] && echo throttled=0x4', 4),
        ("echo throttled=0x0", 0),
        ("echo 'VCHI initialization failed' >&2; exit 255", None),
        ("echo nonsense", None),
    ],
)
def test_throttling_from_vcgencmd(tmp_path: Path, body: str, word: int | None) -> None:
    info = system_info(
        tmp_path, throttled_path=tmp_path / "none", vcgencmd=_script(tmp_path, body)
    )
    assert info["throttled"] == word
    assert info["throttled_flags"] == (None if word is None else (["throttled"] if word else []))
