"""provisioning/install.sh, the quick part: bad input is refused with a clear
message (exit 2) before anything on the machine is touched, and the config
template gives a configuration ordoscan accepts. The real installation on a
fresh Debian root is in test_provisioning_root.py (slow)."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from ordoscan.config import parse_config
from ordoscan.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "provisioning" / "install.sh"
TEMPLATE = ROOT / "provisioning" / "ordoscan.toml.in"


NEW = ["install", "--site", "p", "--broker", "b"]  # a valid start, completed by each case


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # As an unprivileged user: should a check ever let bad input through, the
    # script stops at its root check (exit 1, the test fails) instead of
    # installing anything on this machine.
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0:
        drop = []
    return subprocess.run([*drop, "bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, cwd="/")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["install", "--site", "pharmacie du port", "--broker", "b"], "--site 'pharmacie du port'"),
        ([*NEW, "--device-id", "kiosk/1"], "--device-id 'kiosk/1'"),
        (["install", "--site", "p", "--broker", "broker;reboot"], "--broker 'broker;reboot'"),
        ([*NEW, "--port", "70000"], "--port '70000'"),
        ([*NEW, "--port", "x"], "--port 'x'"),
        (["install", "--site"], "--site needs a value"),
        ([*NEW, "--colour", "red"], "unknown option '--colour'"),
        ([*NEW, "--source", "/nonexistent/ordoscan"],
         "no such file or folder"),
        ([*NEW, "--source", str(TEMPLATE)], "not an ordoscan wheel"),
        ([*NEW, "--ca", str(TEMPLATE)], "not a PEM certificate"),
        (["install-cert"], "give the signed certificate file"),
        (["install-cert", "/nonexistent.crt"], "no such file"),
        (["install-cert", str(TEMPLATE)], "is not a PEM certificate"),
        (["appliance"], "appliance: say 'enable --data DEVICE"),
        (["appliance", "enable"], "give --data DEVICE"),
        (["uninstall", "--purge"], "add --yes to confirm"),
        (["set-password", "extra"], "reads the password on standard input"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(args: list[str], message: str) -> None:
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert r.stdout == ""  # nothing was done, nothing announced


def test_help_lists_every_command() -> None:
    r = run("--help")
    assert r.returncode == 0
    commands = ("install", "csr", "install-cert", "set-password", "appliance", "status",
                "uninstall")
    for command in commands:
        assert re.search(rf"^  {command}\b", r.stdout, re.M), command
    assert run().returncode == 2  # no command: usage on stderr, exit 2


def render(**values: str) -> str:
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def test_template_placeholders_are_the_ones_the_script_fills() -> None:
    placeholders = set(re.findall(r"@([A-Z_]+)@", TEMPLATE.read_text()))
    script = SCRIPT.read_text()
    filled = set(re.findall(r'-e "s\|@([A-Z_]+)@\|', script))
    assert placeholders == filled, (placeholders, filled)


@pytest.mark.parametrize("username", ["", "kiosk-c0ffee42"])
def test_template_gives_a_valid_kiosk_config(username: str) -> None:
    text = render(DEVICE_ID="c0ffee42", SITE="pharmacie-du-port", BROKER_HOST="lgo.pharmacie.lan",
                  BROKER_PORT="8883", USERNAME=username,
                  PASSWORD_FILE="/etc/ordoscan/mqtt.password" if username else "")
    cfg = parse_config(tomllib.loads(text), str(TEMPLATE), env={})
    assert cfg.device.id == "c0ffee42"
    assert cfg.topic_prefix == "pharmacy/pharmacie-du-port/kiosk/c0ffee42"
    assert cfg.mqtt.tls is True and cfg.mqtt.port == 8883
    assert cfg.mqtt.key_file == "/etc/ordoscan/device.key"
    assert cfg.mqtt.cert_file == "/etc/ordoscan/device.crt"
    assert cfg.mqtt.ca_file == "/etc/ordoscan/ca.crt"
    assert cfg.camera.source == "picamera2" and cfg.gpio.pin_factory == "lgpio"
    # the outbox lives in the unit's StateDirectory
    assert cfg.outbox.path.startswith("/var/lib/ordoscan/")


def test_template_with_a_bad_value_is_caught_by_the_config_check() -> None:
    # what `install` relies on when it runs `ordoscan config validate` on the result
    text = render(DEVICE_ID="c0ffee42", SITE="p", BROKER_HOST="h", BROKER_PORT="0",
                  USERNAME="", PASSWORD_FILE="")
    with pytest.raises(ConfigError, match="port"):
        parse_config(tomllib.loads(text), str(TEMPLATE), env={})
