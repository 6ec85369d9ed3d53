"""`ordoscan demo`: the kiosk's main job on a desk, with no hardware.

Sample counter scenes (committed PNGs, drawn once by the scene generator) are
dropped one by one into a folder the replay camera follows; the whole daemon
(`app.App`) reads them: decoder, classifier, de-duplication, a real outbox in
a temporary folder, mock GPIO drawn live in the terminal, and the MQTT
publisher talking to a mosquitto started on a free loopback port with its own
configuration. A subscriber prints what the pharmacy system receives. The
demo ends by itself (or on Ctrl-C), stops what it started and removes its
temporary folder.

Without mosquitto it still runs: the scans stay in the outbox, amber on, and
it says how to install the broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ordoscan.config import Config, parse_config, to_toml
from ordoscan.devtools.demo_samples import SAMPLES, Sample
from ordoscan.devtools.mosquitto import Broker, find_mosquitto, free_port
from ordoscan.errors import BrokerError, OrdoscanError
from ordoscan.privacy import LOG_LIMIT, json_line, printable

__all__ = ["SAMPLES", "Sample", "demo_config", "main"]

log = logging.getLogger("ordoscan.demo")

DEVICE_ID = "demo-kiosk"
SITE = "demo-pharmacie"
SAME_CODE_TIMEOUT_S = 1.0
SCENE_PAUSE_S = 2.5  # between two scenes at --speed 1
MIN_GAP_S = SAME_CODE_TIMEOUT_S + 0.3  # each code leaves the view before the next scene
FRAME_TIMEOUT_S = 20.0
DELIVERY_TIMEOUT_S = 15.0
BROKER_START_S = 10.0
NO_BROKER = "there is no broker to send to: the scans stay in the outbox (amber LED on)."


class Output:
    """The demo's lines, printed above the live LED line when there is one."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.view: Any = None  # devtools.terminal.TerminalView once the kiosk runs
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            if self.view is not None:
                self.view.write_line(text)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()


class OutputHandler(logging.Handler):
    """Log records of the kiosk, shown as demo lines."""

    def __init__(self, out: Output) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
            self.out.line(f"  kiosk      {level}{printable(record.getMessage(), LOG_LIMIT)}")
        except Exception:
            self.handleError(record)


