"""The publisher thread: drains the outbox to the broker, in seq order, at least once.

One thread owns the paho client and does everything with it (connect, read,
write, publish): no paho state is shared between threads, and other threads
only set flags or queue small messages. A scan leaves the outbox only after
`on_publish` reports a successful PUBACK for it (reason code < 0x80; 0x10
"no matching subscribers" is a success). After each (re)connect the outbox is
resent from its lowest seq, and the only duplicates are scans whose PUBACK was
lost with the link (same scan_id). A PUBACK with an error code leaves the row
in place, reports a fault and pauses with back-off (see DeliveryWindow).

The thread sleeps in select() on the socket and a wake-up socket pair
together (a queue or an Event could not wait on the network as well).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import select
import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ordoscan.backoff import Backoff
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import Config
from ordoscan.errors import OutboxError
from ordoscan.lifecycle import Service
from ordoscan.privacy import mask
from ordoscan.publisher.link import (
    MAX_INBOUND_PACKET,
    TRANSIENT_CONNACK,
    LastError,
    Liveness,
    PropertiesCache,
    TakeoverWatch,
    connect_properties,
    new_client,
)
from ordoscan.publisher.side_channel import SideChannel
from ordoscan.publisher.window import DeliveryWindow, Sent
from ordoscan.remote import LogThrottle, held_note
from ordoscan.security import (
    Credentials,
    broker_notes,
    describe_connect_error,
    explain_early_close,
    explain_tls_failure,
    load_credentials,
)

if TYPE_CHECKING:
    from ordoscan.outbox import Outbox

log = logging.getLogger("ordoscan.publisher")

IDLE_TURN_S = 1.0  # the longest select() wait: stop and wake-ups are seen at least this often
FAULT_DUPLICATE_ID = "duplicate_id"  # another client uses our client id (same device.id)


def shown_payload(body: bytes) -> str:
    """The masked identifier of a queued scan's message, for its log lines."""
    try:
        payload = json.loads(body).get("payload")
    except (ValueError, AttributeError):
        payload = None
    return mask(payload if isinstance(payload, str) else None)


MAX_ACK_BYTES = 1024


def parse_ack(payload: bytes) -> tuple[int, str] | str:
    """(seq, scan_id) of a pharmacy acknowledgement, or what is wrong with it (sized first)."""
    if len(payload) > MAX_ACK_BYTES:
        return f"{len(payload)} bytes, over the limit of {MAX_ACK_BYTES}"
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    seq, scan_id = data.get("seq"), data.get("scan_id")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "'seq' must be a positive integer"
    if not isinstance(scan_id, str) or not 1 <= len(scan_id) <= 64:
        return "'scan_id' must be a string of 1 to 64 characters"
    return seq, scan_id


