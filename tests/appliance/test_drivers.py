"""The virtual kiosk on real kernel drivers: its LEDs and buzzer on a gpio-sim chip
driven through lgpio, its camera a V4L2 device (v4l2loopback).

One VM of its own (the fixture of test_appliance.py), the kiosk installed as a
pharmacy's installer does. A scene picture dropped into /run/scenes is played
into /dev/video0 by the image's feeder as a USB camera streams it; the daemon
reads it through its `v4l2` source (OpenCV), and the scan must reach the
subscriber on this machine. The output lines, as the kernel holds them, reach
this machine on a virtio serial port of the VM (trace.py) and are decoded by the
SPEC §4 decoder of the rigs: the good read must show as a green dip with one
beep, with SPEC §4's timings within a tolerance for an emulated machine.

gpiozero's lgpio factory wants a Raspberry Pi board revision: the image's
`kiosk-board.service` (drivers/board.sh) writes a copy of /proc/cpuinfo with a Pi
4's `Revision` line, and a drop-in of the test image binds it over /proc/cpuinfo
in ordoscan.service's mount namespace only. The package and the firmware are
those of a Pi.

    ./dev appliance -k drivers
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from ordoscan import feedback

from tests.appliance.test_appliance import (
    DEVICE,
    REPO,
    SITE,
    Appliance,
    boot_until_ready,
    event_value,
    kiosk_toml,
    open_appliance,
    power_off,
)
from tests.appliance.trace import Trace
from tests.hil.signals import summary
from tests.support.wait import wait_until

# A VM of its own: in the full suite only. The short run of every test run already has
# its kiosk on the same drivers (test_appliance.py: v4l2 camera, lgpio on gpio-sim, the
# power cuts' beeps counted from the lines).
pytestmark = [pytest.mark.appliance, pytest.mark.appliance_full, pytest.mark.timeout(3600)]

RESULTS = REPO / "build" / "appliance-drivers.json"
# The guest stamps each change as gpiolib takes it; an emulated guest on a loaded
# machine wakes the daemon's feedback worker late, never early: a wide margin above,
# a small one below.
EARLY_S, LATE_S = 0.03, 0.3


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Appliance, Trace]]:
    with open_appliance(tmp_path_factory) as a:
        yield a, Trace(a.vm)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(a.results, indent=2, default=str) + "\n")


# What the running kiosk is on, sent to the host (a job's lines, after READY): the modules,
# the chip and its group, the camera, and the daemon's journal into the share.
SHOW_DRIVERS = """
ev "modules $(lsmod | awk '$1 == "gpio_sim" || $1 == "v4l2loopback" {print $1}' | sort | tr '\\n' ' ')"
ev "chip $(cat /run/kiosk-board/gpiochip) $(stat -c '%G:%a' /dev/$(cut -d' ' -f1 /run/kiosk-board/gpiochip))"
ev "video $(cat /sys/class/video4linux/video0/name) $(stat -c '%G' /dev/video0)"
journalctl -u ordoscan -o cat --no-pager >"$SHARE/drivers-journal.txt"
"""


def check_drivers(a: Appliance) -> str:
    """After SHOW_DRIVERS: gpio-sim and v4l2loopback loaded, the chip the gpio group's, the
    loopback camera the video group's, and the daemon reading it through its v4l2 source.
    Returns the chip's name (gpiochipN)."""
    assert event_value(a, "modules").split() == ["gpio_sim", "v4l2loopback"]
    chip, dev, _first_line, owner = event_value(a, "chip").split()
    assert re.fullmatch(r"gpiochip\d+", chip) and dev.startswith("gpio-sim."), (chip, dev)
    assert owner == "gpio:660", owner
    assert event_value(a, "video").split() == ["kiosk-camera", "video"]
    journal = (a.vm.share / "drivers-journal.txt").read_text()
    assert "v4l2 /dev/video0 open: YUYV 1280x720" in journal, journal[-3000:]
    return chip


def within(measured: float, nominal: float) -> bool:
    return nominal - EARLY_S <= measured <= nominal + LATE_S


def test_kiosk_starts_on_the_kernel_drivers(kiosk: tuple[Appliance, Trace]) -> None:
    a, trace = kiosk
    deb = a.debs[1].name
    (a.vm.share / "kiosk.toml").write_text(kiosk_toml(camera="v4l2"))
    a.vm.boot()
    a.run(f"""
cp "$SHARE/{deb}" /root/
bash "$SHARE/provisioning/install.sh" install --source /root/{deb} --site {SITE} --device-id {DEVICE} --broker 127.0.0.1 --port 1883 >"$SHARE/setup-install.log" 2>&1
install -m 0640 -o root -g ordoscan "$SHARE/kiosk.toml" /etc/ordoscan/ordoscan.toml
cp "$SHARE/relay.service" /etc/systemd/system/broker-relay.service
systemctl daemon-reload
systemctl enable --now broker-relay.service
systemctl restart ordoscan.service
wait_for 120 is_active ordoscan.service || {{ journalctl -u ordoscan -n 50 --no-pager; exit 1; }}
""" + SHOW_DRIVERS, 1800)
    check_drivers(a)
    # the kiosk came up on the chip (it was started more than once in this boot: the
    # package's own start, then the site's config)
    wait_until(lambda: "ready(3)" in trace.tokens(a.vm.boots), 60,
               "the kiosk's ready signal on the lines")


