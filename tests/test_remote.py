"""Remote commands: validation, replies, the rate limit (SPEC §7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ordoscan.devtools.clock import ManualClock
from ordoscan.errors import CommandError
from ordoscan.remote import MAX_COMMAND_BYTES, RateLimit, Remote, parse_command


def test_empty_payload_is_a_command_without_arguments() -> None:
    for payload in (b"", b"  \n", ""):
        cmd = parse_command("ping", payload)
        assert (cmd.name, cmd.id, dict(cmd.args)) == ("ping", None, {})


def test_id_and_arguments_are_kept() -> None:
    cmd = parse_command("identify", b'{"id": "req-7", "seconds": 3}')
    assert cmd.id == "req-7"
    assert cmd.args == {"seconds": 3}
    assert parse_command("ping", b'{"id": 12}').id == 12


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("reboot", b"", "unknown command 'reboot' (known: identify, ping)"),
        ("Ping", b"", "malformed command name"),
        ("ping/../x", b"", "malformed command name"),
        ("ping", b"[1, 2]", "must be a JSON object, not list"),
        ("ping", b"{not json", "not valid JSON"),
        ("ping", b"\xff\xfe", "not UTF-8"),
        ("ping", b'{"id": true}', "'id' must be a string"),
        ("ping", b'{"id": "' + b"x" * 65 + b'"}', "'id' must be a string of at most 64"),
        ("ping", b'{"seconds": 3}', "unknown field 'seconds' for ping (allowed: id)"),
        ("identify", b'{"seconds": 0}', "'seconds' must be a number from 1 to 120"),
        ("identify", b'{"seconds": "10"}', "'seconds' must be a number"),
        ("identify", b'{"seconds": 1e9}', "'seconds' must be a number"),
        ("identify", b'{"colour": "red"}',
         "unknown field 'colour' for identify (allowed: id, seconds)"),
        ("ping", b" " * (MAX_COMMAND_BYTES + 1), "over the limit of 1024"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(name: str, payload: bytes, message: str) -> None:
    with pytest.raises(CommandError, match=None) as info:
        parse_command(name, payload)
    assert message in str(info.value)


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    payload = b"[" * 900 + b"]" * 900  # under the size limit, deeper than json can take in places
    with pytest.raises(CommandError):
        parse_command("ping", payload)


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=40), payload=st.binary(max_size=2048))
def test_any_input_is_either_a_command_or_a_command_error(name: str, payload: bytes) -> None:
    try:
        cmd = parse_command(name, payload)
    except CommandError:
        return
    assert cmd.name in {"identify", "ping"}


class Kiosk:
    """The two things commands act on, recorded so the test can look."""

    def __init__(self) -> None:
        self.identified: list[float] = []
        self.replies: list[dict[str, Any]] = []

    def remote(self, rate: RateLimit | None = None) -> Remote:
        return Remote(
            device_id="kiosk-t",
            identify=self.identified.append,
            status=lambda: {"queue_depth": 3, "broker": "connected"},
            reply=self.replies.append,
            rate=rate,
        )


def test_identify_runs_and_replies_with_the_id() -> None:
    k = Kiosk()
    answer = k.remote().handle("identify", b'{"id": "a1"}')
    assert k.identified == [10.0]
    assert k.replies == [answer]
    assert answer is not None
    assert answer["cmd"] == "identify" and answer["id"] == "a1" and answer["ok"] is True
    assert answer["result"] == {"identify_s": 10.0}
    assert answer["device_id"] == "kiosk-t" and answer["at"].endswith("Z")
    json.dumps(answer)  # the reply goes out as JSON


def test_ping_answers_with_the_status() -> None:
    k = Kiosk()
    answer = k.remote().handle("ping", b"")
    assert answer is not None and answer["ok"] is True
    assert answer["result"] == {"pong": True, "queue_depth": 3, "broker": "connected"}
    assert "id" not in answer


def test_unknown_command_gets_an_error_and_runs_nothing() -> None:
    k = Kiosk()
    answer = k.remote().handle("shutdown", b'{"id": 5}')
    assert k.identified == []
    assert answer is not None and answer["ok"] is False
    assert answer["id"] == 5 and answer["cmd"] == "shutdown"
    assert "unknown command 'shutdown'" in answer["error"]


def test_a_malformed_name_is_not_echoed() -> None:
    k = Kiosk()
    answer = k.remote().handle("x" * 200, b"")
    assert answer is not None and answer["cmd"] is None and answer["ok"] is False


def test_a_failing_action_is_an_error_reply_not_a_crash() -> None:
    replies: list[dict[str, Any]] = []

    def broken(seconds: float) -> None:
        raise RuntimeError("LED driver gone")

    remote = Remote(device_id="k", identify=broken, status=dict, reply=replies.append)
    answer = remote.handle("identify", b"")
    assert answer is not None and answer["ok"] is False and "RuntimeError" in answer["error"]
    assert replies == [answer]


def test_flood_is_cut_by_the_rate_limit() -> None:
    clock = ManualClock()
    rate = RateLimit(per_s=2.0, burst=3, clock=clock)
    k = Kiosk()
    remote = k.remote(rate)
    answers = [remote.handle("identify", b"") for _ in range(10)]
    assert sum(a is not None for a in answers) == 3
    assert len(k.identified) == 3 and len(k.replies) == 3
    clock.advance(1.0)  # two more tokens a second later
    assert [remote.handle("ping", b"") is not None for _ in range(3)] == [True, True, False]
