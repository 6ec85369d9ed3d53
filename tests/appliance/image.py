"""The virtual kiosk's disk image: a Debian bookworm root made with debootstrap
(systemd as init, Debian's kernel), booted by qemu with a direct kernel boot.

Built once and cached under /var/cache/ordoscan-test/appliance (ORDOSCAN_TEST_CACHE):
`root-<key>.raw` (ext4, no partition table), `vmlinuz-<key>`, `initrd-<key>`.
The key hashes the recipe (packages, files written, configuration steps), the
mirror and the architecture, so a change to the recipe builds a new image and a
fresh machine builds one.

In the image, the unit `ordoscan-harness.service` runs only when the kernel
command line holds the word `ordoscan.harness`: it mounts the host folder
shared over 9p (tag `host`) on /mnt/host and runs /mnt/host/job.sh there.
The job writes its events to the second serial port (/dev/ttyS1), which the
host reads from a file outside the VM, so they survive a power cut; the kernel
console is the first serial port.

Real drivers for the kiosk's devices (tests/appliance/drivers/):
- GPIO: `gpio-sim`, which Debian's kernels do not build, is built out of tree
  from `linux-source-6.1` at the image kernel's exact version, with its
  headers, in a throw-away copy of the root (build.sh); `kiosk-board.service`
  loads it at boot and makes, through configfs, a 58-line chip labelled as a
  Pi 4's (board.sh). The daemon drives it with gpiozero's lgpio factory (the
  lgpio wheel in /usr/local, where Raspberry Pi OS has python3-lgpio).
- The LED and buzzer lines as the kernel holds them are streamed to the host
  by `kiosk-pinwatch.service` (pinwatch.py) on a named virtio serial port,
  see tests/appliance/trace.py.
- Camera: `v4l2loopback` 0.13.2 (the source of bookworm-backports'
  v4l2loopback-dkms, pinned by version and sha256 in build.sh, patched there for
  a race of REQBUFS with write()), built for the image's kernel in the same copy;
  `kiosk-camfeed.service` (camfeed.py) plays the PNG
  pictures dropped into /run/scenes into /dev/video0 as a USB camera streams.
  OpenCV for the kiosk's v4l2 source is the opencv-python-headless wheel in
  /usr/local (Raspberry Pi OS would give python3-opencv, 150 packages more).
The modules are cached by kernel version (`drivers-<arch>-<kernel>-<key>/`),
so a rebuilt image with the same kernel does not build them again.

Another architecture (arm64, the Pi's) is built on this machine through binfmt_misc and
qemu-user-static: debootstrap's first stage (--foreign) unpacks, its second stage and the
configuration run in the chroot under qemu-user (see foreign.py). Its kernel modules are
prepared in the chroot (build.sh --sources: apt, the sources) and compiled on this machine
by Debian's cross compiler against the chroot's headers (_cross_compile).

The configured root (debootstrap and _configure, before the rig) is cached too, as a
folder `base-<arch>-<key>/`: a change to the rig (drivers, units, wheels) makes a new
image from it without running debootstrap again.

    python -m tests.appliance.image [--arch amd64|arm64]    builds (or finds) the image
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.appliance import foreign
from tests.support import TEST_CACHE
from tests.support.debian import SUITE, debian_mirror, safe_rmtree
from tests.support.debian import arch as host_arch

CACHE = TEST_CACHE / "appliance"
IMAGE_SIZE = "3G"
# What a Raspberry Pi OS Lite kiosk has that minbase lacks, and what the
# package needs from apt (numpy and Pillow come from Debian, as on the Pi).
PACKAGES = [
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "python3",
    "python3-venv",
    "python3-numpy",
    "python3-pil",
    "ca-certificates",
    "openssl",
    "adduser",
    "socat",  # the guest's end of the broker relay (see NETWORK)
    "procps",
]
KERNEL_PACKAGE = {"amd64": "linux-image-amd64", "arm64": "linux-image-arm64"}
DRIVERS = Path(__file__).resolve().with_name("drivers")
RIG = "/usr/local/lib/kiosk-rig"  # where the image keeps the drivers' helpers
# Python modules the kiosk takes from the system (its venv has --system-site-packages):
# on Raspberry Pi OS python3-lgpio and python3-opencv; here the wheels, installed once.
SYSTEM_WHEELS = ["lgpio==0.2.2.0", "opencv-python-headless==4.10.0.84"]
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
# the kernel modules of another architecture's image are cross-compiled (_cross_compile)
CROSS_COMPILE = {"arm64": "aarch64-linux-gnu-"}
CROSS_PACKAGE = {"arm64": "gcc-aarch64-linux-gnu"}
# The virtio serial port the pin watcher writes to (vm.py gives it to qemu by this name).
TRACE_PORT_NAME = "org.ordoscan.pintrace"
KIOSK_PINS = "17,27,22,18"  # green, amber, red, buzzer: the kiosk's default BCM pins
CAMERA = {"device": "/dev/video0", "size": (1280, 720), "fps": 8}
FEED_HOLD_S, FEED_GAP_S = 1.5, 0.3  # each picture in view for this long, then the counter
# qemu's user network: the guest is 10.0.2.15, the host's loopback answers at 10.0.2.2.
NETWORK = """\
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
HARNESS_UNIT = """\
[Unit]
Description=test harness (runs /mnt/host/job.sh from the host share)
ConditionKernelCommandLine=ordoscan.harness
After=local-fs.target

[Service]
Type=exec
ExecStart=/usr/local/sbin/ordoscan-harness
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""
HARNESS = """\
#!/bin/bash
# Mounts the host share and runs the job the host left there.
set -u
modprobe 9pnet_virtio 2>/dev/null
mkdir -p /mnt/host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /mnt/host || {
    echo "harness: no host share" >/dev/ttyS1; exit 1; }
