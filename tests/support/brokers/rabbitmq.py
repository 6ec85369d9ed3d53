"""RabbitMQ 3.10 with its MQTT plugin (MQTT 3.1.1) as an engine: its own node name, ports,
Erlang cookie (HOME), database and log folders; users and topic permissions set with
rabbitmqctl. The machine's own node (rabbit@..., 5672) is never touched: only the
shared epmd is used, which every Erlang node on the machine shares anyway.

RabbitMQ maps an MQTT topic a/b/c to the routing key a.b.c of `amq.topic`, so the
topic permissions are regular expressions on routing keys.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from tests.support.brokers import KIOSK, LGO, Engine, Features, TlsFiles, mqtt_answers
from tests.support.mosquitto import free_port

BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's /usr/sbin wrappers switch to the rabbitmq user


class RabbitEngine(Engine):
    name = "rabbitmq"
    features = Features(mqtt5=False, retained=True, will=True, denied_v311="disconnect",
                        dots_in_topics=True)
    startup_timeout = 90.0  # an Erlang node boots in 10-20 s on a loaded 2-core machine

    def __init__(
        self, workdir: Path, *, tls: TlsFiles | None = None, node: str | None = None,
    ) -> None:
        super().__init__(workdir, tls=tls)
        self.node = node or f"ordoscan-{uuid.uuid4().hex[:8]}@localhost"
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self._users_made = False

    def environment(self) -> dict[str, str]:
        w = self.workdir
        return {
            **os.environ,
            "HOME": str(w),  # its own ~/.erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_PID_FILE": str(w / "rabbitmq.pid"),
        }

    def command(self) -> list[str]:
        return [str(BIN / "rabbitmq-server")]

    def write_config(self) -> None:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}",
            "mqtt.allow_anonymous = true",  # as the guest user
            "loopback_users = none",
            "log.console = true", "log.console.level = info", "log.file = false",
        ]
        if self.tls is not None:
            lines += [
                f"mqtt.listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls.ca}",
                f"ssl_options.certfile = {self.tls.server.cert}",
                f"ssl_options.keyfile = {self.tls.server.key}",
                "ssl_options.verify = verify_none",
            ]
        (self.workdir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    def ctl(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [str(BIN / "rabbitmqctl"), "-n", self.node, *args], capture_output=True, text=True,
            env=self.environment(), timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def ready(self) -> bool:
        return mqtt_answers(self.host, self.port)

    def start(self) -> Engine:
        super().start()
        if not self._users_made:
            for user, password in (KIOSK, LGO):
                self.ctl("add_user", user, password)
                self.ctl("set_permissions", user, ".*", ".*", ".*")
            self._users_made = True
        self.apply_acl()
        return self

    def stop(self) -> None:
        """Clean stop (rabbitmqctl stop): clients see their connection closed."""
        if self.running:
            self.ctl("stop", check=False)
        super().stop()

    def apply_acl(self) -> None:
        if not self.running:
            return
        # a kiosk may write its own topics; the scan topic only when allowed
        own = r"status|telemetry|reply" + ("" if self.scans_denied else "|scan")
        self.ctl(
            "set_topic_permissions", KIOSK[0], "amq.topic",
            rf"^pharmacy\.[^.]+\.kiosk\.[^.]+\.({own})$", ".*",
        )
