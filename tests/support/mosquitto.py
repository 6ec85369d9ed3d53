"""A real mosquitto broker for tests: its own port, config and folder.

Started by the test, stopped after; `kill()` is a hard outage (SIGKILL),
`stop()` a clean one, `start()` brings it back on the same port.
"""

from __future__ import annotations

import contextlib
import os
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

    def __init__(self, workdir: Path, port: int | None = None, conf: str | None = None) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (the README's set-up command installs it)")
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

    def write_conf(self) -> None:
        text = self.conf_text.replace("{port}", str(self.port)).replace("{dir}", str(self.workdir))
        # persistence off: a restarted broker starts empty, as after a crash
        self.conf_path.write_text(text + "\npersistence false\nlog_dest stderr\n")

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

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
