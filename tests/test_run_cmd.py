"""`ordoscan run` as a real child process: signals, crashes, sockets, bad config.

The daemon reads a TOML file like on a kiosk, with a replay camera following
a folder, gpio.pin_factory = "mock" and a plaintext loopback broker.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ordoscan.outbox import Outbox

from tests.support.kiosk import (
    PREFIX,
    ROOT,
    Camera,
    Daemon,
    kiosk_data,
    listening_sockets,
    payloads,
    scene,
    socket_count,
    write_config,
)
from tests.support.mosquitto import Broker, Subscriber, free_port

SCENES = (("ordonnance", 0), ("phone_dark", 1), ("ordonnance", 3))


def expected_payloads() -> list[str]:
    return [p for k, s in SCENES for p in payloads(scene(k, s), "ordonnance_numerique")]


def feed(daemon: Daemon, camera: Camera, count: int = len(SCENES)) -> None:
    """Show the scenes one by one, each once the previous one is queued."""
    for i, (kind, seed) in enumerate(SCENES[:count], 1):
        camera.show(scene(kind, seed))
        assert daemon.wait_log(rf"queued as seq {i}\b", 60), daemon.text()[-3000:]
        time.sleep(0.6)  # spacing: each code leaves the view (same_code_timeout_s = 0.5)


def pending_seqs(cfg: dict[str, object], tmp: Path) -> list[int]:
    path = tmp / "outbox" / "outbox.sqlite3"
    with Outbox(path, max_messages=100, max_age_h=24, device_id="kiosk-e2e",
                site="pharmacie-e2e", readonly=True) as o:
        return [s.seq for s in o.pending()]


def test_sigterm_stops_within_5_s_nothing_lost(tmp_path: Path, broker: Broker) -> None:
    data = kiosk_data(tmp_path, broker.port)
    config = write_config(data, tmp_path / "ordoscan.toml")
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/#"], client_id="run-sigterm")
    daemon = Daemon(config)
    try:
        assert daemon.wait_log(r"connected to 127\.0\.0\.1", 60), daemon.text()
        feed(daemon, Camera(tmp_path / "camera"), 2)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        rc = daemon.wait(10)
        elapsed = time.monotonic() - started
    finally:
        daemon.kill()
    assert rc == 0, daemon.text()[-3000:]
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert "SIGTERM received: stopping" in daemon.text()
    # the clean stop publishes the retained offline status
    assert sub.wait_for(lambda s: any(json.loads(p)["state"] == "offline"
                                      for p in s.on("/status")), 10)
    late = Subscriber(broker.host, broker.port, [f"{PREFIX}/status"], client_id="run-late")
    try:
        assert late.wait_for(lambda s: bool(s.messages), 10)
        _topic, body, retained = late.messages[0]
        assert retained and json.loads(body)["state"] == "offline"
    finally:
        late.close()
    # nothing lost: each scan was delivered or is still queued for the next start
    delivered = {json.loads(p)["seq"] for p in sub.on("/scan")}
    assert delivered | set(pending_seqs(data, tmp_path)) == {1, 2}
    sub.close()


def test_sigkill_with_scans_queued_then_restart_delivers_all(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", port=free_port())  # not started: the broker is down
    data = kiosk_data(tmp_path, broker.port)
    config = write_config(data, tmp_path / "ordoscan.toml")
    camera = Camera(tmp_path / "camera")
    daemon = Daemon(config)
    try:
        assert daemon.wait_log(r"\bready\b", 60), daemon.text()
        feed(daemon, camera)
        daemon.proc.send_signal(signal.SIGKILL)
        assert daemon.wait(10) == -signal.SIGKILL
    finally:
        daemon.kill()
    assert pending_seqs(data, tmp_path) == [1, 2, 3]
    for f in (tmp_path / "camera").iterdir():
        f.unlink()  # the counter is clear now: the restarted kiosk has nothing new to read

    broker.start()
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/scan"], client_id="run-sigkill")
    again = Daemon(config)
    try:
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 3, 60), again.text()[-3000:]
        again.signal(signal.SIGTERM)
        assert again.wait(10) == 0
    finally:
        again.kill()
        sub.close()
        broker.kill()
    got = [json.loads(p) for p in sub.on("/scan")]
    assert [m["seq"] for m in got] == [1, 2, 3]
    assert [m["payload"] for m in got] == expected_payloads()
    assert pending_seqs(data, tmp_path) == []


def test_the_daemon_listens_on_no_socket(tmp_path: Path, broker: Broker) -> None:
    data = kiosk_data(tmp_path, broker.port, mqtt={"telemetry_interval_s": 1})
    config = write_config(data, tmp_path / "ordoscan.toml")
    daemon = Daemon(config)
    try:
        assert daemon.wait_log(r"connected to 127\.0\.0\.1", 60), daemon.text()
        feed(daemon, Camera(tmp_path / "camera"), 1)
        assert socket_count(daemon.pid) >= 2  # the broker connection and the publisher's wake pipe
        assert listening_sockets(daemon.pid) == []
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(10)
        daemon.kill()


def test_inspection_does_see_a_listening_socket(tmp_path: Path, broker: Broker) -> None:
    """The check above can fail: a mosquitto (which listens) is caught by it."""
    assert broker.proc is not None
    found = listening_sockets(broker.proc.pid)
    assert any(f"tcp listening on 0100007F:{broker.port:04X}" == f for f in found), found


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    data = kiosk_data(tmp_path, 1883, gpio={"green": 99})
    config = write_config(data, tmp_path / "ordoscan.toml")
    r = subprocess.run([sys.executable, "-m", "ordoscan", "run", "--config", str(config)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert str(config) in r.stderr and "gpio.green" in r.stderr and "99" in r.stderr


def test_unusable_outbox_exits_1_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    data = kiosk_data(tmp_path, 1883, outbox={"path": str(blocker / "outbox.sqlite3")})
    config = write_config(data, tmp_path / "ordoscan.toml")
    r = subprocess.run([sys.executable, "-m", "ordoscan", "run", "--config", str(config)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert str(blocker) in r.stderr
    assert "Traceback" not in r.stderr


def test_run_gives_back_the_signal_mask_it_took(tmp_path: Path) -> None:
    """`run` blocks SIGTERM/SIGINT for its threads; a caller in the same process (a test, an
    embedding) gets its mask back on every exit, or every process it starts after would
    inherit the block and ignore SIGTERM."""
    from ordoscan.cli import main as cli_main

    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "k1\\n"\n')
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert cli_main(["run", "--config", str(bad)]) == 2
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert signal.SIGTERM not in before
