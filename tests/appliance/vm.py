"""One virtual kiosk: qemu on the cached image (tests/appliance/image.py).

The disk is a qcow2 overlay on the cached root, so the cached image stays
clean and each test run starts from a fresh machine. `cut()` is a power cut:
qemu is killed (SIGKILL), the guest gets no shutdown; what the guest had
handed to its virtual disk survives (qemu's default cache=writeback), what
sat in the guest's own page cache is lost, which is what a cut tests.

Two serial ports: ttyS0 is the kernel console (console.log), ttyS1 the
harness's event channel (events.log); a named virtio serial port carries the
pin watcher's trace of the LED and buzzer lines (trace.log, see trace.py). (A
third 16550 would share its interrupt with ttyS0 and stall between console
writes.) A thread reads events.log and
trace.log and stamps each line with the host's monotonic clock when it first
appears, so timings are measured outside the guest. The trace lines of every
boot are kept (`boots_seen()`), with when each boot began and ended and whether it
ended in a cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.appliance.image import TRACE_PORT_NAME, Image
from tests.support.wait import wait_until

BROKER = "10.0.2.100"  # where the guest finds the test's broker (see VM.netdev)
QEMU = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}
QEMU_PACKAGE = {"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}  # Debian's, with QEMU[arch]
CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0"}
# qemu's virt board has a PL061 GPIO controller (its power button), built into Debian's
# arm64 kernel: probed first, it would be gpiochip0, where gpiozero's lgpio factory looks
# for the Pi's GPIO bank (pinctrl-bcm2711 is gpiochip0 on a Pi 4). Its initcall is left
# out, so the gpio-sim chip made at boot (drivers/board.sh) is gpiochip0 as on the Pi.
BOARD_CMDLINE = {"amd64": "", "arm64": "initcall_blacklist=pl061_gpio_driver_init"}


def qemu_binary(arch: str) -> str | None:
    return shutil.which(QEMU[arch])


def kvm_runs_guests(image: Image, workdir: Path) -> bool:
    """Whether KVM really runs a guest here: /dev/kvm may exist and still hang
    Debian's kernel (nested KVM). The kernel is booted with no init; under a
    working KVM it reaches the "no init" panic in seconds."""
    if image.arch != "amd64" or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    binary = qemu_binary(image.arch)
    if binary is None:
        return False
    # the answer holds until the host reboots: asked once per host boot
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    answer = image.kernel.with_name(f"kvm-probe-{boot_id}")
    if answer.exists():
        return answer.read_text().strip() == "yes"
    for old in image.kernel.parent.glob("kvm-probe-*"):
        old.unlink()
    log = workdir / "kvm-probe.log"
    cmd = [binary, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
           "-display", "none", "-no-reboot", "-serial", f"file:{log}", "-kernel", str(image.kernel),
           "-append", "console=ttyS0 panic=-1 rdinit=/nonexistent init=/nonexistent"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # a working KVM panics in a second or two; nested KVM hangs: no need to wait long
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    text = log.read_text(errors="replace") if log.exists() else ""
    works = "Kernel panic" in text
    answer.write_text("yes\n" if works else "no\n")
    return works


DISPATCHER = """\
n=1
while :; do
    while [ ! -e /mnt/host/jobs/$n.sh ]; do sleep 0.2; done
    echo "--- job $n" >&2
    bash /mnt/host/jobs/$n.sh
    echo "job-exit $n $?" >/dev/ttyS1
    n=$((n + 1))
