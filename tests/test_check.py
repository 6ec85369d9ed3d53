"""`ordoscan check`: the installer's self-test, run as the installer runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ordoscan.health import clock_synced
from ordoscan.outbox import Outbox

from tests.support.kiosk import ROOT, Camera, kiosk_data, scene, write_config
from tests.support.mosquitto import Broker, free_port

NAMES = ["config", "camera", "gpio", "broker", "outbox", "disk", "clock"]


def check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ordoscan", "check", "--config", str(config),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)


def rows(out: str) -> dict[str, tuple[str, str]]:
    """The table as {check: (result, detail)}."""
    found = {}
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] in NAMES:
            found[parts[0]] = (parts[1], parts[2])
    return found


def desk(tmp: Path, port: int, **sections: dict[str, Any]) -> Path:
    data = kiosk_data(tmp, port, **sections)
    Camera(tmp / "camera").show(scene("ordonnance", 0))
    data["camera"]["loop"] = True  # one picture, played again and again: frames keep coming
    return write_config(data, tmp / "ordoscan.toml")


def expected_rc(failed: set[str]) -> int:
    return 0 if not failed else 1


def test_a_good_desk_kiosk(tmp_path: Path, broker: Broker) -> None:
    config = desk(tmp_path, broker.port)
    r = check(config)
    table = rows(r.stdout)
    assert list(table) == NAMES, r.stdout
    for name in ("config", "camera", "gpio", "broker", "outbox", "disk"):
        assert table[name][0] == "ok", (name, table[name])
    assert "3 frames (1280x720)" in table["camera"][1]
    assert "BCM pins green 17, amber 27, red 22, buzzer 18" in table["gpio"][1]
    assert f"127.0.0.1:{broker.port}: connected" in table["broker"][1]
    assert "not created yet" in table["outbox"][1]
    synced = clock_synced()
    assert table["clock"][0] == ("ok" if synced else "FAIL")
    failed = set() if synced else {"clock"}
    assert r.returncode == expected_rc(failed), r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last == ("all checks passed" if not failed else "FAILED: clock")


def test_json_names_what_failed(tmp_path: Path) -> None:
    config = desk(tmp_path, free_port())  # nothing listens there
    r = check(config, "--json")
    out = json.loads(r.stdout)
    by_name = {c["name"]: c for c in out["checks"]}
    assert list(by_name) == NAMES
    assert by_name["broker"]["status"] == "FAIL"
    assert by_name["broker"]["data"]["reachable"] is False
    assert "127.0.0.1" in by_name["broker"]["detail"]
    assert by_name["camera"]["status"] == "ok" and by_name["camera"]["data"]["frames"] == 3
    assert "broker" in out["failed"] and out["ok"] is False
    assert set(out["failed"]) == {c["name"] for c in out["checks"] if c["status"] == "FAIL"}
    assert r.returncode == 1


def test_camera_without_frames_and_gpio_that_cannot_be_claimed(
    tmp_path: Path, broker: Broker
) -> None:
    data = kiosk_data(tmp_path, broker.port, gpio={"pin_factory": "lgpio"})  # no GPIO chip here
    config = write_config(data, tmp_path / "ordoscan.toml")  # the camera folder stays empty
    r = check(config)
    table = rows(r.stdout)
    assert table["camera"][0] == "FAIL" and "gave 0 of 3 frames" in table["camera"][1]
    # a small replay folder: the hint says what to change
    assert "set camera.loop = true, or put at least 3 images in" in table["camera"][1]
    assert table["gpio"][0] == "FAIL" and "gpio.pin_factory = 'lgpio'" in table["gpio"][1]
    assert table["broker"][0] == "ok"
    assert r.returncode == 1
    assert r.stdout.strip().splitlines()[-1].startswith("FAILED: camera, gpio")


def test_outbox_with_scans_and_a_damaged_one(tmp_path: Path, broker: Broker) -> None:
    config = desk(tmp_path, broker.port)
    path = tmp_path / "outbox" / "outbox.sqlite3"
    with Outbox(path, max_messages=100, max_age_h=24, device_id="kiosk-e2e",
                site="pharmacie-e2e") as o:
        for _ in range(2):
            o.put(kind="ordonnance_numerique", symbology="QRCode", symbology_id="]Q1",
                  payload="01S2TBPZ2JCNZZYGHZ", clock_synced=True)
    table = rows(check(config).stdout)
    assert table["outbox"][0] == "ok"
    assert "integrity ok, 2 scan(s) queued, last seq 2" in table["outbox"][1]

    path.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 2000)  # a damaged file
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)
    r = check(config)
    table = rows(r.stdout)
    assert table["outbox"][0] == "FAIL", table["outbox"]
    assert str(path) in table["outbox"][1]
    assert "next: restart the daemon" in table["outbox"][1]
    assert r.returncode == 1


def test_bad_config_exits_2_and_skips_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "ordoscan.toml"
    config.write_text('[mqtt]\nhost = "broker.example"\ntls = false\n')
    r = check(config)
    table = rows(r.stdout)
    assert table["config"][0] == "FAIL"
    assert str(config) in table["config"][1] and "mqtt.tls" in table["config"][1]
    assert all(table[n][0] == "skipped" for n in NAMES[1:])
    assert r.returncode == 2


def test_a_csi_camera_on_a_desk_says_what_to_install(tmp_path: Path, broker: Broker) -> None:
    data = kiosk_data(tmp_path, broker.port, camera={"source": "picamera2", "path": ""})
    table = rows(check(write_config(data, tmp_path / "ordoscan.toml")).stdout)
    assert table["camera"][0] == "FAIL"
    assert "picamera2 is not available" in table["camera"][1]
    assert "python3-picamera2" in table["camera"][1]


def test_check_refuses_what_run_would_refuse(tmp_path: Path) -> None:
    data = kiosk_data(tmp_path, free_port())
    data["mqtt"].update({"username": "kiosk", "password_file": str(tmp_path / "password")})
    (tmp_path / "password").write_text("secret\n")
    (tmp_path / "password").chmod(0o644)
    r = check(write_config(data, tmp_path / "ordoscan.toml"))
    table = rows(r.stdout)
    assert table["config"][0] == "FAIL" and "mqtt.password_file" in table["config"][1]
    assert r.returncode == 2


def test_the_camera_check_says_whether_the_exposure_is_capped() -> None:
    from ordoscan.commands.check import _exposure_note

    assert _exposure_note(None) == ""  # a replay
    assert _exposure_note({"by": "kiosk", "exposure_us": 4000, "cap_us": 8000, "gain": 3,
                           "gain_max": 255, "failed": False}) == (
        "; exposure: the kiosk's, capped at 8 ms")
    assert _exposure_note({"by": "camera", "exposure_us": 8000, "gain": 2.0,
                           "cap_us": 8000}) == "; exposure: the camera's, capped at 8 ms"
    assert "uncapped" in _exposure_note({"by": "camera"})  # a USB camera left to its own
