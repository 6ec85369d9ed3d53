"""The relay half of the daemon (Outbox + Publisher) as its own process, for crash tests.

    python -m tests.support.relay_proc CONFIG.toml [--produce N] [--interval S]

Prints, one line each, flushed: `READY`, `PUT <seq> <scan_id>` once a scan it
produced is durable, `LINK up|down`, `FAULT <text>|-`, `CMD <name> <bytes>` for a
command that reached it. SIGTERM stops it
cleanly (exit 0); SIGKILL is what the tests use to crash it.

`relay_config()` builds the configuration the tests give it (and their own
in-process publishers).
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ordoscan.config import Config, parse_config, to_toml

from tests.support import child_env
from tests.support.wait import WaitTimeout, wait_until


def relay_config(
    workdir: Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    device_id: str = "kiosk-01",
    site: str = "pharmacie-test",
    tls: bool = False,
    protocol: str = "5",
    keepalive_s: int = 30,
    reconnect: tuple[float, float] = (0.2, 2.0),
    inflight: int = 20,
    max_messages: int = 20000,
    max_age_h: float = 24,
    **mqtt: Any,
) -> dict[str, Any]:
    """A complete configuration (as TOML data) for a relay talking to a test broker."""
    return {
        "device": {"id": device_id, "site": site},
        "camera": {"source": "replay", "path": str(workdir)},
        "gpio": {"pin_factory": "mock"},
        "mqtt": {
            "host": host,
            "port": port,
            "tls": tls,
            "protocol": protocol,
            "keepalive_s": keepalive_s,
            "reconnect_min_s": reconnect[0],
            "reconnect_max_s": reconnect[1],
            "inflight": inflight,
            **mqtt,
        },
        "outbox": {
            "path": str(workdir / "outbox.sqlite3"),
            "max_messages": max_messages,
            "max_age_h": max_age_h,
        },
    }


def as_config(data: dict[str, Any]) -> Config:
    """Validate relay_config() data, ignoring the environment."""
    return parse_config(data, "<test>", env={})


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.write_text(to_toml(data))
    return path


def payload_for(n: int) -> str:
    """An identifier of the default accepted shape (18 of A-Z0-9), distinct per n."""
    return f"01T{n:015d}"


def put_scans(outbox: Any, count: int, start: int = 0) -> list[Any]:
    """Queue `count` ordonnance scans; returns the stored rows."""
    return [
        outbox.put(
            kind="ordonnance_numerique",
            symbology="QRCode",
            symbology_id="]Q1",
            payload=payload_for(start + i),
            clock_synced=True,
        )
        for i in range(count)
    ]


class _CallClock:
    """A test's wall-clock function as the outbox's Clock (it drives ages too)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.wall = self.monotonic = now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


class InProcessRelay:
    """Outbox + Publisher in the test's own process, recording links, faults and commands."""

    def __init__(self, data: dict[str, Any], **publisher_kw: Any) -> None:
        from ordoscan.outbox import Outbox
        from ordoscan.publisher import Publisher

        self.cfg = as_config(data)
        outbox_clock = publisher_kw.pop("outbox_clock", None)
        extra = {"clock": _CallClock(outbox_clock)} if outbox_clock else {}
        self.outbox = Outbox(
            self.cfg.outbox.path, max_messages=self.cfg.outbox.max_messages,
            max_age_h=self.cfg.outbox.max_age_h, device_id=self.cfg.device.id,
            site=self.cfg.device.site, **extra,
        )
        self.links: list[tuple[float, bool]] = []
        self.faults: list[tuple[float, str | None]] = []
        self.commands: list[tuple[str, bytes]] = []
        self.handler: Callable[[str, bytes], object] | None = None  # e.g. a Remote's handle
        self._cond = threading.Condition()
        self.publisher = Publisher(
            self.cfg, self.outbox, on_link=self._link, on_fault=self._fault,
            on_command=self._command, **publisher_kw,
        )

    def _record(self, target: list[Any], item: Any) -> None:
        with self._cond:
            target.append(item)
            self._cond.notify_all()

    def _link(self, up: bool) -> None:
        self._record(self.links, (time.monotonic(), up))

    def _fault(self, text: str | None) -> None:
        self._record(self.faults, (time.monotonic(), text))

    def _command(self, name: str, payload: bytes) -> None:
        self._record(self.commands, (name, payload))
        if self.handler is not None:
            self.handler(name, payload)

    @property
    def link_up(self) -> bool | None:
        with self._cond:
            return self.links[-1][1] if self.links else None

    @property
    def fault(self) -> str | None:
        with self._cond:
            return self.faults[-1][1] if self.faults else None

    def wait(
        self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "the relay"
    ) -> bool:
        """Wait for a condition on this relay (or anything else); raises WaitTimeout."""
        return bool(wait_until(predicate, timeout, what))

    def put(self, count: int, start: int = 0) -> list[Any]:
        rows = put_scans(self.outbox, count, start)
        self.publisher.wake()
        return rows

    def depth(self) -> int:
        return int(self.outbox.stats().depth)

    def close(self) -> None:
        self.publisher.stop(3.0)
        self.outbox.close()


