"""Real mosquitto brokers for tests: the local one (ordoscan.devtools.mosquitto, shared with
the demo), the pharmacy broker of provisioning/broker/, and a plain paho subscriber."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ordoscan.devtools.mosquitto import Broker, find_mosquitto, free_port, port_open
from ordoscan.errors import BrokerError

from tests.support.wait import WaitTimeout, wait_until

__all__ = ["MOSQUITTO", "Broker", "ProvisionedBroker", "Subscriber", "free_port", "wait_port"]

try:
    MOSQUITTO: str | None = find_mosquitto()
except BrokerError:
    MOSQUITTO = None


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Whether something listens on host:port within timeout: a probe whose False the caller
    acts on (a broker starter kills its process and raises with the log), not a wait."""
    try:
        wait_until(lambda: port_open(host, port), timeout, f"a listener on {host}:{port}")
    except WaitTimeout:
        return False
    return True


# --- the pharmacy broker of provisioning/broker/, filled in for a test ----------------------

PROVISIONING = Path(__file__).resolve().parents[2] / "provisioning" / "broker"


def render_provisioning(
    *, port: int, cert_dir: Path, acl_file: Path, site: str, lgo_identity: str = "lgo"
) -> tuple[str, str]:
    """(mosquitto.conf text, ACL text) from provisioning/broker with the placeholders filled.

    cert_dir must hold ca.crt, server.crt and server.key. As root, mosquitto
    would drop to its own user and could not read a test's files: keep root."""
    conf = (
        (PROVISIONING / "ordoscan.conf").read_text()
        .replace("@PORT@", str(port))
        .replace("@BIND_ADDRESS@", "127.0.0.1")
        .replace("@CERT_DIR@", str(cert_dir))
        .replace("@ACL_FILE@", str(acl_file))
    )
    if os.geteuid() == 0:
        conf += "\nuser root\n"
    acl = (
        (PROVISIONING / "ordoscan.acl").read_text()
        .replace("@SITE@", site)
        .replace("@LGO_IDENTITY@", lgo_identity)
    )
    for text in (conf, acl):
        left = re.search(r"@[A-Z_]+@", text)
        if left:
            raise ValueError(f"placeholder left unfilled: {left.group()}")
    return conf, acl


# --- a plain paho subscriber, as the pharmacy system would be -----------------------------


class Subscriber:
    """Collects every message on `topics` (QoS 1) in arrival order; thread-safe reads."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: list[str],
        *,
        client_id: str = "test-subscriber",
        protocol: int = 5,
        persistent: bool = False,
        tls: object | None = None,
        timeout: float = 20.0,
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self.raw: list[object] = []  # the paho MQTTMessage objects (MQTT 5 properties)
        self._cond = threading.Condition()
        self._topics = topics
        proto = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        # persistent: the broker keeps the subscription and queues messages while we are away
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
            clean_session=None if protocol == 5 else not persistent,
        )
        if tls is not None:
            self.client.tls_set_context(tls)  # type: ignore[arg-type]
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        if protocol == 5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if persistent else 0
            self.client.connect(
                host, port, keepalive=30, clean_start=not persistent, properties=props
            )
        else:
            self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise RuntimeError(f"subscriber could not subscribe to {topics} on {host}:{port}")

    def _on_connect(self, *_: object) -> None:
        self.client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        with self._cond:
            self.raw.append(msg)
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))  # type: ignore[attr-defined]
            self._cond.notify_all()

    def on(self, topic_suffix: str) -> list[bytes]:
        """Payloads received so far on topics ending with topic_suffix."""
        with self._cond:
            return [p for t, p, _ in self.messages if t.endswith(topic_suffix)]

    def wait_for(
        self, predicate: object, timeout: float = 30.0, what: str = "the expected messages"
    ) -> bool:
        """Wait until predicate(self) is true (raises WaitTimeout otherwise); no fixed sleeps."""
        return bool(wait_until(lambda: predicate(self), timeout, what))  # type: ignore[operator]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ProvisionedBroker(Broker):
    """mosquitto with provisioning/broker/'s config and ACL: TLS, client certificates
    (CN = identity), the kiosks' and the LGO's rights. `acl_text` is the rendered ACL;
    rewrite `acl_path` and call reload() to change it."""

    def __init__(
        self, workdir: Path, *, ca_cert: Path, server_cert: Path, server_key: Path, site: str,
        lgo_identity: str = "lgo",
    ) -> None:
        workdir = Path(workdir)
        certs = workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca_cert, certs / "ca.crt")
        shutil.copy(server_cert, certs / "server.crt")
        shutil.copy(server_key, certs / "server.key")
        self.acl_path = workdir / "ordoscan.acl"
        port = free_port()
        conf, self.acl_text = render_provisioning(
            port=port, cert_dir=certs, acl_file=self.acl_path, site=site,
            lgo_identity=lgo_identity,
        )
        self.acl_path.write_text(self.acl_text)
        super().__init__(workdir / "broker", port=port, conf=conf)
