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

Another architecture (arm64, the Pi's) is built on this machine through binfmt_misc and
qemu-user-static: debootstrap's first stage (--foreign) unpacks, its second stage and the
configuration run in the chroot under qemu-user (see foreign.py).

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
from tests.support.debian import SUITE, debian_mirror, safe_rmtree
from tests.support.debian import arch as host_arch

CACHE = Path(os.environ.get("ORDOSCAN_TEST_CACHE", "/var/cache/ordoscan-test")) / "appliance"
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
              debian_mirror()]
    return hashlib.sha256(repr(recipe).encode()).hexdigest()[:12]


def _run(cmd: list[str], what: str, timeout: float = 1500) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def _chroot(root: Path, script: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["chroot", str(root), "/bin/sh", "-ec", script], capture_output=True,
                       text=True, env=env, timeout=900)
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
        if arch != host_arch():
            foreign.require(arch)
        work = CACHE / f"build-{arch}-{os.getpid()}"
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
        boot = work / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        if not kernels:
            raise RuntimeError(f"no kernel in {boot}")
        version = kernels[-1].name.removeprefix("vmlinuz-")
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
        for old in CACHE.glob(f"*-{arch}-*"):
            if old.is_file() and key not in old.name and not old.name.startswith("debs-"):
                old.unlink()
        print(f"appliance image: built in {time.monotonic() - t0:.0f} s "
              f"(debootstrap {t1 - t0:.0f} s), kernel {version}", file=log, flush=True)
        return Image(arch, raw, kernel, initrd, version)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=host_arch())
    a = p.parse_args()
    img = build(a.arch)
    print(img)


if __name__ == "__main__":
    main()