def test_boot_to_ready_with_the_drivers(kiosk: tuple[Appliance, Trace]) -> None:
    """From qemu's start to READY=1 with gpio-sim and v4l2loopback loaded and configured
    before the daemon; the trace of the new boot shows the kiosk coming up again."""
    a, trace = kiosk
    power_off(a)
    a.results["drivers_boot_to_ready_s"] = round(boot_until_ready(a), 1)
    a.results["drivers_boot_to_ready_guest_s"] = round(int(event_value(a, "ready-at")) / 1e6, 1)
    tokens = wait_until(lambda: trace.tokens(a.vm.boots), 60, "the kiosk's signals on the lines")
    a.results["drivers_boot_tokens"] = summary(tokens)
    # ready, and nothing else; its three notes may be fewer on the lines when the daemon,
    # starved under emulation, catches up on notes faster than the watcher polls
    assert [t.split("(")[0] for t in tokens] == ["ready"], tokens


def test_scan_through_v4l2_and_its_good_read_on_the_lines(kiosk: tuple[Appliance, Trace]) -> None:
    """One picture in front of the V4L2 camera: delivered, and signalled on the lines as
    SPEC §4 says (green off 150 ms, one 80 ms beep)."""
    a, trace = kiosk
    boot = a.vm.boots
    before = len(trace.good_reads(boot))
    names = a.frames_for(1, "v4l2")
    a.run(f'feed "$SHARE/frames/{names[0]}"\n', 120)
    assert a.sub.wait_for(lambda s: a.fed[-1] in {m.payload for m in a.scans()}, 180), (
        f"the scan fed through /dev/video0 was not delivered; job log:\n{a.vm.job_log()[-2000:]}")

    def signalled() -> bool:
        return len(trace.good_reads(boot)) > before

    wait_until(signalled, 30, f"a good read on the lines; seen {trace.tokens(boot)}")
    tokens = trace.tokens(boot)
    a.results["drivers_tokens"] = summary(tokens)
    assert [t for t in tokens if not t.startswith("ready")] == ["good_read(1)"], summary(tokens)
    read = trace.good_reads(boot)[-1]
    dips = [length for start, length in trace.runs("green", False, boot) if start >= read.t - 0.01]
    beeps = [length for start, length in trace.runs("buzzer", True, boot) if start >= read.t - 0.05]
    assert dips and beeps, (dips, beeps)
    a.results.update(good_read_dip_s=round(dips[0], 3), good_read_beep_s=round(beeps[0], 3))
    assert within(dips[0], feedback.GOOD_READ_DIP_S), f"green dip {dips[0]:.3f} s"
    assert within(beeps[0], feedback.BEEP_S), f"beep {beeps[0]:.3f} s"
    # the ready notes are reported only: a worker woken late shows the notes it missed
    # briefly, in order (feedback's catch-up), so their lengths say more about the load
    a.results["ready_beeps_s"] = [round(x, 3) for _, x in trace.runs("buzzer", True, boot)][:3]


def test_good_reads_before_a_cut_are_delivered(kiosk: tuple[Appliance, Trace]) -> None:
    """The trace survives a power cut: the good reads seen on the buzzer line before it
    are counted on this machine, and each reaches the subscriber after the reboot."""
    a, trace = kiosk
    boot = a.vm.boots
    before = len(trace.good_reads(boot))  # the earlier tests' reads, in this boot
    names = a.frames_for(3, "cut")
    a.run("".join(f'feed "$SHARE/frames/{f}"\n' for f in names), 120)
    wait_until(lambda: len(trace.good_reads(boot)) >= before + 2, 180,
               f"two good reads on the lines; seen {trace.tokens(boot)}")
    a.vm.cut()
    seen = len(trace.good_reads(boot)) - before
    boot_until_ready(a)
    fed = set(a.fed[-3:])
    assert a.sub.wait_for(lambda _s: len(fed & {m.payload for m in a.scans()}) >= seen, 180), (
        f"{seen} good reads before the cut, delivered: "
        f"{len(fed & {m.payload for m in a.scans()})}")
    a.results["cut_good_reads"] = seen
