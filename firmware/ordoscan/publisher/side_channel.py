"""The kiosk's messages besides scans: retained status, telemetry, replies, incoming commands.

Telemetry and replies are queued by other threads (housekeeping, the command
handler) and written by the publisher thread; while offline they are dropped
and counted, never queued for later (a stale reply or telemetry is useless).
"""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Callable

from ordoscan import __version__
from ordoscan.clock import Clock, iso_ms
from ordoscan.config import Config
from ordoscan.privacy import printable
from ordoscan.remote import MAX_COMMAND_BYTES, LogThrottle, held_note

log = logging.getLogger("ordoscan.publisher")

OUTGOING_MAX = 64
SHOWN_NAME_CHARS = 40  # a command name from the network is cut to this in a log line


class SideChannel:
    """Status payloads, the outgoing telemetry/reply queue, and the command topic."""

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        *,
        on_command: Callable[[str, bytes], None] | None,
        wake: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self._on_command = on_command
        self._wake = wake
        prefix = cfg.topic_prefix
        self.topic_status = f"{prefix}/status"
        self.topic_telemetry = f"{prefix}/telemetry"
        self.topic_reply = f"{prefix}/reply"
        self.cmd_prefix = f"{prefix}/cmd/"
        self._outgoing: queue.Queue[tuple[str, bytes, int]] = queue.Queue(maxsize=OUTGOING_MAX)
        self.telemetry_dropped = 0
        self.replies_dropped = 0
        self.commands_received = 0
        self.commands_oversized = 0
        self._log_commands = LogThrottle(1.0, burst=5, clock=clock)

    # --- status ---------------------------------------------------------------------------

    def status(self, state: str, reason: str | None = None, stamp: bool = True) -> bytes:
        """The retained `{prefix}/status` payload; the will has no time stamp (the broker
        sends it whenever it notices)."""
        data: dict[str, object] = {
            "state": state,
            "device_id": self.cfg.device.id,
            "site": self.cfg.device.site,
            "version": __version__,
        }
        if stamp:
            data["at"] = iso_ms(self._clock.wall())
        if reason:
            data["reason"] = reason
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    # --- telemetry and replies (any thread) ----------------------------------------------------

    def offer(self, kind: str, data: dict[str, object], qos: int, connected: bool) -> None:
        """Queue a telemetry ("telemetry", QoS 0) or reply ("reply", QoS 1) message."""
        if not connected:
            self._dropped(kind, "not connected to the broker")
            return
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        try:
            self._outgoing.put_nowait((kind, body.encode("utf-8"), qos))
        except queue.Full:
            self._dropped(kind, "too many messages waiting")
            return
        self._wake()

    def _dropped(self, kind: str, why: str) -> None:
        if kind == "telemetry":
            self.telemetry_dropped += 1
        else:
            self.replies_dropped += 1
            log.warning("%s dropped: %s", kind, why)

    def take(self) -> tuple[str, str, bytes, int] | None:
        """The next message to write: (kind, topic, body, qos), or None."""
        try:
            kind, body, qos = self._outgoing.get_nowait()
        except queue.Empty:
            return None
        topic = self.topic_telemetry if kind == "telemetry" else self.topic_reply
        return kind, topic, body, qos

    def discard(self) -> None:
        """The link is down: what waits is dropped (and counted)."""
        while True:
            try:
                kind, _, _ = self._outgoing.get_nowait()
            except queue.Empty:
                return
            if kind == "telemetry":
                self.telemetry_dropped += 1
            else:
                self.replies_dropped += 1

    # --- commands (publisher thread) -------------------------------------------------------

    def command(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on `{prefix}/cmd/…`: handed to the command handler (which validates it)."""
        if not topic.startswith(self.cmd_prefix):
            return
        name = topic[len(self.cmd_prefix) :]
        self.commands_received += 1
        # Sizes first, nothing parsed yet; every line about it throttled and made safe.
        held = self._log_commands.allow()
        shown = printable(name, SHOWN_NAME_CHARS)
        if len(payload) > MAX_COMMAND_BYTES:
            # the handler refuses it from its size alone (one reply, nothing parsed)
            self.commands_oversized += 1
            if held is not None:
                log.warning(
                    "command %s refused unread: %d bytes, over the limit of %d%s",
                    shown, len(payload), MAX_COMMAND_BYTES, held_note(held),
                )
            held = None
        if retained:
            # A retained command would run again at every reconnect.
            if held is not None:
                log.warning(
                    "ignoring retained command %s (commands must not be retained)%s",
                    shown, held_note(held),
                )
            return
        if held is not None:
            log.info("command %s received (%d bytes)%s", shown, len(payload), held_note(held))
        if self._on_command:
            try:
                self._on_command(name, payload)
            except Exception:
                log.exception("command %s handler failed", shown)
