#!/usr/bin/python3
"""Streams the kiosk's LED and buzzer lines, as the kernel holds them, to the host.

Runs in the test image (unit kiosk-pinwatch.service, before ordoscan.service).
gpio-sim shows the level a consumer drives on each line in
/sys/devices/platform/gpio-sim.N/gpiochipM/sim_gpioL/value; a line the daemon
holds as an output cannot also be requested for events, so the values are
polled. Each change goes out as one line on a virtio serial port that qemu
writes to a file on the host, outside the VM (a power cut keeps it):

    pins <guest CLOCK_MONOTONIC> <bcm>=<0|1> ...

The first line after a start holds every watched line; the host stamps each
line as it arrives and places the guest's times on its own clock.

    pinwatch.py PORT BCM[,BCM...]
"""

import os
import subprocess
import sys
import termios
import time
from pathlib import Path

POLL_S = 0.003  # a good read's beep is 80 ms, its green dip 150 ms


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


def main() -> None:
    port, pins = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
    chip, dev = Path("/run/kiosk-board/gpiochip").read_text().split()
    base = Path("/sys/devices/platform") / dev / chip
    fds = {p: os.open(base / f"sim_gpio{p}" / "value", os.O_RDONLY) for p in pins}
    out = open_port(port)
    os.write(out, f"pinwatch {chip} {','.join(map(str, pins))}\n".encode())
    last: dict[int, bytes] = {}
    ready = False
    while True:
        now = time.monotonic()
        changed = []
        for pin, fd in fds.items():
            value = os.pread(fd, 8, 0)[:1]
            if last.get(pin) != value:
                last[pin] = value
                changed.append(f"{pin}={value.decode()}")
        if changed:
            os.write(out, f"pins {now:.6f} {' '.join(changed)}\n".encode())
        if not ready:  # the first levels are out: the kiosk may start
            ready = subprocess.run(["systemd-notify", "--ready"], check=False) is not None
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