stty -F /dev/ttyS1 raw -echo 2>/dev/null
echo "harness: up $(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS1
cd /mnt/host
bash /mnt/host/job.sh >>/mnt/host/job.log 2>&1
rc=$?
echo "harness: job-exit $rc" >/dev/ttyS1
"""
# Units a kiosk does not need at boot: fewer units, a faster boot under emulation.
MASKED = [
    "getty.target",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "serial-getty@ttyAMA0.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "systemd-tmpfiles-clean.timer",
    "man-db.timer",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    # measured with systemd-analyze blame in the VM: each costs seconds of an emulated boot
    # and the kiosk uses none (no LVM, FUSE, loop devices, EFI, binfmt, huge pages, POSIX
    # message queues, debugfs, tracing; its users are made by the package, not sysusers.d)
    "e2scrub_reap.service",
    "modprobe@dm_mod.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "modprobe@efi_pstore.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-network-generator.service",
    "systemd-sysusers.service",
]
FSTAB = "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"
BOARD_UNIT = f"""\
[Unit]
Description=test rig: the Raspberry Pi's GPIO as a gpio-sim chip, and its board revision
After=systemd-udevd.service systemd-modules-load.service
Before=ordoscan.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={RIG}/board.sh

[Install]
WantedBy=multi-user.target
"""
PINWATCH_UNIT = """\
[Unit]
Description=test rig: the LED and buzzer lines, as the kernel holds them, streamed to the host
Requires=kiosk-board.service
After=kiosk-board.service
Before=ordoscan.service

[Service]
Type=notify
NotifyAccess=all
ExecStart=/usr/bin/python3 {rig}/pinwatch.py {port} {pins}
Restart=always
RestartSec=0.2

[Install]
WantedBy=multi-user.target
"""
CAMFEED_UNIT = f"""\
[Unit]
Description=test rig: scene pictures played into a V4L2 loopback camera
After=systemd-udevd.service
Before=ordoscan.service

[Service]
Type=notify
NotifyAccess=all
# exclusive_caps: the device says "capture" once a writer streams, as OpenCV wants
ExecStartPre=/sbin/modprobe v4l2loopback devices=1 video_nr=0 exclusive_caps=1 \\
    card_label=kiosk-camera
