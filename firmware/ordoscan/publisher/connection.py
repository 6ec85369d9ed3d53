"""The publisher thread's connection: the paho client from connect to close, and its callbacks.

Everything here runs on the publisher thread (paho's callbacks too, as the
thread drives the client's loop itself): one client per connection attempt,
and a callback from a client already dropped is ignored. The Publisher reads
`connected`, `connects`, `reconnects`, `host_in_use` and `duplicate_id` from
other threads (plain values), and hears of link faults through `report` and
`set_link_fault`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ordoscan.backoff import Backoff
from ordoscan.clock import Clock
from ordoscan.config import Config
from ordoscan.errors import OutboxError
from ordoscan.publisher.delivery import Courier
from ordoscan.publisher.link import (
    MAX_INBOUND_PACKET,
    TRANSIENT_CONNACK,
    LastError,
    Liveness,
    Subscriptions,
    TakeoverWatch,
    Waker,
    connect_properties,
    explain_close,
    new_client,
)
from ordoscan.publisher.side_channel import SideChannel
from ordoscan.security import (
    Credentials,
    describe_connect_error,
    explain_early_close,
)

if TYPE_CHECKING:
    from ordoscan.outbox import Outbox

log = logging.getLogger("ordoscan.publisher")

IDLE_TURN_S = 1.0  # the longest select() wait: stop and wake-ups are seen at least this often
FAULT_DUPLICATE_ID = "duplicate_id"  # another client uses our client id (same device.id)


class Connection:
    """The link to the broker as the publisher thread drives it, one `turn()` at a time."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        courier: Courier,
        side: SideChannel,
        *,
        waker: Waker,
        stop: threading.Event,
        clock: Clock,
        rng: random.Random,
        report: Callable[[], None],
        set_link_fault: Callable[[str | None], None],
        alarm: Callable[[str, bool], None],
        note_error: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self._outbox = outbox
        self._courier = courier
        self._window = courier.window
        self.side = side
        self._waker = waker
        self._stop = stop
        self._clock = clock
        self._report = report
        self._set_link_fault = set_link_fault
        self._alarm = alarm
        self._note_error = note_error
        m = cfg.mqtt
        self._v5 = m.protocol == "5"
        # failover: tried in order, each attempt after the usual jittered back-off
        self._brokers = m.brokers()
        self._broker_i = 0
        # Never subscribed: unsubscribing it costs nothing and is always answered.
        self._probe_topic = f"{cfg.topic_prefix}/cmd/.link-check"
        self._takeovers = TakeoverWatch()
        subs = {side.cmd_prefix + "+": "command"}
        if courier.pharmacy:
            subs[courier.topic_ack] = "pharmacy acknowledgement"
        self._subs = Subscriptions(subs)
        self._reconnect = Backoff(m.reconnect_min_s, m.reconnect_max_s, jitter=True, rng=rng)
        self.creds: Credentials | None = None  # loaded by Publisher.start()
        self.stop_deadline = 0.0  # set by Publisher.stop(): the last PUBACKs until then

        # --- owned by the publisher thread ---
        self._client: mqtt.Client | None = None
        self._up = False  # CONNACK received
        self._lost_reason: tuple[str, bool] | None = None
        self._taken_over = False  # the loss in _lost_reason was a session take-over
        self._live = Liveness(m.keepalive_s / 2.0)
        self._next_attempt = 0.0
        # paho logs through this private logger: below WARNING nothing is even formatted
        # (an on_log callback would make paho format every packet's debug line).
        self._paho_errors = LastError()
        self._paho_log = logging.Logger("ordoscan.paho", logging.WARNING)
        self._paho_log.addHandler(self._paho_errors)

        # --- read by other threads (plain values) ---
        self.connected = False
        self.connects = 0
        self.reconnects = 0
        self.host_in_use: str | None = None  # "host:port" while connected

    @property
    def duplicate_id(self) -> bool:
        """Another client keeps taking our session over (the duplicate_id fault)."""
        return self._takeovers.active

    def turn(self) -> None:
        """One step of the thread: wait for and make a connection attempt, or serve the link."""
        if self._client is None:
            if self._wait_for_attempt():
                self._open()
        else:
            self._service()

    def _wait_for_attempt(self) -> bool:
        """Sleep until the next connection attempt (interruptible by stop); True when due."""
        while not self._stop.is_set():
            remaining = self._next_attempt - self._clock.monotonic()
            if remaining <= 0:
                return True
            select.select([self._waker.fd], [], [], min(remaining, IDLE_TURN_S))
            self._waker.drain()
            self.side.discard()
        return False

    def _where(self) -> str:
        host, port = self._brokers[self._broker_i]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _open(self) -> None:
        assert self.creds is not None
        m = self.cfg.mqtt
        host, port = self._brokers[self._broker_i]
        client = new_client(
            client_id=self.cfg.client_id,
            v5=self._v5,
            creds=self.creds,
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
            self.lose(text, fault)
            return
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self.lose(*explain_early_close(self.creds, self._where()))
            return
        self._live.connecting(self._clock.monotonic())

    def lose(self, reason: str, fault: bool, taken_over: bool = False) -> None:
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
        self._subs.reset()
        self._live.reset()
        self.host_in_use = None
        where = self._where()
        if len(self._brokers) > 1:  # the next broker of the list (then round again)
            self._broker_i = (self._broker_i + 1) % len(self._brokers)
            reason = f"{where}: {reason}; next: {self._where()}"
        self._courier.flush()
        self.side.discard()
        delay = self._reconnect.next()
        self._next_attempt = self._clock.monotonic() + delay
        self._note_error(reason)
        if was_up:
            log.warning("connection lost: %s; reconnecting in %.1f s", reason, delay)
        else:
            log.warning("cannot connect: %s; retrying in %.1f s", reason, delay)
        self.connected = False
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
            self.lose(self._lost_reason[0] if self._lost_reason else "connection closed", False)
            return
        timeout = self._select_timeout()
        # TLS bytes already decrypted by OpenSSL are invisible to select(): read them now.
        buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if buffered:
            timeout = 0.0
        wlist = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select([sock, self._waker.fd], wlist, [], timeout)
        except (OSError, ValueError):
            readable, writable = [sock], []
        if self._waker.fd in readable:
            self._waker.drain()
        if sock in readable or buffered:
            client.loop_read()
        if self._client is client and (writable or client.want_write()):
            client.loop_write()
        if self._client is client:
            client.loop_misc()
        if self._client is client and self._lost_reason is not None:
            text, fault = self._lost_reason
            self.lose(text, fault, taken_over=self._taken_over)
            return
        if self._client is not client:
            return
        now = self._clock.monotonic()
        if self._takeovers.settled(now):
            log.info("no other client has taken our session over for a while: cleared")
            self._alarm(FAULT_DUPLICATE_ID, False)
        silent = self._live.silence(now)
        if silent is not None:
            self.lose(
                f"no answer from the broker for {silent:.1f} s "
                f"(keepalive_s = {self.cfg.mqtt.keepalive_s}): the link is dead",
                False,
            )
            return
        if self._window.acks_due(now):
            self._courier.flush()
        if not self._up or draining:
            return
        for topic in self._subs.due(now):
            self._subscribe(client, topic)
        self._send_side(client)

        def publish(body: bytes, props: Properties | None) -> int | None:
            info = client.publish(self._courier.topic_scan, body, qos=1, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS or self._client is not client:
                return None
            return info.mid

        if self._courier.fill(publish, now):
            self._live.expect(now)
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
            self._subs.deadline(),
            self.stop_deadline if self._stop.is_set() else None,
        ]
        return max(0.0, min(d for d in deadlines if d is not None) - now)

    def _subscribe(self, client: mqtt.Client, topic: str) -> None:
        rc, mid = client.subscribe(topic, qos=1)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._subs.sent(topic, mid)
            self._live.expect(self._clock.monotonic())

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

    def shutdown(self) -> None:
        client = self._client
        if client is not None and self._up:
            status = self.side.status("offline", "stopped")
            info = client.publish(self.side.topic_status, status, 1, True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._window.sent_other(info.mid, "status")
            while (
                self._client is client
                and self._window.inflight
                and self._clock.monotonic() < self.stop_deadline
            ):
                self._service(draining=True)
            if self._client is client:
                client.disconnect()  # a clean DISCONNECT: the will is dropped, status says offline
                while client.want_write() and self._clock.monotonic() < self.stop_deadline:
                    if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                        break
            log.info("disconnected (stopped); %d scan(s) delivered", self._courier.delivered)
        self._courier.flush()
        client, self._client = self._client, None
        if client is not None:
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._up = False
        self.connected = False

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
        self.connected = True
        self._takeovers.connected(self._clock.monotonic())
        if not self._takeovers.active:  # two kiosks with one id: keep the long delays
            self._reconnect.reset()
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self._window.opened(int(getattr(props, "ReceiveMaximum", 0) or 0))
        # Subscribe first: the broker handles packets in order, so whoever sees "online"
        # can already send a command.
        self._subs.reset()
        for topic in self._subs.topics:
            self._subscribe(client, topic)
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
        self.host_in_use = self._where()
        log.info(
            "connected to %s (MQTT %s, %s); %s scan(s) queued",
            self.host_in_use,
            m.protocol,
            "TLS" if self.creds and self.creds.tls else "plaintext",
            depth if depth >= 0 else "?",
        )
        self._set_link_fault(None)

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
        self._lost_reason = explain_close(
            self._paho_errors.text, self.creds if not self._up else None, self._where()
        )

    def _handle_publish(
        self, client: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any
    ) -> None:
        if client is not self._client:
            return
        sent = self._window.answered(mid)
        self._answered()
        if sent is not None:
            self._courier.answered(sent, reason)

    def _handle_subscribe(
        self, client: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any
    ) -> None:
        if client is not self._client:
            return
        self._answered()
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        self._subs.answered(mid, refused[0] if refused else None, self._clock.monotonic())

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
        if msg.topic == self._courier.topic_ack:
            if self._courier.pharmacy:
                self._courier.pharmacy_ack(bytes(msg.payload))
            return
        self.side.command(msg.topic, bytes(msg.payload), bool(msg.retain))
