"""NATS 2.9 with JetStream and its MQTT gateway (MQTT 3.1.1, QoS 0 and 1), one server or a
cluster of three (JetStream replicas 3). Users and permissions in the config, reloaded
on SIGHUP.

NATS maps an MQTT topic a/b/c to the subject a.b.c, so its permissions are written
on subjects: the kiosk's scan topic is `pharmacy.*.kiosk.*.scan`.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.request
from pathlib import Path

from tests.support.brokers import KIOSK, LGO, Engine, Features, TlsFiles, mqtt_answers
from tests.support.mosquitto import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsEngine(Engine):
    name = "nats"
    features = Features(mqtt5=False, retained=True, will=True, denied_v311="puback",
                        dots_in_topics=False)
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

    def authorization(self) -> str:
        deny = '["pharmacy.*.kiosk.*.scan"]' if self.scans_denied else "[]"
        users = [
            {"user": LGO[0], "password": LGO[1]},
            {"user": KIOSK[0], "password": KIOSK[1],
             "permissions": {"publish": {"deny": json.loads(deny)}}},
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
            mqtt.append(f"stream_replicas: {self.replicas}")
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
