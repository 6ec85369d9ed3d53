"""Remote commands on `{prefix}/cmd/{name}`, answered on `{prefix}/reply` (SPEC §7).

Anyone who may publish on the broker reaches these, so the rules are strict:
a payload is at most MAX_COMMAND_BYTES of UTF-8, either empty or one JSON
object with known fields only; an unknown command is answered with an error and
never executed; a flood is cut by a rate limit rather than queued. Every
accepted or refused command gets exactly one reply, which echoes the optional
`id` so the sender can match it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ordoscan.clock import SYSTEM_CLOCK, Clock, iso_ms
from ordoscan.errors import CommandError
from ordoscan.feedback import IDENTIFY_MAX_S, IDENTIFY_S

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 1024
MAX_ID_CHARS = 64
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

# command name -> fields it accepts besides "id"
COMMANDS: dict[str, frozenset[str]] = {
    "identify": frozenset({"seconds"}),
    "ping": frozenset(),
}


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command: its name, the caller's id (echoed) and its arguments."""

    name: str
    id: str | int | None = None
    args: Mapping[str, Any] = field(default_factory=dict)


def _shown_name(name: str) -> str | None:
    """The command name as it may be echoed back: only a well-formed one."""
    return name if _NAME.match(name) else None


def parse_command(name: str, payload: bytes | str) -> Command:
    """Validate one command; raises CommandError saying what is wrong."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if not _NAME.match(name):
        raise CommandError(
            "malformed command name (expected lower-case letters, digits, '_' or '-')"
        )
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r} (known: {', '.join(sorted(COMMANDS))})")
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandError(f"payload of {len(raw)} bytes is over the limit of {MAX_COMMAND_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None
    if not text.strip():
        return Command(name)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CommandError("payload is not valid JSON (send a JSON object or nothing)") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, not {type(data).__name__}")
    cid = data.pop("id", None)
    if cid is not None and not (
        (isinstance(cid, str) and len(cid) <= MAX_ID_CHARS)
        or (isinstance(cid, int) and not isinstance(cid, bool))
    ):
        raise CommandError(
            f"'id' must be a string of at most {MAX_ID_CHARS} characters or an integer"
        )
    allowed = COMMANDS[name]
    unknown = sorted(set(data) - allowed)
    if unknown:
        known = ", ".join(["id", *sorted(allowed)])
        # field names are echoed only truncated: they come from the network
        raise CommandError(f"unknown field {unknown[0][:32]!r} for {name} (allowed: {known})")
    if name == "identify" and "seconds" in data:
        s = data["seconds"]
        if isinstance(s, bool) or not isinstance(s, int | float) or not 1 <= s <= IDENTIFY_MAX_S:
            raise CommandError(f"'seconds' must be a number from 1 to {IDENTIFY_MAX_S:g}")
    return Command(name, cid, data)


def _id_of(payload: bytes | str) -> str | int | None:
    """Best effort: the caller's id from a refused payload, so even an error can be matched
    (an oversized payload is never parsed, not even for its id)."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, TypeError, RecursionError):
        return None
    if isinstance(data, dict):
        cid = data.get("id")
        if (isinstance(cid, str) and len(cid) <= MAX_ID_CHARS) or (
            isinstance(cid, int) and not isinstance(cid, bool)
        ):
            return cid
    return None


class RateLimit:
    """A token bucket: `burst` commands at once, then `per_s` a second."""

    def __init__(self, per_s: float, burst: int, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.per_s, self.burst, self._clock = per_s, burst, clock
        self._tokens = float(burst)
        self._at = clock.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class LogThrottle:
    """Lets through `burst` log lines, then one every `every_s`, and counts what it held back,
    so a flood of messages from the network cannot flood the journal."""

    def __init__(self, every_s: float, burst: int = 5, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._rate = RateLimit(per_s=1.0 / every_s, burst=burst, clock=clock)
        self.held = 0  # lines not written since the last one that was

    def allow(self) -> int | None:
        """None: do not log this one; else the count of lines held back before it (to say so)."""
        if not self._rate.allow():
            self.held += 1
            return None
        held, self.held = self.held, 0
        return held


def held_note(held: int) -> str:
    """The tail of a throttled log line that says how many like it were not written."""
    return f" ({held} similar line(s) not logged)" if held else ""


class Remote:
    """Validates and runs remote commands; each gets one reply through `reply`."""

    def __init__(
        self,
        *,
        device_id: str,
        identify: Callable[[float], None],
        status: Callable[[], Mapping[str, Any]],
        reply: Callable[[dict[str, Any]], None],
        rate: RateLimit | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.device_id = device_id
        self._identify = identify
        self._status = status
        self._reply = reply
        self._clock = clock
        self._rate = rate or RateLimit(per_s=2.0, burst=10, clock=clock)
        self._dropped = 0
        self._log_drop = LogThrottle(10.0, burst=1, clock=clock)
        self._log_refused = LogThrottle(1.0, clock=clock)

    def handle(self, name: str, payload: bytes | str) -> dict[str, Any] | None:
        """Run one command; returns the reply sent (None when the rate limit dropped it).

        Called on the MQTT client's thread, so it does nothing slow: identify
        only starts a blink and ping reads counters.
        """
        if not self._rate.allow():
            self._dropped += 1
            if self._log_drop.allow() is not None:
                log.warning(
                    "remote commands arrive too fast: %d dropped without a reply so far",
                    self._dropped,
                )
            return None
        base: dict[str, Any] = {"cmd": _shown_name(name), "device_id": self.device_id}
        try:
            cmd = parse_command(name, payload)
        except CommandError as e:
            cid = _id_of(payload)
            answer = base | ({"id": cid} if cid is not None else {})
            answer |= {"ok": False, "error": str(e)}
            held = self._log_refused.allow()
            if held is not None:
                log.warning("remote command refused: %s%s", e, held_note(held))
        else:
            answer = base | ({"id": cmd.id} if cmd.id is not None else {})
            try:
                answer |= {"ok": True, "result": self._run(cmd)}
            except Exception as e:  # a failing command must not take the MQTT thread down
                log.exception("remote command %s failed", cmd.name)
                answer |= {"ok": False, "error": f"{cmd.name} failed: {type(e).__name__}"}
        answer["at"] = iso_ms(self._clock.wall())
        try:
            self._reply(answer)
        except Exception:
            log.exception("could not send the reply to %s", answer.get("cmd"))
        return answer

    def _run(self, cmd: Command) -> dict[str, Any]:
        if cmd.name == "identify":
            seconds = float(cmd.args.get("seconds", IDENTIFY_S))
            log.info("identify: all LEDs blinking for %g s (remote command)", seconds)
            self._identify(seconds)
            return {"identify_s": seconds}
        if cmd.name == "ping":
            return {"pong": True, **self._status()}
        raise CommandError(f"unknown command {cmd.name!r}")  # COMMANDS and _run disagree: a bug
