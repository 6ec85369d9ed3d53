"""A real mosquitto broker for tests: its own port, config and folder.

Started by the test, stopped after; `kill()` is a hard outage (SIGKILL),
`stop()` a clean one, `start()` brings it back on the same port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class Broker:
    """One mosquitto process. `extra_conf` lines are added to its config
    (listener options for TLS, acl_file, ...); the default is a plaintext
    listener on 127.0.0.1 with anonymous access."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        conf: str | None = None,
        *,
        persistent: bool = False,
    ) -> None:
        if MOSQUITTO is None:
            raise RuntimeError(
                "mosquitto is not installed (the README's set-up command installs it)"
            )
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf_text = conf if conf is not None else (
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        )
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # persistent: sessions and queued messages survive a clean stop() (saved on
        # exit, and every second for kill()), as a pharmacy broker would be set up
        self.persistent = persistent

    def write_conf(self) -> None:
        text = self.conf_text.replace("{port}", str(self.port)).replace("{dir}", str(self.workdir))
        # persistence off: a restarted broker starts empty, as after a crash
        persistence = "persistence false\n"
        if self.persistent:
            persistence = (
                f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            )
            if os.geteuid() == 0:  # else mosquitto drops to its own user and cannot write here
                persistence += "user root\n"
        self.conf_path.write_text(text + "\n" + persistence + "log_dest stderr\n")

    def start(self, timeout: float = 10.0) -> Broker:
        if self.running:
            return self
        self.write_conf()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if not wait_port(self.host, self.port, timeout):
            self.kill()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Clean stop (SIGTERM): clients see their connection closed."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """Hard outage (SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self, timeout: float = 20.0) -> None:
        """SIGHUP: mosquitto re-reads its ACL and password files, clients stay connected.

        Returns once mosquitto has logged the reload: it reloads on its only thread,
        so every packet it handles after that line meets the new rules."""
        if not self.running or self.proc is None:
            raise RuntimeError("mosquitto is not running")
        done = self._full_log().count("Reloading config.")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._full_log().count("Reloading config.") <= done:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not reload within {timeout} s: {self.log()}")
            time.sleep(0.02)

    def _full_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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

    def wait_for(self, predicate: object, timeout: float = 30.0) -> bool:
        """Wait until predicate(self) is true; generous deadlines, no fixed sleeps."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

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
