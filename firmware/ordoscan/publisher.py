"""The MQTT publisher: drains the outbox to the broker, in seq order, at least once.

One thread owns the paho client and does everything with it (connect, read,
write, publish): no paho state is shared between threads, and other threads
only set flags or queue small messages. A scan leaves the outbox only after
`on_publish` reports a successful PUBACK for it (reason code < 0x80; 0x10
"no matching subscribers" is a success). Every connection gets a fresh paho
client with a clean session, so paho's in-memory queue never outlives a
connection: after each (re)connect the outbox is resent from its lowest seq,
and the only duplicates are scans whose PUBACK was lost with the link (same
scan_id). A PUBACK with an error code leaves the row in place, reports a
fault and pauses with back-off; the retry sends one scan at a time until the
broker accepts again, so a later scan cannot overtake the refused one.

The thread sleeps in select() on the socket and a wake-up socket pair
together (a queue or an Event could not wait on the network as well).

Link liveness is our own: whenever an answer is due (CONNACK, PUBACK,
UNSUBACK) and nothing has come from the broker for keepalive/2, the link is
declared dead; an idle link is probed every keepalive/2 with an UNSUBSCRIBE of
a filter we never hold (no side effect, always answered). So a cut that closes
nothing is noticed within keepalive_s, whereas paho's own PINGREQ timing can
take twice that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ordoscan import __version__
from ordoscan.config import Config
from ordoscan.errors import OutboxError, PublisherError
from ordoscan.security import (
    Credentials,
    apply_credentials,
    describe_connect_error,
    explain_early_close,
    explain_tls_failure,
    load_credentials,
)

if TYPE_CHECKING:
    from ordoscan.outbox import Outbox

log = logging.getLogger("ordoscan.publisher")

# Delivered rows are deleted in batches: one fsync per batch instead of one per scan.
ACK_BATCH = 64
ACK_MAX_DELAY_S = 0.1
# CONNACK codes that mean "try again later" rather than "the installer must act".
_TRANSIENT_CONNACK = {0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F}
_OUTGOING_MAX = 64


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (0 first): random between low and a ceiling
    that doubles each attempt up to high, so a fleet never retries in lock-step."""
    ceiling = min(high, low * 2.0 ** min(attempt + 1, 60))
    return rng.uniform(low, max(low, ceiling))