done
"""


@dataclass
class Event:
    at: float  # host monotonic time the line was first seen
    text: str


@dataclass
class Boot:
    """One life of the machine, as the host saw it."""

    n: int
    started_at: float  # host monotonic time qemu was started
    ended_at: float | None = None  # when qemu was killed or powered off
    cut: bool = False  # ended by a power cut
    trace: list[Event] = field(default_factory=list)  # the pin watcher's lines


class VM:
    def __init__(self, image: Image, workdir: Path, *, accel: str = "tcg", memory_mb: int = 1024,
                 cpus: int = 2, broker_port: int | None = None) -> None:
        self.image = image
        self.workdir = workdir
        self.share = workdir / "share"
        self.share.mkdir(parents=True, exist_ok=True)
        self.disk = workdir / "disk.qcow2"
        self.accel = accel
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.broker_port = broker_port
        self.proc: subprocess.Popen[bytes] | None = None
        # what the image's harness runs: the jobs of share/jobs/, in order, as they come
        (self.share / "job.sh").write_text(DISPATCHER)
        self.boots = 0
        self.qmp_socket = workdir / "qmp.sock"
        self.started_at = 0.0
        self.events: list[Event] = []
        self.lives: list[Boot] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stop_reading = threading.Event()
        if not self.disk.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(image.root), str(self.disk)], check=True)
        # a second, empty drive (/dev/vdb): the outbox's drive in appliance mode
        self.data_disk = workdir / "data.raw"
        if not self.data_disk.exists():
            with self.data_disk.open("wb") as f:
                f.truncate(128 * 2**20)

    # --- life ---------------------------------------------------------------------

    def boot(self, *, append: str = "", ro_root: bool = False) -> None:
        """Starts the machine; the harness runs share/job.sh once it is up."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.boots += 1
        n = self.boots
        self.console = self.workdir / f"console-{n}.log"
        self.events_file = self.workdir / f"events-{n}.log"
        self.events_file.touch()
        self.trace_file = self.workdir / f"trace-{n}.log"
        self.trace_file.touch()
        shutil.rmtree(self.share / "jobs", ignore_errors=True)
        (self.share / "jobs").mkdir()
        console = CONSOLE[self.image.arch]
        cmdline = (f"root=/dev/vda {'ro' if ro_root else 'rw'} console={console} panic=-1 "
                   f"quiet systemd.show_status=0 ordoscan.harness {BOARD_CMDLINE[self.image.arch]} "
                   + append).strip()
        binary = qemu_binary(self.image.arch)
        assert binary is not None
        if self.image.arch == "amd64":
            machine = ["-accel", self.accel + (",thread=multi" if self.accel == "tcg" else ""),
                       "-cpu", "max" if self.accel == "tcg" else "host"]
            serial = ["-serial", f"file:{self.console}", "-serial", f"file:{self.events_file}"]
        else:
            # cortex-a57, not max: pointer authentication is slow to emulate
            machine = ["-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "cortex-a57"]
            # the virt board has one PL011 (ttyAMA0, the console); a two-port PCI 16550
            # (8250_pci is built into Debian's arm64 kernel) gives ttyS0 and ttyS1 from
            # the start, so the harness's event channel is ttyS1 as on amd64
            serial = ["-serial", f"file:{self.console}", "-chardev", "null,id=unused",
                      "-chardev", f"file,id=ev,path={self.events_file}",
                      "-device", "pci-serial-2x,chardev1=unused,chardev2=ev"]
        # the pin watcher's port, by name (/dev/virtio-ports/NAME in the guest)
        serial += ["-device", "virtio-serial-pci",
                   "-chardev", f"file,id=trace,path={self.trace_file}",
                   "-device", f"virtserialport,chardev=trace,name={TRACE_PORT_NAME}"]
        cmd = [binary, *machine, "-m", str(self.memory_mb), "-smp", str(self.cpus),
               "-nodefaults", "-display", "none", "-no-reboot", *serial,
               "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
               "-append", cmdline,
               "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=writeback,id=root",
               "-drive", f"file={self.data_disk},if=virtio,format=raw,cache=writeback,id=data",
               "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
               "-virtfs", f"local,path={self.share},mount_tag=host,security_model=none,id=host",
               "-netdev", self.netdev(), "-device", "virtio-net-pci,netdev=n0",
               "-device", "virtio-rng-pci"]
        self.qmp_socket.unlink(missing_ok=True)
        self.qemu_log = (self.workdir / f"qemu-{n}.log").open("wb")
        self.started_at = time.monotonic()
        life = Boot(n, self.started_at)
        with self._lock:
            self.events = []
            self.lives.append(life)
        self.proc = subprocess.Popen(cmd, stdout=self.qemu_log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self._stop_reading.clear()
        sources = [(self.events_file, self.events), (self.trace_file, life.trace)]
        self._reader = threading.Thread(target=self._read_events, args=(sources,), daemon=True)
        self._reader.start()

    def netdev(self) -> str:
        """qemu's user network, closed to the world (restrict=on): the one way out is
        the guest's BROKER address, each connection to it relayed by a socat to the
        test's broker on this machine's loopback."""
        spec = "user,id=n0,restrict=on"
        if self.broker_port is not None:
            spec += (f",guestfwd=tcp:{BROKER}:1883-cmd:socat STDIO "
                     f"TCP:127.0.0.1:{self.broker_port}")
        return spec

    def _read_events(self, sources: list[tuple[Path, list[Event]]]) -> None:
        """Follows each file, appending its lines to its list, until told to stop and
        nothing new came (a last pass after a cut takes what qemu had written)."""
        with contextlib.ExitStack() as stack:
            files = [(stack.enter_context(path.open("rb")), sink) for path, sink in sources]
            bufs = [b""] * len(files)
            while True:
                stopping = self._stop_reading.is_set()
                got = False
                for i, (f, sink) in enumerate(files):
                    chunk = f.read()
                    now = time.monotonic()
                    if not chunk:
                        continue
                    got = True
                    *lines, bufs[i] = (bufs[i] + chunk).split(b"\n")
                    with self._lock:
                        for line in lines:
                            text = line.decode("utf-8", "replace").strip("\r\x00 ")
                            if text:
                                sink.append(Event(now, text))
                if stopping and not got:
                    return
                if not got:
                    time.sleep(0.01)

    def cut(self) -> None:
        """Power cut: qemu killed, no shutdown in the guest."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._ended(cut=True)
        self._finish()

    def qmp(self, command: str, **arguments: object) -> object:
        """One command on qemu's monitor (QMP); returns its answer's `return`."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.qmp_socket))
            stream = s.makefile("rwb")

            def reply() -> dict[str, object]:
                # asynchronous events may come first: the answer has `return` or `error`
                while True:
                    line = stream.readline()
                    if not line:
                        raise AssertionError(f"qemu closed its monitor during {command}")
                    msg: dict[str, object] = json.loads(line)
                    if "return" in msg or "error" in msg or "QMP" in msg:
                        return msg

            def execute(name: str, args: dict[str, object]) -> object:
                stream.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
                stream.flush()
                msg = reply()
                if "error" in msg:
                    raise AssertionError(f"QMP {name} {args}: {msg['error']}")
                return msg["return"]

            reply()  # the greeting
            execute("qmp_capabilities", {})
            return execute(command, dict(arguments))

    def throttle_writes(self, drive: str, bytes_per_s: int) -> None:
        """Slows the guest's writes to `drive` (root or data) from now on; 0 lifts it. A slow
        disk stretches a short operation (a checkpoint's fsync) so a cut can land inside it."""
        limits = {k: 0 for k in ("bps", "bps_rd", "iops", "iops_rd", "iops_wr")}
        self.qmp("block_set_io_throttle", device=drive, bps_wr=bytes_per_s, **limits)

    def wait_off(self, timeout: float = 60) -> None:
        """Waits for the guest to power off by itself (then cuts if it does not)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cut()
            raise AssertionError(f"the VM did not power off within {timeout:g} s; "
                                 f"console: {self.console_tail()}") from None
        self._ended(cut=False)
        self._finish()

    def _ended(self, *, cut: bool) -> None:
        with self._lock:
            if self.lives and self.lives[-1].ended_at is None:
                self.lives[-1].ended_at = time.monotonic()
                self.lives[-1].cut = cut

    def _finish(self) -> None:
        self._stop_reading.set()
        if self._reader is not None:
            self._reader.join(timeout=5)
        with contextlib.suppress(Exception):
            self.qemu_log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- events ---------------------------------------------------------------------

    def lines(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def boots_seen(self) -> list[Boot]:
        """Every boot so far, with its trace lines (copies)."""
        with self._lock:
            return [Boot(b.n, b.started_at, b.ended_at, b.cut, list(b.trace)) for b in self.lives]

    def find(self, pattern: str) -> Event | None:
        rx = re.compile(pattern)
        return next((e for e in self.lines() if rx.search(e.text)), None)

    def wait_event(self, pattern: str, timeout: float) -> Event:
        def seen() -> Event | None:
            found = self.find(pattern)
            if found is None and not self.running:
                raise AssertionError(f"the VM stopped before {pattern!r}; events: "
                                     f"{[e.text for e in self.lines()][-15:]}; "
                                     f"console: {self.console_tail()}")
            return found

        try:
            return wait_until(seen, timeout, f"{pattern!r} from the VM", every=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}\nevents: {[x.text for x in self.lines()][-20:]}\n"
                                 f"job log: {self.job_log()[-3000:]}\n"
                                 f"console: {self.console_tail()}") from None

    def console_tail(self, n: int = 3000) -> str:
        return self.console.read_text(errors="replace")[-n:] if self.console.exists() else ""

    def job_log(self) -> str:
        p = self.share / "job.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def submit(self, script: str) -> int:
        """Queues a job (bash) for the running or next boot; returns its number. The
        guest runs jobs one after the other and reports `job-exit N RC`."""
        jobs = self.share / "jobs"
        jobs.mkdir(exist_ok=True)
        n = len(list(jobs.glob("*.sh"))) + 1
        tmp = jobs / f".{n}.tmp"
        tmp.write_text(script)
        tmp.rename(jobs / f"{n}.sh")
        return n

    def run(self, script: str, timeout: float) -> str:
        """Runs a job and waits for its end; returns its exit status."""
        n = self.submit(script)
        return self.wait_event(rf"^job-exit {n} ", timeout).text.split()[-1]