class Pharmacy:
    """The pharmacy side: a subscriber on the kiosk's scan and status topics."""

    def __init__(self, cfg: Config, out: Output) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.out = out
        self.prefix = cfg.topic_prefix
        self.scans: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="ordoscan-demo-pharmacy", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(f"{self.prefix}/scan", 1), (f"{self.prefix}/status", 1)]
        )
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(BROKER_START_S):
            self.close()
            raise OrdoscanError("the demo's subscriber could not subscribe to the local broker")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        from pydantic import ValidationError

        from ordoscan.message import ScanMessage

        if msg.topic.endswith("/status"):
            with contextlib.suppress(ValueError):
                state = json.loads(msg.payload).get("state")
                self.out.line(f"  pharmacy   kiosk status: {printable(state)}")
            return
        try:
            scan = ScanMessage.from_json(bytes(msg.payload))
        except ValidationError:
            self.out.line("  pharmacy   received an invalid message (not ordoscan.scan/1)")
            return
        with self._cond:
            if scan.scan_id in self._ids:
                return  # at-least-once: the same scan_id again is the same scan
            self._ids.add(scan.scan_id)
            self.scans.append(json.loads(scan.to_json()))
            self._cond.notify_all()
        self.out.line(f"  pharmacy ← {json_line(json.loads(scan.to_json()), compact=True)}")

    def wait_scans(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.scans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def demo_config(work: Path, port: int) -> Config:
    """The demo kiosk: replay camera, mock GPIO, plaintext loopback MQTT, outbox in `work`."""
    return parse_config(demo_data(work, port), "<demo>", env={})  # ORDOSCAN_* ignored


def demo_data(work: Path, port: int) -> dict[str, dict[str, Any]]:
    """demo_config's tables, as they are written to the kept config file."""
    return {
        "device": {"id": DEVICE_ID, "site": SITE},
        "camera": {"source": "replay", "path": str(work / "camera"), "fps": 15},
        "scan": {"same_code_timeout_s": SAME_CODE_TIMEOUT_S},
        "gpio": {"pin_factory": "mock"},
        "mqtt": {"host": "127.0.0.1", "port": port, "tls": False, "telemetry_interval_s": 0,
                 "reconnect_min_s": 0.5, "reconnect_max_s": 2.0, "client_id": "ordoscan-demo"},
        "outbox": {"path": str(work / "outbox.sqlite3")},
    }


def show(camera: Path, index: int, image: Path) -> None:
    """Put one scene in front of the camera: written as a dot-file, then renamed into view."""
    final = camera / f"{index:02d}-{image.name}"
    hidden = camera / f".{final.name}"
    shutil.copyfile(image, hidden)
    hidden.rename(final)


def wait_for(predicate: Callable[[], bool], timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or stop.wait(0.02):
            return False
    return True


@contextlib.contextmanager
def _interrupts() -> Iterator[contextlib.ExitStack]:
    """An ExitStack for what the demo starts; SIGTERM ends the demo like Ctrl-C."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = (signal.signal(signal.SIGINT, signal.default_int_handler),
                signal.signal(signal.SIGTERM, on_term))
    try:
        with contextlib.ExitStack() as stack:
            yield stack
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _hold_interrupts() -> None:
    """While the demo tidies up, a second Ctrl-C must not leave a broker or files behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(args: argparse.Namespace) -> int:
    speed = float(args.speed)
    if not speed > 0:
        print(f"ordoscan demo: --speed {args.speed}: must be more than 0", file=sys.stderr)
        return 2
    out = Output(sys.stdout)
    work = Path(tempfile.mkdtemp(prefix="ordoscan-demo-"))
    stop = threading.Event()
    try:
        with _interrupts() as stack:
            if args.keep:
                stack.callback(out.line, f"kept: {work} (the kiosk's config: "
                               f"{work / 'ordoscan.toml'})")
            else:
                stack.callback(shutil.rmtree, work, True)
            return _run(args, speed, work, out, stack, stop)
    except KeyboardInterrupt:
        # the ExitStack has stopped the kiosk and the broker and removed the folder
        print("\nordoscan demo: interrupted; everything it started is stopped and removed",
              file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, speed: float, work: Path, out: Output,
         stack: contextlib.ExitStack, stop: threading.Event) -> int:
    from ordoscan.app import App
    from ordoscan.devtools.frames import FrameCounter
    from ordoscan.devtools.terminal import TerminalView

    out.line("ordoscan demo: the kiosk's main job on this desk, with no hardware")
    camera = work / "camera"
    camera.mkdir()
    out.line(f"  camera     replay of {len(SAMPLES)} sample scenes")

    broker: Broker | None = None
    no_broker = ""
    try:
        broker = Broker(work / "broker", exe=find_mosquitto())
    except BrokerError as e:
        out.line(f"  broker     {e}; {NO_BROKER}")
        no_broker = str(e)
        port = free_port()  # nothing listens there: the kiosk keeps retrying
    if broker is not None:
        broker.start(BROKER_START_S)
        stack.callback(broker.stop)
        port = broker.port
        out.line(f"  broker     mosquitto on 127.0.0.1:{port}, started for the demo "
                 "(loopback only, own config)")
    cfg = demo_config(work, port)
    # the same kiosk as a config file, kept with --keep: `ordoscan run --config` it again
    (work / "ordoscan.toml").write_text(to_toml(demo_data(work, port)))
    out.line(f"  config     {work / 'ordoscan.toml'}")
    out.line(f"  outbox     {cfg.outbox.path}")
    out.line("  GPIO       mock pins (gpiozero MockFactory), drawn live: green, amber, red, buzzer")

    pharmacy: Pharmacy | None = None
    if broker is not None:
        pharmacy = Pharmacy(cfg, out)
        stack.callback(pharmacy.close)
        out.line(f"  pharmacy   a subscriber on {cfg.topic_prefix}/scan prints what it receives")

    # the kiosk's own log lines: its decisions (payloads masked), warnings and errors
    handler = OutputHandler(out)
    kiosk_log = logging.getLogger("ordoscan")
    saved = (kiosk_log.level, kiosk_log.propagate)
    kiosk_log.addHandler(handler)
    kiosk_log.propagate = False
    kiosk_log.setLevel(logging.INFO)
    for quiet in ("ordoscan.camera", "ordoscan.outbox", "ordoscan.health"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    if broker is None:
        logging.getLogger("ordoscan.publisher").setLevel(logging.CRITICAL)

    def restore_logging() -> None:
        kiosk_log.removeHandler(handler)
        kiosk_log.setLevel(saved[0])
        kiosk_log.propagate = saved[1]

    stack.callback(restore_logging)

    frames = FrameCounter()
    app = App(cfg, on_frame=frames)
    stack.callback(app.stop)
    out.line("")

    def pins() -> dict[str, bool]:
        return app.feedback.snapshot() if app.feedback is not None else {}

    view = TerminalView(pins)  # started first, so that booting (all on) shows too
    out.view = view
    view.start()

    def stop_view() -> None:
        view.stop()
        out.view = None

    stack.callback(stop_view)
    app.start()
    assert app.feedback is not None
    stack.callback(_hold_interrupts)  # last in, so first to run when the demo ends
    wait_for(lambda: app.status()["camera"] in ("ok", "idle"), 5.0, stop)
    app.feedback.wait_idle(5.0)

    expected_sent = 0
    last_shown = 0.0
    pause = max(MIN_GAP_S, SCENE_PAUSE_S / speed)
    for i, sample in enumerate(SAMPLES, 1):
        gap = time.monotonic() - last_shown
        if gap < pause:
            stop.wait(pause - gap)
        out.line("")
        out.line(f"[{i}/{len(SAMPLES)}] {sample.name}: expect {sample.expect}")
        before = frames.count
        show(camera, i, sample.path)
        last_shown = time.monotonic()
        if not frames.wait_past(before, FRAME_TIMEOUT_S, stop):
            out.line("  (the frame was not analysed in time)")
        app.feedback.wait_idle(5.0)
        if sample.sent:
            expected_sent += 1
            if pharmacy is not None and not pharmacy.wait_scans(expected_sent, DELIVERY_TIMEOUT_S):
                out.line("  (not received yet)")

    out.line("")
    return _summary(app, pharmacy, expected_sent, out, no_broker if broker is None else "")


def _summary(
    app: Any, pharmacy: Pharmacy | None, expected: int, out: Output, no_broker: str
) -> int:
    snap = app.stats.snapshot()
    depth = app.status()["queue_depth"]
    reads = snap["reads"].get("ordonnance_numerique", 0)
    refused = sum(snap["refusals"].values())
    ignored = snap["ignored"].get("ins", 0)
    out.line(f"summary: {reads} ordonnance(s) read and committed, {snap['duplicates']} repeat(s) "
             f"not re-sent, {refused} code(s) refused, {ignored} INS code(s) ignored")
    if pharmacy is None:
        out.line(f"  {depth} scan(s) held in the outbox: they would be sent once a broker is "
                 f"reachable ({no_broker}).")
        return 0
    got = len(pharmacy.scans)
    seqs = [s["seq"] for s in pharmacy.scans]
    out.line(f"  the pharmacy system received {got} scan(s) (seq {seqs}); "
             f"{depth} left in the outbox")
    if got != expected:
        out.line(f"  expected {expected}: something went wrong (see the kiosk log lines above)")
        return 1
    return 0
