"""`ordoscan listen [--config PATH] [--count N]`: the reference subscriber for integrators.

Subscribes `{prefix}/scan` (QoS 1) with the broker settings of the config,
validates each message against ordoscan.scan/1 and prints it as one JSON line
on stdout, once per scan_id (delivery is at least once). Invalid messages are
reported on stderr, without their content. This runs on the pharmacy side and
shows what the LGO receives: payloads are printed unmasked, in clear.

The session is persistent (MQTT 5: clean start off and a session expiry;
3.1.1: clean session off) under a fixed client id, so the broker keeps what
is published while the listener reconnects or is restarted, and a message is
acknowledged only once printed: nothing sent in between is missed.

With `--ack` it is the reference pharmacy-side consumer of end-to-end
delivery (mqtt.delivery = "pharmacy"): each scan is written to its own
SQLite store (fsync'd) before `{"scan_id", "seq"}` is published on the
kiosk's `{prefix}/ack`; the store de-duplicates by scan_id across restarts
and SIGKILL, and a scan sent again is acknowledged again, printed once.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import sys
import threading
from collections import OrderedDict
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from ordoscan.backoff import backoff_delay
from ordoscan.clock import SYSTEM_CLOCK, iso_ms
from ordoscan.config import Config, config_path, load_config
from ordoscan.message import ScanMessage
from ordoscan.privacy import LOG_LIMIT, printable
from ordoscan.security import apply_credentials, describe_connect_error, load_credentials

RECENT_IDS = 10_000


class RecentIds:
    """The last `size` scan ids seen, oldest forgotten first."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, scan_id: str) -> bool:
        """True if the id is new (and now remembered), False for a re-delivery."""
        if scan_id in self._ids:
            self._ids.move_to_end(scan_id)
            return False
        self._ids[scan_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class ScanStore:
    """The listener's own durable store: one row per scan_id, committed before the ack."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # on disk when the commit returns
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS scans (scan_id TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL, body TEXT NOT NULL, received_at TEXT NOT NULL)"
        )

    def add(self, scan: ScanMessage, body: str) -> bool:
        """Store the scan; True if it is new, False if this scan_id is already stored."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO scans VALUES (?, ?, ?, ?, ?)",
            (scan.scan_id, scan.device_id, scan.seq, body, iso_ms(SYSTEM_CLOCK.wall())),
        )
        return cur.rowcount == 1

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM scans").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def ack_topic(scan_topic: str) -> str:
    """`{prefix}/ack` of the kiosk that sent on `{prefix}/scan`."""
    return scan_topic[: -len("scan")] + "ack"


def _err(text: str) -> None:
    print(f"ordoscan listen: {printable(text, LOG_LIMIT)}", file=sys.stderr, flush=True)


class Listener:
    """One subscriber connection with reconnects; counts what it printed."""

    def __init__(self, cfg: Config, count: int, store: ScanStore | None = None) -> None:
        self.cfg = cfg
        self.count = count
        self.store = store  # --ack: durable de-duplication, then the acknowledgement
        self.topic = f"{cfg.topic_prefix}/scan"
        self.seen = RecentIds()
        self.printed = 0
        self.duplicates = 0
        self.invalid = 0
        self.probes = 0  # empty messages: `ordoscan check`'s publish test, not scans
        self.done = threading.Event()
        self.fatal: str | None = None
        self.connected = False

    def on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.fatal = f"the broker refused the connection: {reason}"
            return
        self.connected = True
        client.subscribe(self.topic, qos=1)

    def on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            self.fatal = f"the broker refused the subscription to {self.topic}: {refused[0]}"
            return
        # only now is the subscription in place: what is published from here on arrives
        _err(f"listening on {self.topic} ({self.cfg.mqtt.host}:{self.cfg.mqtt.port})")

    def on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            self.probes += 1
            return
        try:
            scan = ScanMessage.from_json(bytes(msg.payload))
        except ValidationError as e:
            self.invalid += 1
            # The model hides input values in its errors: no payload is echoed here.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}"
                for err in e.errors()[:5]
            )
            _err(f"invalid message on {msg.topic} ({len(msg.payload)} bytes): {problems}")
            return
        line = scan.to_json().decode("utf-8")
        if self.store is not None:
            new = self.store.add(scan, line)  # durable before the pharmacy says "I have it"
            ack = json.dumps({"scan_id": scan.scan_id, "seq": scan.seq})
            client.publish(ack_topic(msg.topic), ack, qos=1)
        else:
            new = self.seen.add(scan.scan_id)
        if not new:
            self.duplicates += 1
            return
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        self.printed += 1
        if self.count and self.printed >= self.count:
            self.done.set()


