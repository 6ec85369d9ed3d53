"""NATS 2.9 with JetStream and its MQTT gateway (MQTT 3.1.1, QoS 0 and 1), one server or a
cluster of three (JetStream replicas 3). Users and permissions in the config, reloaded
on SIGHUP.

NATS maps an MQTT topic a/b/c to the subject a.b.c, so its permissions are written
on subjects: the kiosk's scan topic is `pharmacy.*.kiosk.*.scan`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tests.support.brokers import KIOSK, LGO, Engine, Features, TlsFiles, mqtt_answers
from tests.support.mosquitto import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsEngine(Engine):
    name = "nats"
    features = Features(mqtt5=False, retained=True, will=True, denied_v311="puback",
                        dots_in_topics=False, keeps_acked_across_restart=False)
    startup_timeout = 30.0

    def __init__(
        self, workdir: Path, *, tls: TlsFiles | None = None, server_name: str = "n1",
        cluster: list[int] | None = None, cluster_port: int | None = None,
        replicas: int = 1,
    ) -> None:
        super().__init__(workdir, tls=tls)
        self.server_name = server_name
        self.client_port = free_port()  # NATS' own protocol
        self.http_port = free_port()
        self.cluster_port = cluster_port
        self.routes = cluster or []
        self.replicas = replicas
        if tls is not None:
            self.tls_port = self.port  # NATS has one MQTT listener: TLS only, when configured

    def command(self) -> list[str]:
        return [NATS_SERVER, "-c", str(self.workdir / "nats.conf")]

    def kiosk_permissions(self) -> dict[str, object]:
        """The KIOSK user's permissions block (subjects, as NATS maps the MQTT topics)."""
        return {"publish": {"deny": ["pharmacy.*.kiosk.*.scan"] if self.scans_denied else []}}

    def authorization(self) -> str:
        users = [
            {"user": LGO[0], "password": LGO[1]},
            {"user": KIOSK[0], "password": KIOSK[1], "permissions": self.kiosk_permissions()},
            {"user": "anonymous", "password": "-"},
        ]
        return (
            "authorization {\n  users = " + json.dumps(users) + "\n}\n"
            'no_auth_user: "anonymous"\n'
        )

    def write_config(self) -> None:
        store = self.workdir / "jetstream"
        lines = [
            f"server_name: {self.server_name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{store}" }}',
            self.authorization(),
        ]
        if self.cluster_port:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines.append(
                f"cluster {{ name: ordoscan-test, listen: 127.0.0.1:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        mqtt = [f"listen: 127.0.0.1:{self.port}"]
        if self.replicas > 1:
            # The messages and sessions are replicated; each client's consumer (one per
            # subscription, made and deleted at every clean-session connection) is kept
            # on one node in memory: R3 consumers make a reconnect storm crawl (tens of
            # connections a second on this machine).
            mqtt += [f"stream_replicas: {self.replicas}", "consumer_replicas: 1",
                     "consumer_memory_storage: true"]
        if self.tls is not None:
            mqtt.append(
                f'tls {{ cert_file: "{self.tls.server.cert}", key_file: "{self.tls.server.key}" }}'
            )
        lines.append("mqtt {\n  " + "\n  ".join(mqtt) + "\n}")
        (self.workdir / "nats.conf").write_text("\n".join(lines) + "\n")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true", timeout=2
            ) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
        return self.tls is not None or mqtt_answers(self.host, self.port)

    def apply_acl(self) -> None:
        self.write_config()
        if self.running:
            before = self.log().count("Reloaded server configuration")
            self._signal_group(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while (self.log().count("Reloaded server configuration") <= before
                   and time.monotonic() < deadline):
                time.sleep(0.02)


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (one at a time, the kernel may hand the same one twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class NatsCluster:
    """Three NATS servers routed together, JetStream on each, the MQTT streams and
    sessions replicated on all three (replicas 3): any node serves any kiosk."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        routes = free_ports(size)
        self.nodes = [
            NatsEngine(Path(workdir) / f"n{i + 1}", server_name=f"n{i + 1}", cluster=routes,
                       cluster_port=routes[i], replicas=min(3, size))
            for i in range(size)
        ]

    @property
    def hosts(self) -> list[str]:
        """The nodes' MQTT addresses, as a kiosk lists them in `mqtt.hosts`."""
        return [f"{n.host}:{n.port}" for n in self.nodes]

    def node_at(self, port: int) -> NatsEngine:
        return next(n for n in self.nodes if n.port == port)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for n in self.nodes:  # a lone node cannot become ready (no JetStream quorum): no wait
            if not n.running:
                n.write_config()
                with open(n.log_path, "ab") as log:
                    n.proc = subprocess.Popen(
                        n.command(), stdout=log, stderr=subprocess.STDOUT, cwd=n.workdir,
                        start_new_session=True,
                    )
        deadline = time.monotonic() + timeout
        while not all(n.running and n.ready() for n in self.nodes):
            if time.monotonic() > deadline:
                logs = "\n".join(n.log()[-1500:] for n in self.nodes)
                self.kill()
                raise RuntimeError(f"the NATS cluster did not form: {logs}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JetStreamConsumer:
    """The pharmacy side on NATS' own protocol (NATS 2.9's MQTT has no MQTT 5 shared
    subscriptions): a stream over every kiosk's scan subject, replicated on `replicas`
    nodes, read by one durable pull consumer that acknowledges each message after
    recording it. Runs its asyncio loop on its own thread."""

    SUBJECT = "pharmacy.*.kiosk.*.scan"

    def __init__(self, servers: list[str], *, replicas: int = 3, stream: str = "SCANS") -> None:
        self.servers = servers
        self.replicas = replicas
        self.stream = stream
        self.keys: set[str] = set()  # the scan_ids received
        self.received = 0  # every arrival, repeats included
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="jetstream-consumer", daemon=True)

    def start(self, timeout: float = 60.0) -> JetStreamConsumer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the JetStream consumer did not start: {self._error!r}")
        if self._error is not None:
            raise RuntimeError(f"the JetStream consumer failed: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start() or close()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import FetchTimeoutError

        nc = await nats.connect(
            servers=[f"nats://{s}" for s in self.servers], max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, user=LGO[0], password=LGO[1],
        )
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(
            name=self.stream, subjects=[self.SUBJECT], num_replicas=self.replicas,
            storage=StorageType.FILE,
        ))
        sub = await js.pull_subscribe(self.SUBJECT, durable="lgo", stream=self.stream)
        self._ready.set()
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(256, timeout=1)
            except (FetchTimeoutError, TimeoutError):
                continue
            except Exception:  # the cluster is restarting: the client reconnects by itself
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                body = json.loads(m.data)
                with self._lock:
                    self.received += 1
                    self.keys.add(body["scan_id"])
                with contextlib.suppress(Exception):  # unacknowledged: redelivered, a repeat
                    await m.ack()
        await nc.close()

    def count(self) -> int:
        with self._lock:
            return len(self.keys)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
