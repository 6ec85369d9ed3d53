"""A fleet of simulated kiosks for the fleet benchmark: the real Outbox and Publisher of the
kiosk, many per process, each with its own outbox file and device id.

    fleet = Fleet(workdir, n=2000, hosts=["127.0.0.1:1883", ...], site="pharmacie-fleet")
    fleet.start()                       # the worker processes, every publisher started
    fleet.put(2)                        # every kiosk queues 2 scans (durably, as at the counter)
    fleet.stats()                       # connected, queued, connection attempts, fds, memory
    fleet.stop()

Each worker process (`python -m ordoscan.devtools.fleet SPEC.json`) runs `per_process`
kiosks and answers one JSON line per command read on its stdin. A connection attempt is
counted where paho opens it (`Client.connect`), with the monotonic time, which is one
clock for every process of the machine.

Without jitter the back-off is the plain doubling (the ceiling of each draw): every kiosk
that lost the broker together retries together, which is what jitter is there to avoid.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PER_PROCESS = 50  # threads per process: with more, every call that lets the GIL go waits long
PAYLOAD_DIGITS = 12


@dataclass
class FleetSpec:
    """What one worker process runs."""

    workdir: str
    first: int
    count: int
    hosts: list[str]
    site: str = "pharmacie-fleet"
    jitter: bool = True
    protocol: str = "3.1.1"
    keepalive_s: int = 30
    reconnect: tuple[float, float] = (0.5, 30.0)
    inflight: int = 20
    extra_mqtt: dict[str, Any] = field(default_factory=dict)


def device_id(i: int) -> str:
    return f"fleet-{i:05d}"


class _Ceiling(random.Random):
    """The back-off without jitter: each draw is its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def kiosk_config(spec: FleetSpec, i: int) -> dict[str, Any]:
    host, _, port = spec.hosts[i % len(spec.hosts)].rpartition(":")
    mqtt: dict[str, Any] = {
        "host": host, "port": int(port), "tls": False, "protocol": spec.protocol,
        "keepalive_s": spec.keepalive_s, "reconnect_min_s": spec.reconnect[0],
        "reconnect_max_s": spec.reconnect[1], "inflight": spec.inflight,
        "telemetry_interval_s": 0, **spec.extra_mqtt,
    }
    folder = Path(spec.workdir) / device_id(i)
    return {
        "device": {"id": device_id(i), "site": spec.site},
        "camera": {"source": "replay", "path": str(folder)},
        "gpio": {"pin_factory": "mock"},
        "mqtt": mqtt,
        "outbox": {"path": str(folder / "outbox.sqlite3")},
    }


class _Worker:
    """The kiosks of one process."""

    def __init__(self, spec: FleetSpec) -> None:
        import paho.mqtt.client as mqtt

        from ordoscan.config import parse_config
        from ordoscan.outbox import Outbox
        from ordoscan.publisher import Publisher

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.attempts: list[float] = []
        connect = mqtt.Client.connect
        attempts = self.attempts

        def counted(client: Any, *args: Any, **kw: Any) -> Any:
            attempts.append(time.monotonic())  # list.append is atomic: no lock needed
            return connect(client, *args, **kw)

        mqtt.Client.connect = counted  # type: ignore[method-assign,assignment]
        self.kiosks: list[tuple[Any, Any]] = []
        self.put_total = 0
        for i in range(spec.first, spec.first + spec.count):
            cfg = parse_config(kiosk_config(spec, i), f"<fleet {i}>", env={})
            Path(cfg.outbox.path).parent.mkdir(parents=True, exist_ok=True)
            outbox = Outbox(cfg.outbox.path, max_messages=cfg.outbox.max_messages,
                            max_age_h=cfg.outbox.max_age_h, device_id=cfg.device.id,
                            site=cfg.device.site)
            rng = random.Random(i) if spec.jitter else _Ceiling()
            self.kiosks.append((outbox, Publisher(cfg, outbox, rng=rng)))

    def start(self) -> dict[str, Any]:
        for _, publisher in self.kiosks:
            publisher.start()
        return {"started": len(self.kiosks)}

    def put(self, each: int) -> dict[str, Any]:
        keys = []
        for outbox, publisher in self.kiosks:
            for _ in range(each):
                n = self.put_total
                row = outbox.put(kind="ordonnance_numerique", symbology="QRCode",
                                 symbology_id="]Q1", payload=f"01F{os.getpid() % 1000:03d}"
                                 f"{n:0{PAYLOAD_DIGITS}d}", clock_synced=True)
                self.put_total += 1
                keys.append(row.scan_id)
            publisher.wake()
        return {"put": len(keys), "keys": keys}

    def stats(self) -> dict[str, Any]:
        # From memory only: with hundreds of publisher threads, every call that lets the
        # GIL go (a query, a directory listing) waits behind all of them, and a per-outbox
        # query here took minutes. `depth` is queued minus acknowledged (a resend whose
        # first PUBACK was lost counts twice, so it can undercount); the consumer's count
        # is the proof of delivery.
        taken, self.attempts[:] = list(self.attempts), []
        connected = sum(1 for _, p in self.kiosks if p.connected)
        depth = self.put_total - sum(int(p.stats()["delivered"]) for _, p in self.kiosks)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "connected": connected, "depth": depth, "attempts": taken,
            "fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "max_rss_kb": usage.ru_maxrss,
        }

    def stop(self) -> dict[str, Any]:
        with ThreadPoolExecutor(64) as pool:
            list(pool.map(lambda k: k[1].stop(3.0), self.kiosks))
        for outbox, _ in self.kiosks:
            outbox.close()
        return {"stopped": len(self.kiosks)}