class RelayProcess:
    """tests/support/relay_proc.py as a child process; its stdout lines are collected."""

    # every child still running, so that a failed test does not leave one behind
    # (tests/conftest.py kills what is left after each test)
    live: ClassVar[set[RelayProcess]] = set()
    _count: ClassVar[int] = 0

    @classmethod
    def kill_leftovers(cls) -> int:
        """SIGKILLs every child still running; returns how many there were."""
        left = [r for r in cls.live if r.proc.poll() is None]
        for r in left:
            r.kill()
        cls.live.clear()
        return len(left)

    def __init__(self, config: Path, produce: int = 0, start: int = 0) -> None:
        root = Path(__file__).resolve().parents[2]
        env = child_env()
        # its log beside the config, one file per process, so that a failed test can show it
        RelayProcess._count += 1
        self.log = Path(config).with_name(f"relay-{RelayProcess._count}.log")
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.relay_proc", str(config),
                 "--produce", str(produce), "--interval", "0.005", "--start", str(start)],
                cwd=root, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self.puts: list[tuple[int, str]] = []
        self.seen: list[str] = []  # every line, in order
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        RelayProcess.live.add(self)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            self.seen.append(line)
            if line.startswith("PUT "):
                _, seq, scan_id = line.split()
                self.puts.append((int(seq), scan_id))
            self.lines.put(line)

    def wait_line(self, text: str, timeout: float = 30.0) -> bool:
        """Consume lines until `text`; raises WaitTimeout (naming it) if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.lines.get(timeout=min(0.5, timeout)) == text:
                    return True
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        raise WaitTimeout(f"the relay process never printed {text!r} (exit {self.proc.poll()})")

    def tail(self, lines: int = 25) -> str:
        """The last lines it printed and logged, for a failed test's message."""
        log = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(
            ["stdout: " + " | ".join(self.seen[-8:]), f"log ({self.log}):", *log[-lines:]]
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)  # every PUT line printed before death is read

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(20)
        self._reader.join(10)
        return rc



def main(argv: list[str] | None = None) -> int:
    from ordoscan.config import load_config
    from ordoscan.outbox import Outbox
    from ordoscan.publisher import Publisher

    ap = argparse.ArgumentParser(prog="relay_proc")
    ap.add_argument("config")
    ap.add_argument("--produce", type=int, default=0, help="scans to put while relaying")
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between produced scans")
    ap.add_argument("--start", type=int, default=0, help="number of the first produced payload")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s relay %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, env={})
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    outbox = Outbox(cfg.outbox.path, max_messages=cfg.outbox.max_messages,
                    max_age_h=cfg.outbox.max_age_h, device_id=cfg.device.id, site=cfg.device.site)
    publisher = Publisher(
        cfg, outbox,
        on_link=lambda up: say(f"LINK {'up' if up else 'down'}"),
        on_fault=lambda text: say(f"FAULT {text or '-'}"),
        on_command=lambda name, payload: say(f"CMD {name[:40]} {len(payload)}"),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    publisher.start()
    say("READY")

    def produce() -> None:
        for i in range(args.produce):
            if stop.wait(args.interval):
                return
            row = put_scans(outbox, 1, args.start + i)[0]
            say(f"PUT {row.seq} {row.scan_id}")
            publisher.wake()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    stop.wait()
    producer.join(5)
    publisher.stop(3.0)
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
