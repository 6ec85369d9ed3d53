"""A local mosquitto for the demo and the tests: its own port, config and folder.

Started by its user, stopped after; `kill()` is a hard outage (SIGKILL),
`stop()` a clean one, `start()` brings it back on the same port. It never
touches a broker the machine already runs: a free loopback port each time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from ordoscan.errors import BrokerError
from ordoscan.privacy import printable

MOSQUITTO_ENV = "ORDOSCAN_MOSQUITTO"
INSTALL_HINT = "install mosquitto with `./dev setup` or `apt-get install mosquitto`"
START_TIMEOUT_S = 10.0


def find_mosquitto(
    env: Mapping[str, str] | None = None, fallback: tuple[str, ...] = ("/usr/sbin/mosquitto",)
) -> str:
    """$ORDOSCAN_MOSQUITTO if set, else mosquitto on PATH or in /usr/sbin; BrokerError saying
    which of them is missing otherwise."""
    env = os.environ if env is None else env
    if MOSQUITTO_ENV in env:
        exe = env[MOSQUITTO_ENV]
        shown = f"{MOSQUITTO_ENV}={printable(exe)}"
        if not exe:
            raise BrokerError(f"{MOSQUITTO_ENV} is empty, so no broker is started "
                              f"(to have one: unset it, or {INSTALL_HINT})")
        if not os.path.exists(exe):
            raise BrokerError(f"{shown}: that path does not exist (unset {MOSQUITTO_ENV} "
                              "to use the installed mosquitto)")
        if os.path.isdir(exe) or not os.access(exe, os.X_OK):
            raise BrokerError(f"{shown}: not an executable file")
        return exe
    found = shutil.which("mosquitto", path=env.get("PATH"))
    if found:
        return found
    for exe in fallback:  # Debian installs it outside a normal user's PATH
        if os.access(exe, os.X_OK):
            return exe
    raise BrokerError(f"mosquitto is not installed ({INSTALL_HINT})")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class Broker:
    """One mosquitto process. `conf` replaces the default config (a plaintext listener on
    127.0.0.1 with anonymous access); `{port}` and `{dir}` in it are filled in."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        conf: str | None = None,
        *,
        persistent: bool = False,
        exe: str | None = None,
    ) -> None:
        self.exe = exe or find_mosquitto()
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

    def start(self, timeout: float = START_TIMEOUT_S) -> Broker:
        """Start it and wait until it listens; BrokerError with its log's end if it does not."""
        if self.running:
            return self
        self.write_conf()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C at the terminal is its user's to handle
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if port_open(self.host, self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port}: "
                          f"{self.log()[-500:].strip()}")

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
            raise BrokerError("mosquitto is not running")
        done = self._full_log().count("Reloading config.")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._full_log().count("Reloading config.") <= done:
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not reload within {timeout} s: {self.log()}")
            time.sleep(0.02)

    def _full_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        """The end of its log (4,000 characters)."""
        return self._full_log()[-4000:]

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
