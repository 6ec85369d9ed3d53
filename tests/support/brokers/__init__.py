"""MQTT engines started by the tests from their Debian packages, each on its own free
loopback ports with its own config and data folder, stopped after.

    engine = make_engine("nats", tmp_path / "nats", tls=ca_and_server)  # not started yet
    with engine:                       # start() ... stop()
        engine.kill(); engine.start()  # a hard outage, then back on the same ports
        engine.deny_scans(True)        # the ACL refuses the kiosk's scan topic

Every engine knows two identities: `KIOSK` (what a kiosk logs in as) and `LGO`
(the pharmacy side), with the passwords below; anonymous clients get the
rights of LGO. None of them touches the machine's own brokers (1883, 5672, 4222):
the ports are free ones picked here, the RabbitMQ node has its own name and cookie.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.mosquitto import Subscriber, free_port, wait_port
from tests.support.pki import CertKey

KIOSK = ("kiosk", "kiosk-secret")
LGO = ("lgo", "lgo-secret")
# What the kiosks of every test publish under (the engines' ACLs are written for it).
SCAN_FILTER = "pharmacy/+/kiosk/+/scan"


@dataclass(frozen=True)
class Features:
    """What an engine offers a kiosk (the table of docs/INTEGRATION.md, checked by the tests)."""

    mqtt5: bool
    retained: bool
    will: bool
    # how a publish its ACL denies is met, with MQTT 3.1.1: "puback" (acknowledged and
    # dropped), "disconnect" (the connection is closed, the scan stays queued)
    denied_v311: str
    dots_in_topics: bool  # a '.' inside a topic level is a plain character
    # a scan it acknowledged just before a clean restart always reaches a persistent
    # subscriber (NATS 2.9 was seen to drop one: only `delivery = "pharmacy"` covers that)
    keeps_acked_across_restart: bool = True


@dataclass(frozen=True)
class TlsFiles:
    """The CA the kiosk trusts and the engine's certificate."""

    ca: Path
    server: CertKey


class Engine:
    """Base of the engines: a child process (its own session, so a kill reaches all of it)."""

    name = "engine"
    features: Features

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()  # MQTT, plaintext
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.scans_denied = False

    # --- to be provided by each engine ---------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def write_config(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the engine serves MQTT (beyond an open port)."""
        return True

    def apply_acl(self) -> None:
        """Make `scans_denied` effective on the running engine."""
        raise NotImplementedError

    startup_timeout = 30.0

    # --- common ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Engine:
        if self.running:
            return self
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env=self.environment(), start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        for port in ports:
            if not wait_port(self.host, port, max(0.1, deadline - time.monotonic())):
                self.kill()
                raise RuntimeError(f"{self.name} did not listen on {port}: {self.log()}")
        while not self.ready():
            if time.monotonic() > deadline or not self.running:
                self.kill()
                raise RuntimeError(f"{self.name} did not become ready: {self.log()}")
            time.sleep(0.1)
        return self

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """Clean stop (SIGTERM): clients see their connection closed."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """Hard outage (SIGKILL of the whole process group)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def deny_scans(self, denied: bool) -> None:
        """Let (False) or forbid (True) the KIOSK identity to publish on SCAN_FILTER."""
        self.scans_denied = denied
        self.apply_acl()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mqtt_answers(host: str, port: int, protocol: int = 4, timeout: float = 2.0) -> bool:
    """A bare MQTT CONNECT (clean session, no credentials) gets a CONNACK."""
    client_id = b"ordoscan-probe"
    level = bytes([protocol])
    var = b"\x00\x04MQTT" + level + b"\x02\x00\x0a"
    if protocol == 5:
        var += b"\x00"
    body = var + len(client_id).to_bytes(2, "big") + client_id
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(packet)
            answer = s.recv(4)
    except OSError:
        return False
    return answer[:1] == b"\x20"


def make_engine(name: str, workdir: Path, *, tls: TlsFiles | None = None) -> Engine:
    from tests.support.brokers.mosquitto import MosquittoEngine
    from tests.support.brokers.nats import NatsEngine
    from tests.support.brokers.rabbitmq import RabbitEngine

    kinds: dict[str, type[Engine]] = {
        "mosquitto": MosquittoEngine, "rabbitmq": RabbitEngine, "nats": NatsEngine,
    }
    return kinds[name](workdir, tls=tls)


ENGINES = ("mosquitto", "rabbitmq", "nats")


class AckingSubscriber(Subscriber):
    """The pharmacy side of `delivery = "pharmacy"` in a few lines: every scan received is
    recorded (here: in memory, in arrival order), then acknowledged on the kiosk's
    `{prefix}/ack` with its scan_id and seq."""

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        super()._on_message(_c, _u, msg)
        topic: str = msg.topic  # type: ignore[attr-defined]
        if topic.endswith("/scan"):
            body = json.loads(msg.payload)  # type: ignore[attr-defined]
            ack = json.dumps({"scan_id": body["scan_id"], "seq": body["seq"]})
            self.client.publish(topic[: -len("scan")] + "ack", ack, qos=1)
