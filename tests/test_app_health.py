"""systemd notify and watchdog, against a real notify socket made by the test.

The camera is the picamera2 source on the picamera2 double (a live camera the
test drives frame by frame): frames flow, stall, come back; the camera is
unplugged and plugged in again. READY=1, WATCHDOG=1 and STATUS= are read from
the datagrams the daemon sends, as systemd would read them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from ordoscan.app import App
from ordoscan.camera import Picamera2Source
from ordoscan.devtools.frames import FrameCounter
from ordoscan.health import SystemdNotifier

from tests.support.kiosk import PREFIX, kiosk_config, wait_until
from tests.support.mosquitto import Broker
from tests.support.picamera2_double import IMX708, CameraSystem, FakeCamera

WATCHDOG_USEC = 400_000  # pings every 0.2 s
STALL_S = 0.5  # camera.stall_timeout_s: the watchdog gives up after 3 of these without a frame


class NotifySocket:
    """What systemd's end of $NOTIFY_SOCKET receives: (arrival time, fields) per datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def times(self, key: str, value: str | None = None) -> list[float]:
        with self._lock:
            return [t for t, f in self.messages if key in f and (value is None or f[key] == value)]

    def values(self, key: str) -> list[str]:
        with self._lock:
            return [f[key] for _, f in self.messages if key in f]

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()


class Sensor:
    """Drives the fake camera at 15 fps while `flowing` is set."""

    def __init__(self, camera: FakeCamera) -> None:
        self.camera = camera
        self.flowing = threading.Event()
        self.flowing.set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(1 / 15):
            if self.flowing.is_set():
                self.camera.emit()

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify")
    try:
        yield n
    finally:
        n.close()


def live_kiosk(tmp: Path, port: int, notify: NotifySocket) -> tuple[App, FakeCamera, MockFactory]:
    system = CameraSystem(IMX708)
    cfg = kiosk_config(tmp, port, camera={"source": "picamera2", "size": (640, 480),
                                          "stall_timeout_s": STALL_S})
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": str(notify.path),
                                    "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    factory = MockFactory()
    app = App(cfg, pin_factory=factory, notifier=notifier,
              source=Picamera2Source(cfg.camera, api=system.api()))
    return app, system.cameras[0], factory


def pings_after(notify: NotifySocket, t: float) -> int:
    return sum(1 for x in notify.times("WATCHDOG", "1") if x > t)


def test_ready_watchdog_status_and_a_stalled_camera(
    tmp_path: Path, broker: Broker, notify: NotifySocket
) -> None:
    app, camera, factory = live_kiosk(tmp_path, broker.port, notify)
    sensor = Sensor(camera)
    app.start()
    try:
        assert wait_until(lambda: notify.times("READY", "1"), 30), notify.messages
        assert wait_until(lambda: len(notify.times("WATCHDOG", "1")) >= 5, 30)
        assert wait_until(lambda: any("broker connected" in s for s in notify.values("STATUS")), 30)
        assert any(s.startswith("queue 0") for s in notify.values("STATUS"))

        # the camera stops giving frames: the fault shows, the pings stop
        sensor.flowing.clear()
        stalled_at = time.monotonic()
        assert wait_until(
            lambda: any("unhealthy: camera" in s for s in notify.values("STATUS")), 30
        ), notify.values("STATUS")
        withheld_at = max(notify.times("STATUS"))
        time.sleep(10 * WATCHDOG_USEC / 2 / 1e6)  # ten ping periods: long enough to miss pings
        assert pings_after(notify, withheld_at + 0.05) == 0
        assert "camera" in app.faults()
        red = factory.pin(app.cfg.gpio.red)
        assert len([s for s in red.states if s.timestamp > 0]) >= 2, "red should be blinking"
        assert time.monotonic() - stalled_at < 30

        # frames again: the camera is reopened (back-off) and the pings resume
        sensor.flowing.set()
        resumed_at = time.monotonic()
        assert wait_until(lambda: pings_after(notify, resumed_at) >= 3, 60)
        assert wait_until(lambda: "camera" not in app.faults(), 30)
    finally:
        app.stop()
        sensor.close()
    assert notify.times("STOPPING", "1")