def worker_main(spec_path: str) -> int:
    spec_data = json.loads(Path(spec_path).read_text())
    spec_data["reconnect"] = tuple(spec_data["reconnect"])
    worker = _Worker(FleetSpec(**spec_data))
    print(json.dumps({"ready": len(worker.kiosks)}), flush=True)
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "start":
            answer = worker.start()
        elif word == "put":
            answer = worker.put(int(arg))
        elif word == "stats":
            answer = worker.stats()
        elif word == "stop":
            print(json.dumps(worker.stop()), flush=True)
            return 0
        else:
            answer = {"error": f"unknown command {word!r}"}
        print(json.dumps(answer), flush=True)
    worker.stop()
    return 0


class Fleet:
    """N kiosks in ceil(N / per_process) worker processes, driven from this one."""

    def __init__(self, workdir: Path, n: int, hosts: list[str], *, per_process: int = PER_PROCESS,
                 **spec: Any) -> None:
        self.workdir = Path(workdir)
        self.n = n
        self.specs = [
            FleetSpec(workdir=str(self.workdir), first=first,
                      count=min(per_process, n - first), hosts=hosts, **spec)
            for first in range(0, n, per_process)
        ]
        self.procs: list[subprocess.Popen[str]] = []
        self.put_keys: set[str] = set()

    def _ask_all(self, command: str) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(command + "\n")
            p.stdin.flush()
        return [self._answer(p) for p in self.procs]

    @staticmethod
    def _answer(p: subprocess.Popen[str]) -> dict[str, Any]:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"fleet worker {p.pid} ended (exit {p.wait(10)})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for k, spec in enumerate(self.specs):
            path = self.workdir / f"worker-{k}.json"
            path.write_text(json.dumps(asdict(spec)))
            with open(self.workdir / f"worker-{k}.log", "ab") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "ordoscan.devtools.fleet", str(path)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                ))
        for p in self.procs:
            self._answer(p)  # ready: every outbox is open
        self._ask_all("start")

    def put(self, each: int) -> int:
        """Every kiosk queues `each` scans; returns how many were queued in all."""
        answers = self._ask_all(f"put {each}")
        for a in answers:
            self.put_keys.update(a["keys"])
        return sum(int(a["put"]) for a in answers)

    def stats(self) -> dict[str, Any]:
        answers = self._ask_all("stats")
        return {
            "connected": sum(a["connected"] for a in answers),
            "depth": sum(a["depth"] for a in answers),
            "attempts": sorted(t for a in answers for t in a["attempts"]),
            "fds": max(a["fds"] for a in answers),
            "threads": max(a["threads"] for a in answers),
            "max_rss_kb": max(a["max_rss_kb"] for a in answers),
        }

    def stop(self) -> None:
        if not self.procs:
            return
        try:
            self._ask_all("stop")
        finally:
            for p in self.procs:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            self.procs = []


def peak_rate(times: list[float], window: float = 1.0) -> float:
    """The highest number of events in any `window` seconds, per second."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
