"""The App's rules beyond the plain sequence: mixed frames, INS alone, a full
outbox, remote commands over the broker, bad files, polarity, a failed start.

Real parts throughout: rendered scenes through the replay camera, zxing-cpp,
the SQLite outbox, a mosquitto per test, gpiozero's MockFactory.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from ordoscan.app import App
from ordoscan.decoder import Decoder, deblur
from ordoscan.devtools.scenes import render
from ordoscan.errors import OrdoscanError
from ordoscan.feedback import (
    FAULT_BEEP_S,
    FAULT_BLINK_S,
    FAULT_GAP_S,
    GOOD_READ_DIP_S,
    IDENTIFY_BLINK_S,
)
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.kiosk import (
    GOOD_READ,
    NOTHING,
    PREFIX,
    Kiosk,
    assert_pin,
    kiosk_config,
    payloads,
    scene,
    start_kiosk,
    steady,
    wait_ready,
    wait_until,
)
from tests.support.mosquitto import Broker, Subscriber, free_port


@pytest.fixture
def kiosk(tmp_path: Path, broker: Broker) -> Iterator[Kiosk]:
    k = start_kiosk(tmp_path, broker.port)
    try:
        wait_ready(k)
        yield k
    finally:
        k.app.stop()


def side_by_side(left: tuple[str, int], right: tuple[str, int]) -> np.ndarray:
    """One 1280x720 frame holding two scenes, each rendered at 640x720."""
    a = render(left[0], left[1], size=(640, 720)).image
    b = render(right[0], right[1], size=(640, 720)).image
    return np.ascontiguousarray(np.hstack([a, b]))


def ins_alone() -> tuple[np.ndarray, str]:
    """A blank counter with only the INS DataMatrix of ordonnance scene 2 pasted in."""
    source = scene("ordonnance", 2)
    dm = next(s for s in Decoder(60).decode(source.image) if s.format == "DataMatrix")
    xs = [p[0] for p in dm.position]
    ys = [p[1] for p in dm.position]
    y0, y1, x0, x1 = min(ys) - 30, max(ys) + 30, min(xs) - 30, max(xs) + 30
    frame = scene("blank", 0).image.copy()
    frame[y0:y1, x0:x1] = source.image[y0:y1, x0:x1]
    return frame, payloads(source, "ins")[0]


def test_ordonnance_beside_a_refused_code_gets_only_the_good_read(
    kiosk: Kiosk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ordoscan")
    kiosk.show_image(side_by_side(("ordonnance", 0), ("medicine_pack", 0)), "ordonnance+pack")
    kiosk.assert_signals(GOOD_READ)
    snap = kiosk.app.stats.snapshot()
    assert snap["queued"] == 1
    assert snap["refusals"] == {"medicine_pack": 1}  # still counted and logged
    assert "refused: medicine_pack" in caplog.text
    # the same pack alone, a moment later, is refused as usual
    kiosk.show_image(side_by_side(("blank", 1), ("medicine_pack", 0)), "pack")
    assert kiosk.pins["red"].states[-1].state is False
    assert [bool(s.state) for s in kiosk.pins["red"].states] == [False, True, False]


def test_an_ordonnance_is_committed_while_its_frame_is_still_being_decoded(
    tmp_path: Path, broker: Broker
) -> None:
    """The scan loop commits and signals an ordonnance as soon as the decoder reads it
    (decode's on_read), not once the frame's other passes are done; once, all the same."""
    inside = threading.Event()  # the scan loop is within the decoder's decode()
    stored_inside: list[bool] = []
    k = start_kiosk(tmp_path, broker.port,
                    app_options={"on_stored": lambda: stored_inside.append(inside.is_set())})
    try:
        wait_ready(k)
        assert k.app.scanner is not None
        decoder = k.app.scanner._decoder
        real = decoder.decode

        def decode(*args: object, **kwargs: object) -> object:
            inside.set()
            try:
                return real(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                inside.clear()

        decoder.decode = decode  # type: ignore[method-assign,assignment]
        k.show_image(side_by_side(("ordonnance", 0), ("medicine_pack", 0)), "ordonnance+pack")
        k.assert_signals(GOOD_READ)
        assert stored_inside == [True]
        snap = k.app.stats.snapshot()
        assert snap["queued"] == 1 and snap["refusals"] == {"medicine_pack": 1}
    finally:
        k.app.stop()


def test_an_ins_code_alone_gives_no_signal_and_leaves_no_trace(
    kiosk: Kiosk, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="ordoscan")
    frame, ins = ins_alone()
    kiosk.show_image(frame, "ins-alone")
    kiosk.assert_signals(NOTHING)
    assert kiosk.app.stats.snapshot()["ignored"] == {"ins": 1}
    assert kiosk.app.outbox is not None and kiosk.app.outbox.stats().last_seq == 0
    assert ins not in caplog.text and ins[4:] not in caplog.text
    for f in (tmp_path / "outbox").iterdir():
        assert ins.encode() not in f.read_bytes()


def test_full_outbox_gives_the_fault_signal_then_clears(tmp_path: Path) -> None:
    port = free_port()  # no broker yet: scans stay queued
    k = start_kiosk(tmp_path, port, outbox={"max_messages": 1})
    try:
        wait_ready(k)
        k.show("ordonnance", 0)
        k.assert_signals(GOOD_READ | {"amber": [(False, 0.0), (True, None)]})
        k.show_image(scene("phone_dark", 0), "refused-by-full-outbox", settle=False)
        buzzer, red = k.pins["buzzer"], k.pins["red"]
        assert wait_until(lambda: len(buzzer.states) >= 9 and len(red.states) >= 4, 15)
        # four low beeps once, red blinking, and no good read: no dip, no short beep
        beep, gap = FAULT_BEEP_S, FAULT_GAP_S
        assert_pin("buzzer", buzzer, [(False, 0.0), (True, None), (False, beep), (True, gap),
                                      (False, beep), (True, gap), (False, beep), (True, gap),
                                      (False, beep)])
        blink = FAULT_BLINK_S
        assert_pin("red", red, [(False, 0.0), (True, None), (False, blink), (True, blink)],
                   first=True)
        assert_pin("green", k.pins["green"], steady(True))
        assert "outbox_full" in k.app.faults()
        assert k.app.stats.snapshot()["outbox_refused"] == {"full": 1}
        assert k.app.outbox is not None and k.app.outbox.stats().depth == 1

        broker = Broker(tmp_path / "broker", port=port).start()
        try:
            assert wait_until(lambda: "outbox_full" not in k.app.faults(), 60)
            assert wait_until(lambda: not red.state and not k.pins["amber"].state, 10)
            assert k.app.outbox.stats().depth == 0
        finally:
            k.app.stop()  # before the broker goes: the stop publishes the offline status
            broker.kill()
    finally:
        k.app.stop()


class Operator:
    """Someone sending commands to the kiosk through the broker, and reading the replies."""

    def __init__(self, broker: Broker) -> None:
        self.replies = Subscriber(broker.host, broker.port, [f"{PREFIX}/reply"],
                                  client_id="operator-replies")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator",
                                  protocol=mqtt.MQTTv5)
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(10)

    def send(self, name: str, payload: bytes | str) -> dict[str, object]:
        before = len(self.replies.on("/reply"))
        self.client.publish(f"{PREFIX}/cmd/{name}", payload, qos=1).wait_for_publish(10)
        assert self.replies.wait_for(lambda s: len(s.on("/reply")) > before, 30), name
        reply: dict[str, object] = json.loads(self.replies.on("/reply")[before])
        return reply

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.replies.close()


def test_remote_commands(kiosk: Kiosk, broker: Broker) -> None:
    assert wait_until(lambda: kiosk.app.status()["broker"] == "connected", 30)
    op = Operator(broker)
    try:
        pong = op.send("ping", '{"id": "p-1"}')
        assert pong["ok"] is True and pong["id"] == "p-1" and pong["cmd"] == "ping"
        result = pong["result"]
        assert isinstance(result, dict)
        assert result["pong"] is True and result["queue_depth"] == 0
        assert result["broker"] == "connected" and result["camera"] in ("ok", "idle")

        for pin in kiosk.pins.values():
            pin.clear_states()
        answer = op.send("identify", '{"id": 7, "seconds": 1}')
        assert answer["ok"] is True and answer["id"] == 7
        assert kiosk.app.feedback is not None and kiosk.app.feedback.wait_idle(15)
        half = IDENTIFY_BLINK_S
        # all three blink together for 1 s, then give the LEDs back (green on, others off)
        assert_pin("amber", kiosk.pins["amber"], [(False, 0.0), (True, None), (False, half),
                                                  (True, half), (False, half)])
        assert_pin("red", kiosk.pins["red"], [(False, 0.0), (True, None), (False, half),
                                              (True, half), (False, half)])
        assert_pin("green", kiosk.pins["green"], [(True, 0.0), (False, None), (True, half),
                                                  (False, half), (True, half)])
        assert_pin("buzzer", kiosk.pins["buzzer"], steady(False))  # identify is silent

        for pin in kiosk.pins.values():
            pin.clear_states()
        for name, payload, error in (
            ("reboot", '{"id": "r-1"}', "unknown command 'reboot'"),
            ("identify", "[1, 2]", "must be a JSON object"),
            ("identify", '{"seconds": "all day"}', "'seconds' must be a number"),
            ("ping", "x" * 2000, "over the limit"),
        ):
            answer = op.send(name, payload)
            assert answer["ok"] is False, answer
            assert error in str(answer["error"])
        assert answer["cmd"] == "ping"
        assert kiosk.app.feedback.wait_idle(5)
        for name in ("green", "amber", "red", "buzzer"):  # nothing was executed
            assert len(kiosk.pins[name].states) == 1, name
    finally:
        op.close()


def test_unreadable_files_are_skipped_and_reading_goes_on(kiosk: Kiosk) -> None:
    folder = kiosk.camera.folder
    (folder / "000-empty.png").write_bytes(b"")
    (folder / "001-truncated.png").write_bytes(scene_bytes()[:300])
    (folder / "002-text.png").write_text("not an image")
    kiosk.camera.count = 2
    kiosk.show("ordonnance", 1)
    kiosk.assert_signals(GOOD_READ)
    assert kiosk.app.stats.snapshot()["queued"] == 1


def scene_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(scene("ordonnance", 0).image).save(buf, format="PNG")
    return buf.getvalue()


def test_active_low_pins(tmp_path: Path, broker: Broker) -> None:
    k = start_kiosk(tmp_path, broker.port, gpio={"active_high": False})
    try:
        wait_ready(k)
        # lit means low: green low, amber and red high
        assert (k.pins["green"].state, k.pins["amber"].state, k.pins["red"].state) == (
            False, True, True)
        k.show("ordonnance", 0)
        assert_pin("green", k.pins["green"], [(False, 0.0), (True, None),
                                              (False, GOOD_READ_DIP_S)])
    finally:
        k.app.stop()
    # closed: every LED off, which is high
    assert k.pins["green"].state is True


def test_the_scan_loop_builds_the_decoders_tables_before_its_first_frame(
    tmp_path: Path, broker: Broker
) -> None:
    # the defocus spectrum's tables cost a Pi 4 about a third of a second: built at start,
    # not during the first out-of-focus code a customer shows (a sharp one here reads at
    # the fast pass and would never build them)
    deblur._fits.cache_clear()
    deblur._rings.cache_clear()
    k = start_kiosk(tmp_path, broker.port)
    try:
        wait_ready(k)
        k.show_image(scene("ordonnance", 0), "ordonnance")
        k.assert_signals(GOOD_READ)
        assert deblur._fits.cache_info().currsize == len(deblur._SPECTRUM_SIDES)
        assert deblur._rings.cache_info().currsize == len(deblur._SPECTRUM_SIDES)
    finally:
        k.app.stop()


def test_a_failed_start_stops_what_it_started(tmp_path: Path) -> None:
    cfg = kiosk_config(tmp_path, free_port(), gpio={"pin_factory": "lgpio"})
    before = {t.name for t in threading.enumerate()}
    app = App(cfg)  # no pin factory given: the config's lgpio, absent on this machine
    with pytest.raises(OrdoscanError, match=r"gpio\.pin_factory = 'lgpio'"):
        app.start()
    leftover = {t.name for t in threading.enumerate()} - before
    assert not leftover, leftover
    assert app.outbox is not None and app.outbox._conn is None  # closed
    app.stop()  # idempotent


def test_stop_order_leaves_nothing_running(tmp_path: Path, broker: Broker) -> None:
    factory = MockFactory()
    app = App(kiosk_config(tmp_path, broker.port), pin_factory=factory)
    before = {t.name for t in threading.enumerate()}
    app.start()
    assert wait_until(lambda: app.status()["broker"] == "connected", 30)
    app.stop()
    assert wait_until(lambda: not ({t.name for t in threading.enumerate()} - before), 10), (
        {t.name for t in threading.enumerate()} - before)
    assert app.outbox is not None and app.outbox._conn is None


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of the test's own (root only): a real disk that can fill up."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path) -> Path:
    """Take every free block of the file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, bytes(4096))
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                return filler
    finally:
        os.close(fd)


