"""provisioning/desk.toml, the desk example of docs/INSTALL.md, validates and runs as it is."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
from ordoscan.cli import main as cli_main
from ordoscan.devtools.demo_samples import SAMPLES_DIR

from tests.support.kiosk import ROOT, Daemon
from tests.support.mosquitto import Broker, Subscriber
from tests.support.wait import WaitTimeout

DESK = ROOT / "provisioning" / "desk.toml"


def test_the_desk_config_validates(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    assert cli_main(["config", "validate", "--config", str(DESK)]) == 0
    assert f"{DESK}: valid" in capsys.readouterr().out


def test_the_desk_config_is_the_one_install_md_shows() -> None:
    install = (ROOT / "docs" / "INSTALL.md").read_text()
    assert "provisioning/desk.toml" in install
    assert DESK.read_text().split("\n[device]", 1)[1] in install


def test_the_desk_kiosk_runs_and_delivers_the_samples(tmp_path: Path, broker: Broker) -> None:
    # only what is not this test's to take: the broker's port and the folders, which the
    # test's own; the camera folder filled as INSTALL.md says, with the demo's samples
    camera = tmp_path / "camera"
    camera.mkdir()
    for png in SAMPLES_DIR.glob("*.png"):
        shutil.copyfile(png, camera / png.name)
    env = {"ORDOSCAN_MQTT__PORT": str(broker.port), "ORDOSCAN_CAMERA__PATH": str(camera),
           "ORDOSCAN_OUTBOX__PATH": str(tmp_path / "outbox.sqlite3")}
    sub = Subscriber(broker.host, broker.port, ["pharmacy/desk/kiosk/desk-01/scan"],
                     client_id="desk-pharmacy")
    daemon = Daemon(DESK, env)
    try:
        try:
            sub.wait_for(lambda s: len(s.on("/scan")) >= 3, 120, "the three sample ordonnances")
        except WaitTimeout as e:
            raise AssertionError(f"{e}; the daemon's log:\n{daemon.text()}") from None
        assert daemon.wait_log(r"signal: good read"), daemon.text()
        assert daemon.wait_log(r"signal: refused"), daemon.text()
    finally:
        daemon.signal(signal.SIGTERM)
        rc = daemon.wait(30)
        sub.close()
    assert rc == 0, daemon.text()
    kinds = {json.loads(p)["kind"] for p in sub.on("/scan")}
    assert kinds == {"ordonnance_numerique"}
    assert len({json.loads(p)["payload"] for p in sub.on("/scan")}) == 3