def utc_now_text(now: float) -> str:
    """ISO 8601 UTC with milliseconds and Z, as in the scan message."""
    dt = datetime.fromtimestamp(now, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class _LastError(logging.Handler):
    """Keeps paho's last error line (a TLS alert, a socket error) to explain a disconnect."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.text = record.getMessage()


class _ScanProperties(Properties):
    """MQTT 5 properties of a scan PUBLISH: its remaining life, and that it is JSON text.

    Never changed once built, so packed once: paho would otherwise re-encode
    them for every message, which costs more than the publish itself."""

    def __init__(self, expiry_s: int) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self.MessageExpiryInterval = expiry_s
        self.PayloadFormatIndicator = 1
        self.ContentType = "application/json"
        # object.__setattr__: Properties only lets MQTT property names be set
        object.__setattr__(self, "_wire", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        wire: bytes = self.__dict__["_wire"]
        return wire


@dataclass(slots=True)
class _Sent:
    """A QoS 1 publish waiting for its PUBACK."""

    kind: str  # "scan", "status" or "reply"
    seq: int = 0
    scan_id: str = ""


class Publisher:
    """Relays queued scans to the broker and serves the kiosk's status, telemetry and commands."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        *,
        on_link: Callable[[bool], None] | None = None,
        on_fault: Callable[[str | None], None] | None = None,
        on_command: Callable[[str, bytes], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._outbox = outbox
        self._on_link = on_link
        self._on_fault = on_fault
        self._on_command = on_command
        self._clock = clock  # wall clock: message expiry and status times
        self._rng = rng or random.Random()
        m = cfg.mqtt
        self._v5 = m.protocol == "5"
        prefix = cfg.topic_prefix
        self.topic_scan = f"{prefix}/scan"
        self.topic_status = f"{prefix}/status"
        self.topic_telemetry = f"{prefix}/telemetry"
        self.topic_reply = f"{prefix}/reply"
        self._cmd_prefix = f"{prefix}/cmd/"
        # Never subscribed: unsubscribing it costs nothing and is always answered.
        self._probe_topic = f"{prefix}/cmd/.link-check"
        self._keepalive = m.keepalive_s
        self._silence_limit = m.keepalive_s / 2.0

        self._creds: Credentials | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._outgoing: queue.Queue[tuple[str, bytes, int]] = queue.Queue(maxsize=_OUTGOING_MAX)

        # --- owned by the publisher thread ---
        self._client: mqtt.Client | None = None
        self._up = False  # CONNACK received
        self._lost_reason: tuple[str, bool] | None = None
        self._inflight: dict[int, _Sent] = {}
        self._scans_inflight = 0
        self._cursor = 0  # highest seq published on this connection
        self._receive_max = 65535
        self._probe_mid: int | None = None
        self._last_inbound = 0.0  # monotonic
        self._waiting_since: float | None = None  # monotonic; an answer is due since then
        self._acked: list[int] = []
        self._first_ack_at = 0.0
        self._attempt = 0
        self._next_attempt = 0.0
        self._refusals = 0  # consecutive refused PUBACKs, for the retry back-off
        self._paused_until = 0.0
        self._restart_from_first = False
        # paho logs through this private logger: below WARNING nothing is even formatted
        # (an on_log callback would make paho format every packet's debug line).
        self._paho_errors = _LastError()
        self._paho_log = logging.Logger("ordoscan.paho", logging.WARNING)
        self._paho_log.addHandler(self._paho_errors)
        self._props: dict[int, Properties] = {}  # scan PUBLISH properties by expiry second

        # --- read by other threads (plain values) ---
        self._connected = False
        self._link_reported: bool | None = None
        self._fault_link: str | None = None
        self._fault_delivery: str | None = None
        self._fault_reported: str | None = None
        self._delivered = 0
        self._refused = 0
        self._reconnects = 0
        self._connects = 0
        self._inflight_peak = 0
        self._telemetry_dropped = 0
        self._replies_dropped = 0
        self._last_error: str | None = None
        self._last_delivery_at: float | None = None

    # --- public API ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the TLS and secret files (raises SecurityError), then connect in the background."""
        if self._thread is not None:
            raise PublisherError("the publisher is already started")
        self._creds = load_credentials(self.cfg.mqtt)
        for note in self._creds.notes:
            log.warning("%s", note)
        for problem in self._creds.problems:
            log.error("%s", problem)
            self._set_link_fault(problem)
        if self._wake_r.fileno() < 0:  # closed by an earlier stop()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ordoscan-publisher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A new row is in the outbox: publish it without waiting for the next tick."""
        with contextlib.suppress(OSError):  # a full pipe is already a pending wake-up
            self._wake_w.send(b"\0")

    def publish_telemetry(self, data: dict[str, object]) -> None:
        """{prefix}/telemetry, QoS 0; dropped while offline."""
        if not self._connected:
            self._telemetry_dropped += 1
            return
        self._queue("telemetry", data, 0)

    def reply(self, data: dict[str, object]) -> None:
        """{prefix}/reply, QoS 1 (an answer to a command); dropped while offline."""
        if not self._connected:
            self._replies_dropped += 1
            log.warning("reply dropped: not connected to the broker")
            return
        self._queue("reply", data, 1)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish the retained offline status, wait briefly for PUBACKs, disconnect.

        Unacknowledged scans simply stay in the outbox for the next start."""
        thread = self._thread
        if thread is None:
            return
        self._stop_deadline = time.monotonic() + max(0.0, timeout * 0.8)
        self._stop.set()
        self.wake()
        thread.join(timeout)
        if thread.is_alive():
            # Most likely blocked in a TCP/TLS connect (at most connect_timeout): harmless,
            # the rows are on disk and it ends by itself.
            log.warning("publisher thread did not end within %.1f s; leaving it", timeout)
            return
        self._thread = None
        for s in (self._wake_r, self._wake_w):
            s.close()

    @property
    def connected(self) -> bool:
        return self._connected

    def alive(self) -> bool:
        """True while the publisher thread runs (for the watchdog)."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry and `ordoscan check`."""
        return {
            "connected": self._connected,
            "delivered": self._delivered,
            "refused": self._refused,
            "inflight": self._scans_inflight,
            "inflight_peak": self._inflight_peak,
            "receive_maximum": self._receive_max,
            "connects": self._connects,
            "reconnects": self._reconnects,
            "telemetry_dropped": self._telemetry_dropped,
            "replies_dropped": self._replies_dropped,
            "last_error": self._last_error,
            "fault": self._fault_reported,
            "last_delivery_at": self._last_delivery_at,
        }

    # --- faults and link state (reported on change only) ---------------------------------------

    def _report(self) -> None:
        fault = self._fault_link or self._fault_delivery
        if fault != self._fault_reported:
            self._fault_reported = fault
            if self._on_fault:
                try:
                    self._on_fault(fault)
                except Exception:
                    log.exception("on_fault callback failed")
        link = self._connected
        if link != self._link_reported:
            self._link_reported = link
            if self._on_link:
                try:
                    self._on_link(link)
                except Exception:
                    log.exception("on_link callback failed")

    def _set_link_fault(self, text: str | None) -> None:
        self._fault_link = text
        self._report()

    def _set_delivery_fault(self, text: str | None) -> None:
        self._fault_delivery = text
        self._report()

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._client is None:
                    if self._wait_for_attempt():
                        self._open()
                else:
                    self._service()
            except Exception as e:  # a bug must not end the relay: drop the link, retry later
                log.exception("publisher error")
                self._lose(f"internal error: {type(e).__name__}: {e}", fault=False)
        try:
            self._shutdown()
        except Exception:
            log.exception("publisher shutdown error")

    def _queue(self, kind: str, data: dict[str, object], qos: int) -> None:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        try:
            self._outgoing.put_nowait((kind, body.encode("utf-8"), qos))
        except queue.Full:
            if kind == "telemetry":
                self._telemetry_dropped += 1
            else:
                self._replies_dropped += 1
                log.warning("%s dropped: too many messages waiting", kind)
            return
        self.wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    def _wait_for_attempt(self) -> bool:
        """Sleep until the next connection attempt (interruptible by stop); True when due."""
        while not self._stop.is_set():
            remaining = self._next_attempt - time.monotonic()
            if remaining <= 0:
                return True
            select.select([self._wake_r], [], [], min(remaining, 1.0))
            self._drain_wake()
            self._discard_outgoing()
        return False

    def _discard_outgoing(self) -> None:
        while True:
            try:
                kind, _, _ = self._outgoing.get_nowait()
            except queue.Empty:
                return
            if kind == "telemetry":
                self._telemetry_dropped += 1
            else:
                self._replies_dropped += 1

    def _status(self, state: str, reason: str | None = None, stamp: bool = True) -> bytes:
        data: dict[str, object] = {
            "state": state,
            "device_id": self.cfg.device.id,
            "site": self.cfg.device.site,
            "version": __version__,
        }
        if stamp:
            data["at"] = utc_now_text(self._clock())
        if reason:
            data["reason"] = reason
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    def _open(self) -> None:
        assert self._creds is not None
        m = self.cfg.mqtt
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else True,
        )
        apply_credentials(client, self._creds)
        # The will has no time stamp: the broker sends it, whenever it notices.
        client.will_set(
            self.topic_status, self._status("offline", "connection lost", stamp=False), 1, True
        )
        client.max_inflight_messages_set(0)  # the window is ours; paho must not queue
        client.max_queued_messages_set(0)
        client.connect_timeout = min(5.0, max(2.0, self._silence_limit))
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_unsubscribe = self._handle_unsubscribe
        client.enable_logger(self._paho_log)
        self._lost_reason = None
        self._paho_errors.text = None
        self._client = client
        self._up = False
        try:
            if self._v5:
                rc = client.connect(m.host, m.port, self._keepalive, clean_start=True)
            else:
                rc = client.connect(m.host, m.port, self._keepalive)
        except Exception as e:  # socket, TLS and name errors: explained, then retried
            text, fault = describe_connect_error(e, m)
            self._lose(text, fault)
            return
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lose(*explain_early_close(self._creds, f"{m.host}:{m.port}"))
            return
        now = time.monotonic()
        self._last_inbound = now
        self._waiting_since = now  # the CONNACK is due

    def _lose(self, reason: str, fault: bool) -> None:
        """Drop the connection (if any) and schedule the next attempt with back-off."""
        client, self._client = self._client, None
        was_up = self._up
        self._up = False
        if client is not None:
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._inflight.clear()
        self._scans_inflight = 0
        self._probe_mid = None
        self._waiting_since = None
        self._cursor = 0
        self._flush_acks()
        self._discard_outgoing()
        delay = backoff_delay(
            self._attempt, self.cfg.mqtt.reconnect_min_s, self.cfg.mqtt.reconnect_max_s, self._rng
        )
        self._attempt += 1
        self._next_attempt = time.monotonic() + delay
        self._last_error = reason
        if was_up:
            log.warning("connection lost: %s; reconnecting in %.1f s", reason, delay)
        else:
            log.warning("cannot connect: %s; retrying in %.1f s", reason, delay)
        self._connected = False
        if fault:
            self._set_link_fault(reason)
        else:
            self._report()

    def _outstanding(self) -> bool:
        return bool(self._inflight) or self._probe_mid is not None or not self._up

    def _inbound(self) -> None:
        now = time.monotonic()
        self._last_inbound = now
        self._waiting_since = None

    def _expect_answer(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def _service(self, draining: bool = False) -> None:
        """One turn: wait for the socket or a wake-up, read, write, keep the window full."""
        client = self._client
        assert client is not None
        sock = client.socket()
        if sock is None:
            self._lose(self._lost_reason[0] if self._lost_reason else "connection closed", False)
            return
        timeout = self._select_timeout()
        # TLS bytes already decrypted by OpenSSL are invisible to select(): read them now.
        buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if buffered:
            timeout = 0.0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select([sock, self._wake_r], wlist, [], timeout)
        except (OSError, ValueError):
            readable, writable = [sock], []
        if self._wake_r in readable:
            self._drain_wake()
        if sock in readable or buffered:
            client.loop_read()
        if self._client is client and (writable or client.want_write()):
            client.loop_write()
        if self._client is client:
            client.loop_misc()
        if self._client is client and self._lost_reason is not None:
            self._lose(*self._lost_reason)
            return
        if self._client is not client:
            return
        now = time.monotonic()
        if self._waiting_since is not None and now - self._waiting_since >= self._silence_limit:
            self._lose(
                f"no answer from the broker for {now - self._waiting_since:.1f} s "
                f"(keepalive_s = {self._keepalive}): the link is dead",
                False,
            )
            return
        if self._acked and (
            len(self._acked) >= ACK_BATCH
            or now - self._first_ack_at >= ACK_MAX_DELAY_S
            or self._scans_inflight == 0
        ):
            self._flush_acks()
        if not self._up or draining:
            return
        self._send_outgoing(client)
        self._fill_window(client, now)
        if (
            not self._outstanding()
            and now - self._last_inbound >= self._silence_limit
            and self._client is client
        ):
            rc, mid = client.unsubscribe(self._probe_topic)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._probe_mid = mid
                self._expect_answer()

    def _select_timeout(self) -> float:
        now = time.monotonic()
        deadline = now + 1.0
        if self._waiting_since is not None:
            deadline = min(deadline, self._waiting_since + self._silence_limit)
        elif self._up:
            deadline = min(deadline, self._last_inbound + self._silence_limit)
        if self._acked:
            deadline = min(deadline, self._first_ack_at + ACK_MAX_DELAY_S)
        if self._paused_until > now:
            deadline = min(deadline, self._paused_until)
        if self._stop.is_set():
            deadline = min(deadline, self._stop_deadline)
        return max(0.0, deadline - now)

    def _flush_acks(self) -> None:
        if not self._acked:
            return
        seqs, self._acked = self._acked, []
        try:
            self._outbox.ack_many(seqs)
        except OutboxError as e:
            # The rows stay and are sent again after the next reconnect (same scan_id).
            log.error("delivered scans could not be removed from the outbox: %s", e)
            self._last_error = str(e)

    def _send_outgoing(self, client: mqtt.Client) -> None:
        while len(self._inflight) < self._receive_max:
            try:
                kind, body, qos = self._outgoing.get_nowait()
            except queue.Empty:
                return
            topic = self.topic_telemetry if kind == "telemetry" else self.topic_reply
            info = client.publish(topic, body, qos=qos)
            if qos and info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._inflight[info.mid] = _Sent(kind)
                self._expect_answer()

    def _fill_window(self, client: mqtt.Client, now: float) -> None:
        if self._paused_until > now:
            return
        if self._restart_from_first:
            if self._scans_inflight:
                return  # let the window empty first, then resend in order
            self._restart_from_first = False
            self._cursor = 0
        # After a refusal, one scan at a time until the broker accepts one: if its policy
        # changes in the middle of a window, later scans must not overtake the refused one.
        window = 1 if self._refusals else self.cfg.mqtt.inflight
        free = min(window - self._scans_inflight, self._receive_max - len(self._inflight))
        if free <= 0:
            return
        try:
            rows = self._outbox.pending(limit=free, after_seq=self._cursor)
        except OutboxError as e:
            log.error("cannot read the outbox: %s", e)
            self._last_error = str(e)
            self._paused_until = now + 1.0
            return
        wall = self._clock()
        for row in rows:
            self._cursor = row.seq
            life = row.expires_at - wall
            if life <= 0:
                continue  # expired on the way: never sent, outbox.expire() counts it
            props = self._publish_properties(max(1, math.ceil(life))) if self._v5 else None
            info = client.publish(self.topic_scan, row.body, qos=1, retain=False, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS or self._client is not client:
                return  # the link went down while writing; on_disconnect has the reason
            self._inflight[info.mid] = _Sent("scan", row.seq, row.scan_id)
            self._scans_inflight += 1
            self._inflight_peak = max(self._inflight_peak, self._scans_inflight)
            self._expect_answer()

    def _publish_properties(self, expiry_s: int) -> Properties:
        """The properties of a scan with this remaining life (cached: rows of a burst share it)."""
        props = self._props.get(expiry_s)
        if props is None:
            if len(self._props) > 256:
                self._props.clear()
            props = self._props[expiry_s] = _ScanProperties(expiry_s)
        return props

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._up:
            info = client.publish(self.topic_status, self._status("offline", "stopped"), 1, True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._inflight[info.mid] = _Sent("status")
            while (
                self._client is client
                and self._inflight
                and time.monotonic() < self._stop_deadline
            ):
                self._service(draining=True)
            if self._client is client:
                client.disconnect()  # a clean DISCONNECT: the will is dropped, status says offline
                while client.want_write() and time.monotonic() < self._stop_deadline:
                    if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                        break
            log.info("disconnected (stopped); %d scan(s) delivered", self._delivered)
        self._flush_acks()
        client, self._client = self._client, None
        if client is not None:
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._up = False
        self._connected = False

    # --- paho callbacks (always on the publisher thread) ----------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        if client is not self._client:
            return
        self._inbound()
        m = self.cfg.mqtt
        if reason.is_failure:
            transient = reason.value in _TRANSIENT_CONNACK
            hint = "" if transient else " (check the certificate / user name and the broker's ACL)"
            self._lost_reason = (
                f"the broker {m.host}:{m.port} refused the connection: {reason}{hint}",
                not transient,
            )
            return
        self._up = True
        self._connected = True
        self._attempt = 0
        self._connects += 1
        if self._connects > 1:
            self._reconnects += 1
        self._receive_max = int(getattr(props, "ReceiveMaximum", 65535) or 65535)
        self._cursor = 0
        self._restart_from_first = False
        # Subscribe first: the broker handles packets in order, so whoever sees "online"
        # can already send a command.
        client.subscribe(self._cmd_prefix + "+", qos=1)
        info = client.publish(self.topic_status, self._status("online"), 1, True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._inflight[info.mid] = _Sent("status")
        self._expect_answer()
        try:
            self._outbox.expire()
            depth = self._outbox.stats().depth
        except OutboxError as e:
            log.error("outbox: %s", e)
            depth = -1
        log.info(
            "connected to %s:%d (MQTT %s, %s); %s scan(s) queued",
            m.host,
            m.port,
            m.protocol,
            "TLS" if self._creds and self._creds.tls else "plaintext",
            depth if depth >= 0 else "?",
        )
        self._fault_link = None
        self._report()

    def _handle_disconnect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if client is not self._client or self._lost_reason is not None:
            return
        if getattr(flags, "is_disconnect_packet_from_server", False):
            fault = reason.value == 0x8E  # session taken over: another client uses our client id
            extra = " (another client connected with the same client id)" if fault else ""
            self._lost_reason = (f"the broker closed the connection: {reason}{extra}", fault)
            return
        detail = self._paho_errors.text or str(reason)
        sentence = explain_tls_failure(detail)
        if sentence:
            self._lost_reason = (sentence, True)
        elif not self._up and self._creds is not None:
            m = self.cfg.mqtt
            self._lost_reason = explain_early_close(self._creds, f"{m.host}:{m.port}")
        else:
            self._lost_reason = (f"connection closed: {detail}", False)

    def _handle_publish(
        self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any
    ) -> None:
        if client is not self._client:
            return
        self._inbound()
        sent = self._inflight.pop(mid, None)
        if self._inflight or self._probe_mid is not None:
            self._expect_answer()
        if sent is None:
            return
        if sent.kind != "scan":
            if reason.is_failure:
                text = f"the broker refused our {sent.kind}: {reason} (0x{reason.value:02X})"
                log.error("%s", text)
                self._set_delivery_fault(text)
            return
        self._scans_inflight -= 1
        now = time.monotonic()
        if reason.is_failure:
            self._refused += 1
            text = (
                f"the broker refused scan seq {sent.seq} on {self.topic_scan}: {reason} "
                f"(0x{reason.value:02X})"
            )
            if reason.value == 0x87:
                text += "; its ACL must let this kiosk publish there"
            m = self.cfg.mqtt
            delay = backoff_delay(self._refusals, m.reconnect_min_s, m.reconnect_max_s, self._rng)
            if self._paused_until <= now:
                self._refusals += 1
                log.error("%s; kept in the outbox, retrying in %.1f s", text, delay)
            self._paused_until = max(self._paused_until, now + delay)
            self._restart_from_first = True
            self._last_error = text
            self._set_delivery_fault(text)
            return
        if not self._acked:
            self._first_ack_at = now
        self._acked.append(sent.seq)
        self._delivered += 1
        self._last_delivery_at = self._clock()
        if self._paused_until <= now and not self._restart_from_first:
            self._refusals = 0
            if self._fault_delivery is not None:
                log.info("the broker accepts scans again")
                self._set_delivery_fault(None)

    def _handle_subscribe(
        self, client: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any
    ) -> None:
        if client is not self._client:
            return
        self._inbound()
        if self._outstanding():
            self._expect_answer()
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            log.warning("the broker refused our command subscription: %s", refused[0])

    def _handle_unsubscribe(
        self, client: mqtt.Client, _u: Any, mid: int, _codes: Any, _p: Any
    ) -> None:
        if client is not self._client:
            return
        self._inbound()
        if mid == self._probe_mid:
            self._probe_mid = None
        if self._outstanding():
            self._expect_answer()

    def _handle_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if client is not self._client:
            return
        self._inbound()
        if self._outstanding():
            self._expect_answer()
        topic = msg.topic
        if not topic.startswith(self._cmd_prefix):
            return
        name = topic[len(self._cmd_prefix) :]
        if msg.retain:
            # A retained command would run again at every reconnect.
            log.warning("ignoring retained command %r (commands must not be retained)", name)
            return
        log.info("command %r received (%d bytes)", name, len(msg.payload))
        if self._on_command:
            try:
                self._on_command(name, bytes(msg.payload))
            except Exception:
                log.exception("command %r handler failed", name)