def test_disk_error_gives_the_fault_signal_and_no_good_read(
    tmp_path: Path, broker: Broker, small_fs: Path
) -> None:
    k = start_kiosk(tmp_path, broker.port, outbox={"path": str(small_fs / "outbox.sqlite3")})
    try:
        wait_ready(k)
        k.show("ordonnance", 0)
        k.assert_signals(GOOD_READ)
        assert k.app.outbox is not None
        assert wait_until(lambda: k.app.outbox is not None and k.app.outbox.stats().depth == 0, 30)

        filler = fill(small_fs)  # the delivered scan is gone and the WAL truncated: no room left
        k.show_image(scene("ordonnance", 1), "on-a-full-disk", settle=False)
        buzzer, red = k.pins["buzzer"], k.pins["red"]
        assert wait_until(lambda: len(buzzer.states) >= 9 and len(red.states) >= 3, 15)
        beep, gap = FAULT_BEEP_S, FAULT_GAP_S
        assert_pin("buzzer", buzzer, [(False, 0.0), (True, None), (False, beep), (True, gap),
                                      (False, beep), (True, gap), (False, beep), (True, gap),
                                      (False, beep)])
        assert_pin("red", red, [(False, 0.0), (True, None), (False, FAULT_BLINK_S)], first=True)
        assert_pin("green", k.pins["green"], steady(True))  # no good read: it is not on disk
        assert "disk" in k.app.faults()
        assert k.app.stats.snapshot()["outbox_refused"] == {"disk": 1}

        filler.unlink()
        k.show_image(scene("ordonnance", 3), "room-again", settle=False)
        assert wait_until(lambda: "disk" not in k.app.faults(), 15)
        assert k.app.feedback is not None and k.app.feedback.wait_idle(15)
        assert not red.state
        assert k.app.stats.snapshot()["queued"] == 2
    finally:
        k.app.stop()
