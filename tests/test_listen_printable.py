"""`ordoscan listen` shows an attacker's message keys and topics escaped (issue 9 item 10)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from ordoscan.commands.listen import Listener
from ordoscan.config import parse_config

from tests.test_message import SPEC_EXAMPLE


def test_an_invalid_message_is_reported_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parse_config({"device": {"id": "k1"}, "mqtt": {"host": "127.0.0.1", "tls": False}},
                       env={})
    listener = Listener(cfg, count=0)
    body = {**SPEC_EXAMPLE, "\x1b[2J\u202ekey\x9b\nINFO forged": 1}  # valid but one key
    msg = SimpleNamespace(topic="pharmacy/x/scan\x1b[0m", payload=json.dumps(body).encode())
    listener.on_message(None, None, msg)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert listener.invalid == 1
    (line,) = err.splitlines()
    for raw in ("\x1b", "\u202e", "\x9b"):
        assert raw not in line
    assert "\\e[2J\\u202ekey\\x9b\\nINFO forged" in line and "scan\\e[0m" in line
