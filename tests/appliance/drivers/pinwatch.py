#!/usr/bin/python3
"""Streams the kiosk's LED and buzzer lines, as the kernel sets them, to the host.

Runs in the test image (unit kiosk-pinwatch.service, before ordoscan.service).
Every value a consumer sets on a line goes through gpiolib, which emits the
tracepoint gpio:gpio_value; the watcher enables it, with the trace clock on
CLOCK_MONOTONIC, and follows trace_pipe. So even a change that lasts
microseconds is seen (the daemon's feedback worker, woken late, shows the
states it missed briefly, in order). Without tracefs it falls back to polling
gpio-sim's /sys/devices/platform/gpio-sim.N/gpiochipM/sim_gpioL/value (a line
held as an output cannot also be requested for events), which misses changes
shorter than its period. Each change goes out as one line on a virtio serial
port that qemu writes to a file on the host, outside the VM (a power cut keeps
it):

    pins <guest CLOCK_MONOTONIC> <bcm>=<0|1> ...

The first line after a start holds every watched line; the host stamps each
line as it arrives and places the guest's times on its own clock.

    pinwatch.py PORT BCM[,BCM...]
"""

import itertools
import os
import re
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.003  # the fallback's period: a good read's beep is 80 ms, its green dip 150 ms
TRACEFS = Path("/sys/kernel/tracing")
# "  python3-649 [001] .....  88.919929: gpio_value: 983 set 1"
EVENT = re.compile(rb"\s(\d+\.\d+): gpio_value: (\d+) set (\d)")


def open_port(path: str) -> int:
    """The port, once udev has made it (virtio_console loads at boot)."""
    for _ in range(300):
        if os.path.exists(path):
            break
        time.sleep(0.1)
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    if os.isatty(fd):  # a serial console: raw output, no "\n" -> "\r\n"
        attrs = termios.tcgetattr(fd)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def traced(base: int, pins: list[int]) -> Iterator[tuple[float, dict[int, bytes]]]:
    """Enables the tracepoint for the watched lines now; the changes as they come."""
    events = TRACEFS / "events/gpio/gpio_value"
    (TRACEFS / "trace_clock").write_text("mono")
    (events / "filter").write_text(" || ".join(f"gpio == {base + p}" for p in pins))
    (TRACEFS / "trace").write_text("")  # a restarted watcher starts from now
    (events / "enable").write_text("1")
    pipe = (TRACEFS / "trace_pipe").open("rb", buffering=0)

    def follow() -> Iterator[tuple[float, dict[int, bytes]]]:
        pending = b""
        while True:
            *done, pending = (pending + pipe.read(65536)).split(b"\n")
            for line in done:
                m = EVENT.search(line)
                if m:
                    yield float(m.group(1)), {int(m.group(2)) - base: m.group(3)}

    return follow()


def polled(fds: dict[int, int]) -> Iterator[tuple[float, dict[int, bytes]]]:
    while True:
        now = time.monotonic()
        yield now, {pin: os.pread(fd, 8, 0)[:1] for pin, fd in fds.items()}
        time.sleep(POLL_S)


def main() -> None:
    port, pins = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
    chip, dev, first_line = Path("/run/kiosk-board/gpiochip").read_text().split()
    sysfs = Path("/sys/devices/platform") / dev / chip
    fds = {p: os.open(sysfs / f"sim_gpio{p}" / "value", os.O_RDONLY) for p in pins}
    out = open_port(port)
    # the tracepoint names lines by global number: line 0 of the chip is first_line
    tracing = (TRACEFS / "events/gpio/gpio_value").exists() and int(first_line) >= 0
    base = int(first_line) if tracing else None
    how = "tracepoint gpio:gpio_value" if base is not None else f"polling every {POLL_S:g} s"
    os.write(out, f"pinwatch {chip} {','.join(map(str, pins))} {how}\n".encode())
    changes = polled(fds) if base is None else traced(base, pins)
    # the levels once the changes are being recorded, then the changes
    first = (time.monotonic(), {p: os.pread(fd, 8, 0)[:1] for p, fd in fds.items()})
    last: dict[int, bytes] = {}
    ready = False
    for at, levels in itertools.chain([first], changes):
        changed = [f"{p}={v.decode()}" for p, v in sorted(levels.items()) if last.get(p) != v]
        last.update(levels)
        if changed:
            os.write(out, f"pins {at:.6f} {' '.join(changed)}\n".encode())
        if not ready:  # the first levels are out: the kiosk may start
            ready = subprocess.run(["systemd-notify", "--ready"], check=False) is not None


if __name__ == "__main__":
    main()