def main(args: argparse.Namespace) -> int:
    if args.count < 0:
        _err(f"--count {args.count}: must be 0 (no limit) or more")
        return 2
    if args.session_expiry < 0:
        _err(f"--session-expiry {args.session_expiry}: must be 0 (no session kept) or more")
        return 2
    cfg = load_config(args.config)  # ConfigError: exit 2 in cli.main
    m = cfg.mqtt
    creds = load_credentials(m)  # SecurityError: exit 1 in cli.main, file and fix named
    for note in (*creds.notes, *creds.problems):
        _err(note)
    store = None
    if args.ack:
        path = args.store or f"ordoscan-listen-{cfg.device.id}.sqlite3"
        try:
            store = ScanStore(path)
        except sqlite3.Error as e:
            _err(f"--store {path}: cannot open the store: {e}")
            return 1
        _err(f"acknowledging on {cfg.topic_prefix}/ack once stored in {path} "
             f"({store.count()} scan(s) stored)")
    listener = Listener(cfg, args.count, store)
    signal.signal(signal.SIGTERM, lambda *_: listener.done.set())

    v5 = m.protocol == "5"
    persistent = args.session_expiry > 0
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        # a fixed id: the broker finds the session (and what it kept) under it again
        client_id=args.client_id or f"ordoscan-listen-{cfg.device.id}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,
    )
    connect_kw: dict[str, Any] = {}
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = args.session_expiry
        connect_kw = {"clean_start": not persistent, "properties": props}
    apply_credentials(client, creds)
    client.on_connect = listener.on_connect
    client.on_subscribe = listener.on_subscribe
    client.on_message = listener.on_message
    rng = random.Random()
    attempt = 0
    first = True
    _err(f"configuration {config_path(args.config)}")
    while not listener.done.is_set():
        try:
            if first:
                client.connect(m.host, m.port, m.keepalive_s, **connect_kw)
                first = False
            else:
                client.reconnect()
        except Exception as e:  # explained; TLS problems need the installer, the rest is retried
            text, fatal = describe_connect_error(e, m)
            if fatal:
                _err(text)
                return 1
            delay = backoff_delay(attempt, m.reconnect_min_s, m.reconnect_max_s, rng)
            attempt += 1
            _err(f"{text}; retrying in {delay:.1f} s")
            if listener.done.wait(delay):
                break
            continue
        while not listener.done.is_set() and listener.fatal is None:
            if client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS:
                break
        if listener.fatal is not None:
            _err(listener.fatal)
            return 1
        if listener.done.is_set():
            break
        if listener.connected:
            attempt = 0
            listener.connected = False
        delay = backoff_delay(attempt, m.reconnect_min_s, m.reconnect_max_s, rng)
        attempt += 1
        _err(f"connection lost; reconnecting in {delay:.1f} s")
        if listener.done.wait(delay):
            break
    client.disconnect()
    for _ in range(20):  # the last acknowledgements and the DISCONNECT go out
        if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
            break
    if store is not None:
        store.close()
    _err(
        f"{listener.printed} scan(s) printed, {listener.duplicates} duplicate(s) skipped, "
        f"{listener.invalid} invalid message(s)"
        + (f", {listener.probes} empty check message(s)" if listener.probes else "")
    )
    return 0