class Publisher(Service):
    """Relays queued scans to the broker and serves the kiosk's status, telemetry and commands."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        *,
        on_link: Callable[[bool], None] | None = None,
        on_fault: Callable[[str | None], None] | None = None,
        on_command: Callable[[str, bytes], None] | None = None,
        on_alarm: Callable[[str, bool], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._outbox = outbox
        self._on_link = on_link
        self._on_fault = on_fault
        self._on_alarm = on_alarm
        self._clock = clock
        m = cfg.mqtt
        self._v5 = m.protocol == "5"
        self.topic_scan = f"{cfg.topic_prefix}/scan"
        self.topic_ack = f"{cfg.topic_prefix}/ack"
        self._pharmacy = m.delivery == "pharmacy"
        # failover: tried in order, each attempt after the usual jittered back-off
        self._brokers = m.brokers()
        self._broker_i = 0
        self._host_in_use: str | None = None  # "host:port" while connected
        # Never subscribed: unsubscribing it costs nothing and is always answered.
        self._probe_topic = f"{cfg.topic_prefix}/cmd/.link-check"
        self.side = SideChannel(cfg, clock, on_command=on_command, wake=self.wake)
        self._takeovers = TakeoverWatch()
        rng = rng or random.Random()
        self._reconnect = Backoff(m.reconnect_min_s, m.reconnect_max_s, jitter=True, rng=rng)
        self._retry = Backoff(m.reconnect_min_s, m.reconnect_max_s, jitter=True, rng=rng)

        self._creds: Credentials | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

        # --- owned by the publisher thread ---
        self._client: mqtt.Client | None = None
        self._up = False  # CONNACK received
        self._lost_reason: tuple[str, bool] | None = None
        self._taken_over = False  # the loss in _lost_reason was a session take-over
        self._window = DeliveryWindow(
            m.inflight, confirm=self._pharmacy, ack_timeout_s=m.ack_timeout_s
        )
        self._log_acks = LogThrottle(1.0, clock=clock)
        self._live = Liveness(m.keepalive_s / 2.0)
        self._next_attempt = 0.0
        self._props = PropertiesCache()
        # paho logs through this private logger: below WARNING nothing is even formatted
        # (an on_log callback would make paho format every packet's debug line).
        self._paho_errors = LastError()
        self._paho_log = logging.Logger("ordoscan.paho", logging.WARNING)
        self._paho_log.addHandler(self._paho_errors)

        # --- read by other threads (plain values) ---
        self._connected = False
        self._link_reported: bool | None = None
        self._fault_link: str | None = None
        self._fault_delivery: str | None = None
        self._fault_pharmacy: str | None = None  # sent, but the pharmacy does not confirm
        self._fault_reported: str | None = None
        self._delivered = 0  # good PUBACKs
        self._confirmed = 0  # acknowledged by the pharmacy (delivery = "pharmacy")
        self._resent = 0  # sent again after ack_timeout_s without the pharmacy's ack
        self._refused = 0
        self._reconnects = 0
        self._connects = 0
        self._last_error: str | None = None
        self._last_delivery_at: float | None = None

    # --- public API ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the TLS and secret files (raises SecurityError), then connect in the
        background. Idempotent: a running publisher is left as it is."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._creds = load_credentials(self.cfg.mqtt)
        for note in self._creds.notes:
            log.warning("%s", note)
        for problem in self._creds.problems:
            log.error("%s", problem)
            self._set_link_fault(problem)
        for note in broker_notes(self.cfg):
            log.warning("%s", note)
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
        self.side.offer("telemetry", data, 0, self._connected)

    def reply(self, data: dict[str, object]) -> None:
        """{prefix}/reply, QoS 1 (an answer to a command); dropped while offline."""
        self.side.offer("reply", data, 1, self._connected)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish the retained offline status, wait briefly for PUBACKs, disconnect.

        Unacknowledged scans simply stay in the outbox for the next start. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._stop_deadline = self._clock.monotonic() + max(0.0, timeout * 0.8)
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
        w = self._window
        return {
            "connected": self._connected,
            "delivered": self._delivered,
            "refused": self._refused,
            "inflight": w.scans,
            "inflight_peak": w.peak,
            "receive_maximum": w.receive_max,
            "connects": self._connects,
            "reconnects": self._reconnects,
            "telemetry_dropped": self.side.telemetry_dropped,
            "replies_dropped": self.side.replies_dropped,
            "last_error": self._last_error,
            "fault": self._fault_reported,
            "last_delivery_at": self._last_delivery_at,
            "duplicate_id": self._takeovers.active,
            "host": self._host_in_use,  # the broker in use (mqtt.hosts: which one)
            "delivery": self.cfg.mqtt.delivery,
            # "sent to the broker" (delivered) apart from "confirmed by the pharmacy"
            "sent_unconfirmed": len(w.unconfirmed),
            "confirmed": self._confirmed,
            "resent": self._resent,
        }

    # --- faults and link state (reported on change only) ---------------------------------------

    def _report(self) -> None:
        fault = self._fault_link or self._fault_delivery or self._fault_pharmacy
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

    def _alarm(self, name: str, active: bool) -> None:
        if self._on_alarm:
            try:
                self._on_alarm(name, active)
            except Exception:
                log.exception("on_alarm callback failed")

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

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    def _wait_for_attempt(self) -> bool:
        """Sleep until the next connection attempt (interruptible by stop); True when due."""
        while not self._stop.is_set():
            remaining = self._next_attempt - self._clock.monotonic()
            if remaining <= 0:
                return True
            select.select([self._wake_r], [], [], min(remaining, IDLE_TURN_S))
            self._drain_wake()
            self.side.discard()
        return False

    def _where(self) -> str:
        host, port = self._brokers[self._broker_i]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _open(self) -> None:
        assert self._creds is not None
        m = self.cfg.mqtt
        host, port = self._brokers[self._broker_i]
        client = new_client(
            client_id=self.cfg.client_id,
            v5=self._v5,
            creds=self._creds,
            will=(self.side.topic_status, self.side.status("offline", "connection lost", False)),
            connect_timeout=min(5.0, max(2.0, self._live.limit_s)),
            paho_log=self._paho_log,
            handlers={
                "on_connect": self._handle_connect,
                "on_disconnect": self._handle_disconnect,
                "on_publish": self._handle_publish,
                "on_message": self._handle_message,
                "on_subscribe": self._handle_subscribe,
                "on_unsubscribe": self._handle_unsubscribe,
            },
        )
        self._lost_reason = None
        self._paho_errors.text = None
        self._client = client
        self._up = False
        try:
            # TLS checks the certificate against this host's name
            if self._v5:
                rc = client.connect(
                    host, port, m.keepalive_s, clean_start=True,
                    properties=connect_properties(MAX_INBOUND_PACKET),
                )
            else:
                rc = client.connect(host, port, m.keepalive_s)
        except Exception as e:  # socket, TLS and name errors: explained, then retried
            text, fault = describe_connect_error(e, m.model_copy(update={"host": host,
                                                                          "port": port}))
            self._lose(text, fault)
            return
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lose(*explain_early_close(self._creds, self._where()))
            return
        self._live.connecting(self._clock.monotonic())

    def _lose(self, reason: str, fault: bool, taken_over: bool = False) -> None:
        """Drop the connection (if any) and schedule the next attempt with back-off."""
        client, self._client = self._client, None
        was_up = self._up
        if was_up and self._takeovers.lost(self._clock.monotonic(), taken_over):
            text = (
                f"another client keeps taking over our session (client id "
                f"{self.cfg.client_id!r}): two kiosks likely share device.id "
                f"{self.cfg.device.id!r}; give each kiosk its own id"
            )
            log.error("%s", text)
            self._alarm(FAULT_DUPLICATE_ID, True)
        self._up = False
        if client is not None:
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._window.closed()
        self._live.reset()
        self._host_in_use = None
        where = self._where()
        if len(self._brokers) > 1:  # the next broker of the list (then round again)
            self._broker_i = (self._broker_i + 1) % len(self._brokers)
            reason = f"{where}: {reason}; next: {self._where()}"
        self._flush_acks()
        self.side.discard()
        delay = self._reconnect.next()
        self._next_attempt = self._clock.monotonic() + delay
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
        return bool(self._window.inflight) or self._live.probe_mid is not None or not self._up

    def _answered(self) -> None:
        """Something came from the broker; more answers may still be due."""
        now = self._clock.monotonic()
        self._live.inbound(now)
        if self._outstanding():
            self._live.expect(now)

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
            text, fault = self._lost_reason
            self._lose(text, fault, taken_over=self._taken_over)
            return
        if self._client is not client:
            return
        now = self._clock.monotonic()
        if self._takeovers.settled(now):
            log.info("no other client has taken our session over for a while: cleared")
            self._alarm(FAULT_DUPLICATE_ID, False)
        silent = self._live.silence(now)
        if silent is not None:
            self._lose(
                f"no answer from the broker for {silent:.1f} s "
                f"(keepalive_s = {self.cfg.mqtt.keepalive_s}): the link is dead",
                False,
            )
            return
        if self._window.acks_due(now):
            self._flush_acks()
        if not self._up or draining:
            return
        self._send_side(client)
        self._fill_window(client, now)
        if self._client is client and self._live.probe_due(now, self._outstanding()):
            rc, mid = client.unsubscribe(self._probe_topic)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._live.probe_mid = mid
                self._live.expect(now)

    def _select_timeout(self) -> float:
        now = self._clock.monotonic()
        deadlines = [
            now + IDLE_TURN_S,
            self._live.deadline(self._up),
            self._window.deadline(now),
            self._stop_deadline if self._stop.is_set() else None,
        ]
        return max(0.0, min(d for d in deadlines if d is not None) - now)

    def _flush_acks(self) -> None:
        seqs = self._window.take_acks()
        if not seqs:
            return
        try:
            self._outbox.ack_many(seqs)
        except OutboxError as e:
            # The rows stay and are sent again after the next reconnect (same scan_id).
            log.error("delivered scans could not be removed from the outbox: %s", e)
            self._last_error = str(e)

    def _send_side(self, client: mqtt.Client) -> None:
        while self._window.room_for_others():
            item = self.side.take()
            if item is None:
                return
            kind, topic, body, qos = item
            info = client.publish(topic, body, qos=qos)
            if qos and info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._window.sent_other(info.mid, kind)
                self._live.expect(self._clock.monotonic())

    def _fill_window(self, client: mqtt.Client, now: float) -> None:
        self._check_overdue(now)
        free = self._window.room_for_scans(now)
        if free <= 0:
            return
        if self._window.restarting:
            self._flush_acks()  # a pass from the first row: what is confirmed is gone first
        try:
            rows = self._outbox.pending(limit=free, after_seq=self._window.cursor)
        except OutboxError as e:
            log.error("cannot read the outbox: %s", e)
            self._last_error = str(e)
            self._window.paused_until = now + 1.0
            return
        wall = self._clock.wall()
        for row in rows:
            life = row.expires_at - wall
            if life <= 0:
                self._window.skipped(row.seq)
                continue  # expired on the way: never sent, outbox.expire() counts it
            props = self._props.get(max(1, math.ceil(life))) if self._v5 else None
            info = client.publish(self.topic_scan, row.body, qos=1, retain=False, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS or self._client is not client:
                return  # the link went down while writing; on_disconnect has the reason
            self._window.sent_scan(info.mid, row.seq, row.scan_id, shown_payload(row.body))
            self._live.expect(now)

    def _check_overdue(self, now: float) -> None:
        late = self._window.overdue(now)
        if not late:
            return
        self._resent += len(late)
        seq, first = late[0]
        text = (
            f"{len(late)} scan(s) sent to the broker but not confirmed by the pharmacy within "
            f"{self.cfg.mqtt.ack_timeout_s:g} s (first: {first.shown} seq {seq})"
        )
        log.warning("%s: sending them again, same scan_id, in order", text)
        self._fault_pharmacy = text
        self._report()

    def _on_ack(self, payload: bytes) -> None:
        """`{prefix}/ack` from the pharmacy system: `{"scan_id": "...", "seq": N}`."""
        parsed = parse_ack(payload)
        if isinstance(parsed, str):
            held = self._log_acks.allow()
            if held is not None:
                log.warning("ignoring a message on %s: %s%s", self.topic_ack, parsed,
                            held_note(held))
            return
        seq, scan_id = parsed
        now = self._clock.monotonic()
        entry = self._window.confirmed(seq, scan_id, now)
        if entry is not None:
            shown = entry.shown
        else:  # sent on an earlier connection, or before a resend: the outbox says if it is ours
            try:
                rows = self._outbox.pending(limit=1, after_seq=seq - 1)
            except OutboxError as e:
                log.error("cannot read the outbox: %s", e)
                return
            if not rows or rows[0].seq != seq or rows[0].scan_id != scan_id:
                return  # already removed (a repeated ack), or not one of ours
            self._window.remove(seq, now)
            shown = shown_payload(rows[0].body)
        self._confirmed += 1
        log.info("scan %s seq %d confirmed by the pharmacy", shown, seq)
        if self._fault_pharmacy is not None:
            log.info("the pharmacy confirms scans again")
            self._fault_pharmacy = None
            self._report()

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._up:
            status = self.side.status("offline", "stopped")
            info = client.publish(self.side.topic_status, status, 1, True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._window.sent_other(info.mid, "status")
            while (
                self._client is client
                and self._window.inflight
                and self._clock.monotonic() < self._stop_deadline
            ):
                self._service(draining=True)
            if self._client is client:
                client.disconnect()  # a clean DISCONNECT: the will is dropped, status says offline
                while client.want_write() and self._clock.monotonic() < self._stop_deadline:
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
        self._live.inbound(self._clock.monotonic())
        m = self.cfg.mqtt
        if reason.is_failure:
            transient = reason.value in TRANSIENT_CONNACK
            hint = "" if transient else " (check the certificate / user name and the broker's ACL)"
            self._lost_reason = (
                f"the broker {self._where()} refused the connection: {reason}{hint}",
                not transient,
            )
            return
        self._up = True
        self._connected = True
        self._takeovers.connected(self._clock.monotonic())
        if not self._takeovers.active:  # two kiosks with one id: keep the long delays
            self._reconnect.reset()
        self._connects += 1
        if self._connects > 1:
            self._reconnects += 1
        self._window.opened(int(getattr(props, "ReceiveMaximum", 0) or 0))
        # Subscribe first: the broker handles packets in order, so whoever sees "online"
        # can already send a command.
        client.subscribe(self.side.cmd_prefix + "+", qos=1)
        if self._pharmacy:
            client.subscribe(self.topic_ack, qos=1)
        info = client.publish(self.side.topic_status, self.side.status("online"), 1, True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._window.sent_other(info.mid, "status")
        self._live.expect(self._clock.monotonic())
        try:
            self._outbox.expire()
            depth = self._outbox.stats().depth
        except OutboxError as e:
            log.error("outbox: %s", e)
            depth = -1
        self._host_in_use = self._where()
        log.info(
            "connected to %s (MQTT %s, %s); %s scan(s) queued",
            self._host_in_use,
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
        self._taken_over = False
        if getattr(flags, "is_disconnect_packet_from_server", False):
            self._taken_over = reason.value == 0x8E  # another client connected with our id
            extra = " (another client connected with our client id)" if self._taken_over else ""
            self._lost_reason = (f"the broker closed the connection: {reason}{extra}", False)
            return
        detail = self._paho_errors.text
        sentence = explain_tls_failure(detail or "")
        if sentence:
            self._lost_reason = (sentence, True)
        elif not self._up and self._creds is not None:
            self._lost_reason = explain_early_close(self._creds, self._where())
        elif detail is None:
            # paho says "Unspecified error" for a plain end of stream: name what happened
            self._lost_reason = (
                "the broker closed the connection without a word (the broker stopped or "
                "restarted, or something between us cut the link)",
                False,
            )
        else:
            self._lost_reason = (f"connection closed: {detail}", False)

    def _handle_publish(
        self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any
    ) -> None:
        if client is not self._client:
            return
        sent = self._window.answered(mid)
        self._answered()
        if sent is None:
            return
        if sent.kind != "scan":
            if reason.is_failure:
                text = f"the broker refused our {sent.kind}: {reason} (0x{reason.value:02X})"
                log.error("%s", text)
                self._set_delivery_fault(text)
            return
        if reason.is_failure:
            self._scan_refused(sent, reason)
            return
        now = self._clock.monotonic()
        self._delivered += 1
        self._last_delivery_at = self._clock.wall()
        # one line per scan, so support staff can prove from the journal where a scan went
        log.info("scan %s seq %d delivered to the broker", sent.shown, sent.seq)
        if self._window.delivered(sent, now):
            self._retry.reset()
            if self._fault_delivery is not None:
                log.info("the broker accepts scans again")
                self._set_delivery_fault(None)

    def _scan_refused(self, sent: Sent, reason: ReasonCode) -> None:
        self._refused += 1
        text = (
            f"the broker refused scan seq {sent.seq} on {self.topic_scan}: {reason} "
            f"(0x{reason.value:02X})"
        )
        if reason.value == 0x87:
            text += "; its ACL must let this kiosk publish there"
        now = self._clock.monotonic()
        delay = self._retry.next() if self._window.paused_until <= now else 0.0
        if self._window.refused(now, delay):
            log.error("%s; kept in the outbox, retrying in %.1f s", text, delay)
        self._last_error = text
        self._set_delivery_fault(text)

    def _handle_subscribe(
        self, client: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any
    ) -> None:
        if client is not self._client:
            return
        self._answered()
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            log.warning("the broker refused our command subscription: %s", refused[0])

    def _handle_unsubscribe(
        self, client: mqtt.Client, _u: Any, mid: int, _codes: Any, _p: Any
    ) -> None:
        if client is not self._client:
            return
        if mid == self._live.probe_mid:
            self._live.probe_mid = None
        self._answered()

    def _handle_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if client is not self._client:
            return
        self._answered()
        if msg.topic == self.topic_ack:
            if self._pharmacy:
                self._on_ack(bytes(msg.payload))
            return
        self.side.command(msg.topic, bytes(msg.payload), bool(msg.retain))