ExecStart=/usr/bin/python3 {RIG}/camfeed.py {CAMERA['device']} /run/scenes \\
    {CAMERA['size'][0]} {CAMERA['size'][1]} {CAMERA['fps']} {FEED_HOLD_S} {FEED_GAP_S}
Restart=always
RestartSec=0.5

[Install]
WantedBy=multi-user.target
"""
# ordoscan.service (from the package, once installed) starts after the rig; the board
# revision gpiozero reads is bound over /proc/cpuinfo in its namespace only (board.sh).
KIOSK_DROPIN = """\
[Unit]
Wants=kiosk-board.service kiosk-pinwatch.service kiosk-camfeed.service
After=kiosk-board.service kiosk-pinwatch.service kiosk-camfeed.service

[Service]
BindReadOnlyPaths=/run/kiosk-board/cpuinfo:/proc/cpuinfo
"""
# Raspberry Pi OS gives /dev/gpiochip* to the gpio group (raspberrypi-sys-mods)
GPIO_UDEV = 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"\n'
UNSAFE_IO = "etc/dpkg/dpkg.cfg.d/build-unsafe-io"
# The initramfs holds only what finds the root on qemu's virtio disk: a small
# initramfs unpacks and probes in a fraction of the time of MODULES=most.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "virtio_mmio", "ext4", "crc32c_generic"]


@dataclass(frozen=True)
class Image:
    arch: str
    root: Path
    kernel: Path
    initrd: Path
    kernel_version: str


def recipe_key(arch: str) -> str:
    """What the image is made of and how: a change to any of it builds a new image."""
    recipe = [SUITE, IMAGE_SIZE, PACKAGES, KERNEL_PACKAGE[arch], NETWORK, HARNESS_UNIT, HARNESS,
              MASKED, FSTAB, INITRAMFS_MODULES, inspect.getsource(_configure), arch,
              debian_mirror(), SYSTEM_WHEELS, TRACE_PORT_NAME, KIOSK_PINS, BOARD_UNIT,
              PINWATCH_UNIT, CAMFEED_UNIT, KIOSK_DROPIN, GPIO_UDEV, _drivers_key(),
              inspect.getsource(_install_rig)]
    return hashlib.sha256(repr(recipe).encode()).hexdigest()[:12]


def base_key(arch: str) -> str:
    """What the configured root is made of, before the rig (drivers, units, wheels): a
    change to the rig alone reuses it (for arm64, 20 minutes of emulated second stage)."""
    recipe = [SUITE, PACKAGES, KERNEL_PACKAGE[arch], NETWORK, HARNESS_UNIT, HARNESS, MASKED,
              FSTAB, INITRAMFS_MODULES, inspect.getsource(_configure), arch, debian_mirror(),
              inspect.getsource(foreign.second_stage)]
    return hashlib.sha256(repr(recipe).encode()).hexdigest()[:12]


def _run(cmd: list[str], what: str, timeout: float = 1500) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def _chroot(root: Path, script: str, timeout: float = 900) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["chroot", str(root), "/bin/sh", "-ec", script], capture_output=True,
                       text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"in the image root: {script}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def _configure(root: Path) -> None:
    (root / "etc/hostname").write_text("kiosk\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 kiosk\n")
    (root / "etc/fstab").write_text(FSTAB)
    (root / "etc/systemd/network/10-qemu.network").write_text(NETWORK)
    (root / "etc/systemd/system/ordoscan-harness.service").write_text(HARNESS_UNIT)
    harness = root / "usr/local/sbin/ordoscan-harness"
    harness.write_text(HARNESS)
    harness.chmod(0o755)
    # the board's groups: the Pi OS image has them, the unit needs them
    _chroot(root, "getent group gpio >/dev/null || groupadd --system gpio")
    _chroot(root, "passwd -d root")
    _chroot(root, "systemctl enable systemd-networkd.service ordoscan-harness.service")
    _chroot(root, "systemctl mask " + " ".join(MASKED))
    _chroot(root, "systemctl set-default multi-user.target")
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
    (root / "etc/initramfs-tools/modules").write_text("\n".join(INITRAMFS_MODULES) + "\n")
    _chroot(root, "update-initramfs -u -k all")
    # no apt lists in the image: everything it needs is in it, installs are offline
    _chroot(root, "apt-get clean; rm -rf /var/lib/apt/lists/*")
    # the kiosk's own dpkg runs (install, upgrade, the cut during one) sync as on a Pi
    (root / UNSAFE_IO).unlink()


def _drivers_key() -> str:
    """What the rig's files are: a change to any of them builds a new image (and, for
    build.sh, new modules)."""
    digest = hashlib.sha256()
    for f in sorted(f for f in DRIVERS.glob("*") if f.is_file()):
        digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()[:12]


def build_drivers(root: Path, arch: str, kernel: str, log: object = sys.stderr) -> Path:
    """gpio-sim.ko and v4l2loopback.ko for `kernel`, from the cache or built in a copy of
    `root` (the compiler, the headers and the kernel source never reach the image). For
    another architecture the copy only prepares the sources (its apt, under qemu-user)
    and this machine compiles them (_cross_compile)."""
    script = (DRIVERS / "build.sh").read_bytes()
    cross = arch != host_arch()
    if cross:
        script += inspect.getsource(_cross_compile).encode()
    out = CACHE / f"drivers-{arch}-{kernel}-{hashlib.sha256(script).hexdigest()[:12]}"
    if (out / "gpio-sim.ko").exists() and list(out.glob("v4l2loopback.ko*")):
        return out
    t0 = time.monotonic()
    work = CACHE / f"drivers-build-{arch}-{os.getpid()}"
    safe_rmtree(work)
    _run(["cp", "-a", "--reflink=auto", str(root), str(work)], "copying the root for the build")
    debs = CACHE / f"debs-{arch}"  # the downloads (linux-source is 140 MB) are kept
    mounts = [(debs, work / "var/cache/apt/archives"), (Path("/proc"), work / "proc")]
    try:
        for src, dst in mounts:
            dst.mkdir(parents=True, exist_ok=True)
            _run(["mount", "--bind", str(src), str(dst)], f"mount --bind {src}")
        shutil.copy2(DRIVERS / "build.sh", work / "root/build-drivers.sh")
        _chroot(work, f"bash /root/build-drivers.sh {kernel} /root/drivers-out"
                      + (" --sources" if cross else ""), timeout=900 if not cross else 3600)
        if cross:
            _cross_compile(work, arch, kernel, work / "root/drivers-out")
        tmp = out.with_suffix(".tmp")
        safe_rmtree(tmp)
        shutil.copytree(work / "root/drivers-out", tmp)
        tmp.rename(out)
    finally:
        safe_rmtree(work)
    print(f"appliance image: drivers for {kernel} built in {time.monotonic() - t0:.0f} s: "
          f"{sorted(f.name for f in out.iterdir())}", file=log, flush=True)
    return out


def _cross_compile(root: Path, arch: str, kernel: str, out: Path) -> None:
    """Compiles the module sources build.sh --sources left in out/src/ for `kernel` with
    Debian's cross compiler (gcc-aarch64-linux-gnu), against the headers installed in
    `root` (a copy of the image's root). Measured here: about a minute, where the same
    build under qemu-user took far longer (docs/HIL.md)."""
    prefix = CROSS_COMPILE[arch]
    if shutil.which(f"{prefix}gcc-12") is None:
        raise RuntimeError(f"no {prefix}gcc-12 to build the {arch} kernel modules: "
                           f"apt-get install {CROSS_PACKAGE[arch]} (./dev setup installs it)")
    headers = root / "usr/src" / f"linux-headers-{kernel}"
    makefile = headers / "Makefile"
    # Debian's headers include their common half by its absolute path: the copy's here
    text = makefile.read_text()
    makefile.write_text(text.replace("include /usr/src/", f"include {root}/usr/src/"))
    # kbuild's own helpers (fixdep, modpost) are the root's arm64 programs: binfmt_misc
    # runs them under qemu-user, with the cross toolchain's C library
    env = {**os.environ, "QEMU_LD_PREFIX": f"/usr/{prefix.rstrip('-')}"}
    for src in sorted((out / "src").iterdir()):
        r = subprocess.run(["make", "-s", "-C", str(headers), f"ARCH={arch}",
                            f"CROSS_COMPILE={prefix}", f"M={src}", "modules"],
                           capture_output=True, text=True, env=env, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"cross-compiling {src.name} for {kernel} failed:\n"
                               f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        for ko in src.glob("*.ko"):
            shutil.copy2(ko, out / ko.name)
    shutil.rmtree(out / "src")


def _system_wheels(root: Path, arch: str) -> None:
    """SYSTEM_WHEELS into the image's /usr/local, for its Python 3.11 and architecture,
    downloaded once into the wheel cache."""
    wheels = CACHE.parent / "wheels" / f"system-{arch}"
    wheels.mkdir(parents=True, exist_ok=True)
    target = root / "usr/local/lib/python3.11/dist-packages"
    platform = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
    for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_34"):
        platform += ["--platform", f"{tag}_{MACHINE[arch]}"]
    pip = [sys.executable, "-m", "pip"]
    found = subprocess.run([*pip, "download", "-q", "--no-deps", "--no-index", "--find-links",
                            str(wheels), *platform, "-d", str(wheels), *SYSTEM_WHEELS],
                           capture_output=True)
    if found.returncode != 0:
        _run([*pip, "download", "-q", "--no-deps", *platform, "-d", str(wheels), *SYSTEM_WHEELS],
             "pip download of the system wheels")
    # numpy stays apt's (python3-numpy), as on the Pi: no dependencies pulled
    _run([*pip, "install", "-q", "--no-deps", "--no-index", "--find-links", str(wheels),
          *platform, "--target", str(target), *SYSTEM_WHEELS], "pip install of the system wheels")


def _install_rig(root: Path, arch: str, kernel: str, modules: Path) -> None:
    """The drivers and the rig's units into the image."""
    extra = root / "lib/modules" / kernel / "updates/kiosk-rig"
    extra.mkdir(parents=True, exist_ok=True)
    for ko in modules.glob("*.ko*"):
        shutil.copy2(ko, extra / ko.name)
    _chroot(root, f"depmod -a {kernel}")
    rig = root / RIG.lstrip("/")
    rig.mkdir(parents=True, exist_ok=True)
    for name in ("board.sh", "pinwatch.py", "camfeed.py"):
        shutil.copy2(DRIVERS / name, rig / name)
        (rig / name).chmod(0o755)
    units = root / "etc/systemd/system"
    (units / "kiosk-board.service").write_text(BOARD_UNIT)
    (units / "kiosk-pinwatch.service").write_text(
        PINWATCH_UNIT.format(rig=RIG, port=f"/dev/virtio-ports/{TRACE_PORT_NAME}", pins=KIOSK_PINS))
    (units / "kiosk-camfeed.service").write_text(CAMFEED_UNIT)
    (units / "ordoscan.service.d").mkdir(exist_ok=True)
    (units / "ordoscan.service.d/kiosk-rig.conf").write_text(KIOSK_DROPIN)
    (root / "etc/udev/rules.d/60-kiosk-gpiochip.rules").write_text(GPIO_UDEV)
    _chroot(root, "systemctl enable kiosk-board.service kiosk-pinwatch.service "
                  "kiosk-camfeed.service")
    _system_wheels(root, arch)
    _chroot(root, "python3 -c 'import cv2, lgpio, numpy'")


def build(arch: str, log: object = sys.stderr) -> Image:
    """The cached image for `arch`, built first if absent (about 3 min here)."""
    key = recipe_key(arch)
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = CACHE / f"root-{arch}-{key}.raw"
    kernel = CACHE / f"vmlinuz-{arch}-{key}"
    initrd = CACHE / f"initrd-{arch}-{key}"
    version_file = CACHE / f"kernel-{arch}-{key}.txt"
    with (CACHE / f"lock-{arch}").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if raw.exists() and kernel.exists() and initrd.exists() and version_file.exists():
            return Image(arch, raw, kernel, initrd, version_file.read_text().strip())
        t0 = time.monotonic()
        base = _base_root(arch, log)
        work = CACHE / f"build-{arch}-{os.getpid()}"
        safe_rmtree(work)
        _run(["cp", "-a", "--reflink=auto", str(base), str(work)], "copying the base root")
        boot = work / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        if not kernels:
            raise RuntimeError(f"no kernel in {boot}")
        version = kernels[-1].name.removeprefix("vmlinuz-")
        _install_rig(work, arch, version, build_drivers(work, arch, version, log))
        shutil.copyfile(kernels[-1], kernel.with_suffix(".tmp"))
        shutil.copyfile(boot / f"initrd.img-{version}", initrd.with_suffix(".tmp"))
        tmp_raw = raw.with_suffix(".tmp")
        tmp_raw.unlink(missing_ok=True)
        _run(["mkfs.ext4", "-q", "-F", "-L", "kiosk-root", "-d", str(work), str(tmp_raw),
              IMAGE_SIZE], "mkfs.ext4 -d")
        kernel.with_suffix(".tmp").rename(kernel)
        initrd.with_suffix(".tmp").rename(initrd)
        tmp_raw.rename(raw)
        version_file.write_text(version + "\n")
        safe_rmtree(work)
        # other recipes' images go once a day old: a run on another branch may still boot one
        for old in CACHE.glob(f"*-{arch}-*"):
            if (old.is_file() and key not in old.name and not old.name.startswith("debs-")
                    and time.time() - old.stat().st_mtime > 86400):
                old.unlink()
        print(f"appliance image: built in {time.monotonic() - t0:.0f} s, kernel {version}",
              file=log, flush=True)
        return Image(arch, raw, kernel, initrd, version)


def _base_root(arch: str, log: object) -> Path:
    """The configured root before the rig (debootstrap, second stage, _configure), cached
    as a folder `base-<arch>-<key>/`; the caller holds the architecture's lock."""
    base = CACHE / f"base-{arch}-{base_key(arch)}"
    if (base / "etc/hostname").exists():
        return base
    if arch != host_arch():
        foreign.require(arch)
    work = CACHE / f"base-build-{arch}-{os.getpid()}"
    safe_rmtree(work)
    # dpkg in the root being built skips its fsync per file (mmdebstrap does the same):
    # thousands of fsyncs on a shared disk, for files that mkfs.ext4 -d reads from the
    # page cache anyway; removed again in _configure
    unsafe_io = work / UNSAFE_IO
    unsafe_io.parent.mkdir(parents=True)
    unsafe_io.write_text("force-unsafe-io\n")
    t0 = time.monotonic()
    print(f"appliance image: debootstrap {SUITE} {arch} into {work}", file=log, flush=True)
    include = ",".join([*PACKAGES, KERNEL_PACKAGE[arch]])
    # debootstrap downloads into the root's apt cache: give it the cached .debs
    debs = CACHE / f"debs-{arch}"
    debs.mkdir(exist_ok=True)
    cmd = ["debootstrap", "--variant=minbase", f"--include={include}", f"--arch={arch}"]
    cmd.append(f"--cache-dir={debs}")
    if arch != host_arch():
        cmd.append("--foreign")
    _run([*cmd, SUITE, str(work), debian_mirror()], "debootstrap")
    if arch != host_arch():
        foreign.second_stage(work, log)
    t1 = time.monotonic()
    _configure(work)
    # other recipes' roots go once a day old, as the images do
    for old in CACHE.glob(f"base-{arch}-*"):
        if old.is_dir() and time.time() - old.stat().st_mtime > 86400:
            safe_rmtree(old)
    work.rename(base)
    print(f"appliance image: base root in {time.monotonic() - t0:.0f} s "
          f"(debootstrap {t1 - t0:.0f} s, configured {time.monotonic() - t1:.0f} s)",
          file=log, flush=True)
    return base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=host_arch())
    a = p.parse_args()
    img = build(a.arch)
    print(img)


if __name__ == "__main__":
    main()