def test_a_dead_publisher_thread_stops_the_pings(
    tmp_path: Path, broker: Broker, notify: NotifySocket
) -> None:
    app, camera, _ = live_kiosk(tmp_path, broker.port, notify)
    sensor = Sensor(camera)
    app.start()
    try:
        assert wait_until(lambda: len(notify.times("WATCHDOG", "1")) >= 3, 30)
        assert app.publisher is not None
        app.publisher.stop(2.0)  # its thread ends, as if it had died
        assert wait_until(
            lambda: any("publisher" in s and "unhealthy" in s for s in notify.values("STATUS")), 30
        ), notify.values("STATUS")
        withheld_at = max(notify.times("STATUS"))
        time.sleep(10 * WATCHDOG_USEC / 2 / 1e6)
        assert pings_after(notify, withheld_at + 0.05) == 0
    finally:
        app.stop()
        sensor.close()


def test_camera_unplugged_fault_log_and_back(
    tmp_path: Path, broker: Broker, notify: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ordoscan")
    app, camera, factory = live_kiosk(tmp_path, broker.port, notify)
    sensor = Sensor(camera)
    app.start()
    try:
        assert wait_until(lambda: notify.times("READY", "1"), 30)
        assert app.feedback is not None and app.feedback.wait_idle(10)
        buzzer = factory.pin(app.cfg.gpio.buzzer)
        buzzer.clear_states()
        camera.unplug()
        assert wait_until(lambda: "camera" in app.faults(), 30)
        assert app.status()["camera"] == "lost"
        # four low beeps once
        assert wait_until(lambda: len(buzzer.states) >= 9, 10), buzzer.states
        assert [bool(s.state) for s in buzzer.states] == [False] + [True, False] * 4
        assert any(r.levelno == logging.WARNING and r.name == "ordoscan.camera"
                   for r in caplog.records), "the loss must be logged"
        camera.plug()
        assert wait_until(lambda: "camera" not in app.faults(), 60)
        assert app.status()["camera"] == "ok"
        # the telemetry's camera section says who sets the exposure, and under what cap
        exposure = app.camera_state()["exposure"]
        assert exposure is not None and exposure["by"] == "camera", exposure
        assert exposure["cap_us"] == app.cfg.camera.max_exposure_us
        assert any("fault cleared: camera" in r.getMessage() for r in caplog.records)
    finally:
        app.stop()
        sensor.close()


def test_a_replay_that_ended_is_not_a_stall(
    tmp_path: Path, broker: Broker, notify: NotifySocket
) -> None:
    """loop = false: after the last frame the daemon stays up, fed and answering commands."""
    from tests.support.kiosk import scene
    from tests.support.mosquitto import Subscriber

    image = tmp_path / "one.png"
    scene("ordonnance", 0).save(image)
    cfg = kiosk_config(tmp_path, broker.port, camera={"path": str(image), "loop": False,
                                                      "stall_timeout_s": STALL_S})
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": str(notify.path),
                                    "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    frames = FrameCounter()
    app = App(cfg, pin_factory=MockFactory(), notifier=notifier, on_frame=frames)
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/#"], client_id="replay-ended")
    app.start()
    try:
        assert wait_until(lambda: frames.count >= 1 and len(sub.on("/scan")) == 1, 30)
        ended_at = time.monotonic()
        # well past the stall limit of a live camera (3 x 0.5 s): still fed, still "idle"
        assert wait_until(lambda: time.monotonic() - ended_at > 4 * STALL_S * 3, 30)
        assert pings_after(notify, ended_at + 3 * STALL_S) >= 5
        assert not any("unhealthy" in s for s in notify.values("STATUS"))
        assert app.status()["camera"] == "idle" and app.faults() == []
        import paho.mqtt.publish as publish

        publish.single(f"{PREFIX}/cmd/ping", '{"id": "after-the-end"}', qos=1,
                       hostname=broker.host, port=broker.port)
        assert sub.wait_for(lambda s: any(b"after-the-end" in p for p in s.on("/reply")), 30)
    finally:
        app.stop()
        sub.close()
