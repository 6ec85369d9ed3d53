"""mosquitto 2.0 as an engine: MQTT 5 and 3.1.1, persistence on, an ACL file reloaded on SIGHUP."""

from __future__ import annotations

import os
import signal
import time

from tests.support.brokers import Engine, Features
from tests.support.mosquitto import MOSQUITTO

_OWN = ("status", "telemetry", "reply")


class MosquittoEngine(Engine):
    name = "mosquitto"
    features = Features(mqtt5=True, retained=True, will=True, denied_v311="puback",
                        dots_in_topics=True)
    startup_timeout = 10.0

    def command(self) -> list[str]:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (it is in ./dev's APT_PACKAGES)")
        return [MOSQUITTO, "-c", str(self.workdir / "mosquitto.conf")]

    def acl_text(self) -> str:
        # Without a password file mosquitto takes any user name as given: the ACL is the test.
        kiosk = ["user kiosk"]
        if self.scans_denied:
            kiosk += [f"topic write pharmacy/+/kiosk/+/{t}" for t in _OWN]
            kiosk += ["topic read pharmacy/+/kiosk/+/cmd/#"]
        else:
            kiosk += ["topic readwrite #"]
        return "\n".join(["topic readwrite #", "user lgo", "topic readwrite #", *kiosk]) + "\n"

    def write_config(self) -> None:
        (self.workdir / "acl").write_text(self.acl_text())
        lines = [
            "per_listener_settings false", "allow_anonymous true",
            f"acl_file {self.workdir / 'acl'}",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1", f"cafile {self.tls.ca}",
                f"certfile {self.tls.server.cert}", f"keyfile {self.tls.server.key}",
            ]
        # a pharmacy broker keeps its queues across a restart
        lines += ["persistence true", f"persistence_location {self.workdir}/",
                  "autosave_interval 1", "log_dest stderr"]
        if os.geteuid() == 0:  # else mosquitto drops to its own user and cannot write here
            lines.append("user root")
        (self.workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def apply_acl(self) -> None:
        (self.workdir / "acl").write_text(self.acl_text())
        if not self.running:
            return
        before = self.log().count("Reloading config.")
        self._signal_group(signal.SIGHUP)
        deadline = time.monotonic() + 10
        # mosquitto reloads on its only thread: once logged, every later packet meets it
        while self.log().count("Reloading config.") <= before and time.monotonic() < deadline:
            time.sleep(0.02)
