"""The link to the broker: one paho client per connection, and whether it still answers.

Every connection gets a fresh paho client with a clean session, so paho's
in-memory queue never outlives a connection (the outbox is the only queue).
paho never queues or windows on its own: the publisher's DeliveryWindow does.

Link liveness is our own (`Liveness`, pure): whenever an answer is due
(CONNACK, PUBACK, UNSUBACK) and nothing has come from the broker for
keepalive/2, the link is declared dead; an idle link is probed every
keepalive/2 with an UNSUBSCRIBE of a filter we never hold (no side effect,
always answered). So a cut that closes nothing is noticed within keepalive_s,
whereas paho's own PINGREQ timing can take twice that.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ordoscan.backoff import Backoff
from ordoscan.security import (
    Credentials,
    apply_credentials,
    explain_early_close,
    explain_tls_failure,
)

log = logging.getLogger("ordoscan.publisher")

# CONNACK codes that mean "try again later" rather than "the installer must act".
TRANSIENT_CONNACK = frozenset({0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F})
# The largest packet the kiosk accepts (MQTT 5 Maximum Packet Size on CONNECT): the broker
# then never forwards a bigger one (a command is at most 1 KiB, an ack a few dozen bytes),
# so a huge message on a command topic never reaches a kiosk's memory.
MAX_INBOUND_PACKET = 8192


class Waker:
    """A socket pair the publisher thread's select() also waits on, so other threads can
    wake it (a queue or an Event could not be waited on together with the network)."""

    def __init__(self) -> None:
        self.fd, self._w = socket.socketpair()
        self.open()

    def open(self) -> None:
        if self.fd.fileno() < 0:  # closed by an earlier close()
            self.fd, self._w = socket.socketpair()
        self.fd.setblocking(False)
        self._w.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe is already a pending wake-up
            self._w.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self.fd.recv(4096):
                pass

    def close(self) -> None:
        self.fd.close()
        self._w.close()


def explain_close(
    paho_error: str | None, creds: Credentials | None, where: str
) -> tuple[str, bool]:
    """Why a connection closed without a DISCONNECT from the broker, and whether the installer
    must act: a TLS refusal, a close before CONNACK (`creds` given), or the end of the stream."""
    sentence = explain_tls_failure(paho_error or "")
    if sentence:
        return sentence, True
    if creds is not None:
        return explain_early_close(creds, where)
    if paho_error is None:
        # paho says "Unspecified error" for a plain end of stream: name what happened
        return (
            "the broker closed the connection without a word (the broker stopped or "
            "restarted, or something between us cut the link)",
            False,
        )
    return f"connection closed: {paho_error}", False


class LastError(logging.Handler):
    """Keeps paho's last error line (a TLS alert, a socket error) to explain a disconnect."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.text = record.getMessage()


class Liveness:
    """Whether the broker still answers, from the times packets came and answers fell due."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s  # keepalive/2
        self.last_inbound = 0.0
        self.waiting_since: float | None = None  # an answer is due since then
        self.probe_mid: int | None = None

    def connecting(self, now: float) -> None:
        """A CONNECT was written: the CONNACK is due."""
        self.last_inbound = now
        self.waiting_since = now
        self.probe_mid = None

    def reset(self) -> None:
        self.waiting_since = None
        self.probe_mid = None

    def inbound(self, now: float) -> None:
        """Something came from the broker."""
        self.last_inbound = now
        self.waiting_since = None

    def expect(self, now: float) -> None:
        """An answer is due (a publish or probe went out, or more answers are pending)."""
        if self.waiting_since is None:
            self.waiting_since = now

    def silence(self, now: float) -> float | None:
        """Seconds without an answer that was due, once past the limit (the link is dead)."""
        if self.waiting_since is not None and now - self.waiting_since >= self.limit_s:
            return now - self.waiting_since
        return None

    def probe_due(self, now: float, outstanding: bool) -> bool:
        """An idle link (nothing outstanding) quiet for the limit gets a probe."""
        return not outstanding and now - self.last_inbound >= self.limit_s

    def deadline(self, up: bool) -> float | None:
        if self.waiting_since is not None:
            return self.waiting_since + self.limit_s
        if up:
            return self.last_inbound + self.limit_s
        return None


class ScanProperties(Properties):
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


class PropertiesCache:
    """The properties of a scan with a given remaining life (rows of a burst share them)."""

    def __init__(self) -> None:
        self._by_expiry: dict[int, Properties] = {}

    def get(self, expiry_s: int) -> Properties:
        props = self._by_expiry.get(expiry_s)
        if props is None:
            if len(self._by_expiry) > 256:
                self._by_expiry.clear()
            props = self._by_expiry[expiry_s] = ScanProperties(expiry_s)
        return props


def connect_properties(max_packet: int) -> Properties:
    """MQTT 5 CONNECT properties: the largest packet we accept."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.MaximumPacketSize = max_packet
    return props


def new_client(
    *,
    client_id: str,
    v5: bool,
    creds: Credentials,
    will: tuple[str, bytes],
    connect_timeout: float,
    paho_log: logging.Logger,
    handlers: dict[str, Callable[..., Any]],
) -> mqtt.Client:
    """A fresh paho client for one connection: credentials, retained will, our callbacks."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )
    apply_credentials(client, creds)
    client.will_set(will[0], will[1], 1, True)
    client.max_inflight_messages_set(0)  # the window is ours; paho must not queue
    client.max_queued_messages_set(0)
    client.connect_timeout = connect_timeout
    for name, fn in handlers.items():
        setattr(client, name, fn)
    client.enable_logger(paho_log)
    return client


class TakeoverWatch:
    """Recognises a second client with our client id (two kiosks with one `device.id`).

    Each connection of one kiosk takes the session of the other over, so both
    are thrown off within seconds of connecting, again and again. `TAKEOVERS`
    such losses within `WINDOW_S` raise the alarm; a connection that lasts
    `WINDOW_S` ends it. With MQTT 5 the broker says "session taken over"; with
    3.1.1 it only closes the socket, so a close within `SHORT_S` of the CONNACK
    counts too.
    """

    TAKEOVERS = 3
    WINDOW_S = 60.0
    SHORT_S = 5.0

    def __init__(self) -> None:
        self._losses: list[float] = []
        self._up_since: float | None = None
        self.active = False

    def connected(self, now: float) -> None:
        self._up_since = now

    def lost(self, now: float, taken_over: bool) -> bool:
        """The link was lost; True when this starts the alarm."""
        short = self._up_since is not None and now - self._up_since < self.SHORT_S
        self._up_since = None
        if not (taken_over or short):
            return False
        self._losses = [t for t in self._losses if now - t < self.WINDOW_S] + [now]
        if not self.active and len(self._losses) >= self.TAKEOVERS:
            self.active = True
            return True
        return False

    def settled(self, now: float) -> bool:
        """True when a running alarm ends: the current connection has lasted WINDOW_S."""
        if self.active and self._up_since is not None and now - self._up_since >= self.WINDOW_S:
            self.active = False
            self._losses.clear()
            return True
        return False


class Subscriptions:
    """The kiosk's subscriptions on one connection, and those the broker refused.

    A clustered broker can refuse a SUBSCRIBE for a while (NATS does while its
    JetStream has no leader after a node died). In pharmacy delivery mode the
    acknowledgement topic is what lets the outbox drain, so a refusal is never
    final: the topic is asked for again after a back-off, on the same link.
    """

    FIRST_RETRY_S = 1.0
    MAX_RETRY_S = 30.0

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names  # topic -> what it is for, as the log says it
        self._pending: dict[int, str] = {}  # SUBSCRIBE mid -> topic
        self._due: dict[str, float] = {}  # refused topic -> when to ask again
        self._backoff = {t: Backoff(self.FIRST_RETRY_S, self.MAX_RETRY_S) for t in names}

    @property
    def topics(self) -> list[str]:
        return list(self._names)

    def reset(self) -> None:
        """The connection opened or closed: nothing pending, nothing refused, fresh back-offs."""
        self._pending.clear()
        self._due.clear()
        for b in self._backoff.values():
            b.reset()

    def sent(self, topic: str, mid: int | None) -> None:
        if mid is not None:
            self._pending[mid] = topic

    def answered(self, mid: int, refused: Any | None, now: float) -> None:
        """The SUBACK for `mid`: `refused` is the broker's reason when it said no."""
        topic = self._pending.pop(mid, None)
        if topic is None:
            return
        if refused is None:
            if self._backoff[topic].attempt:
                log.info("the broker accepted our %s subscription", self._names[topic])
            self._backoff[topic].reset()
            return
        delay = self._backoff[topic].next()
        self._due[topic] = now + delay
        log.warning("the broker refused our %s subscription: %s; asking again in %.0f s",
                    self._names[topic], refused, delay)

    def due(self, now: float) -> list[str]:
        """The refused topics whose retry is due (removed from the list)."""
        topics = [t for t, at in self._due.items() if at <= now]
        for t in topics:
            del self._due[t]
        return topics

    def deadline(self) -> float | None:
        return min(self._due.values(), default=None)
