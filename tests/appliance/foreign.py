"""Building a root for another architecture than this machine's (arm64 on amd64).

debootstrap's first stage (--foreign) only downloads and unpacks; everything after it
(the second stage, the image's configuration, update-initramfs) runs programs of the
root's architecture in a chroot. The kernel runs them through binfmt_misc and
qemu-user-static; the entry must have the F flag ("fix binary": the interpreter is
opened when registered), so that it works inside a chroot that lacks the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_USER = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
PACKAGE = "qemu-user-static"


def _entry(arch: str) -> Path:
    return BINFMT / QEMU_USER[arch]


def status(arch: str) -> str | None:
    """None when chroots of `arch` run here; else why they do not."""
    entry = _entry(arch)
    if not (BINFMT / "status").exists():
        return f"binfmt_misc is not mounted on {BINFMT}"
    if not entry.exists():
        return f"no binfmt_misc entry {entry.name} (apt-get install {PACKAGE} binfmt-support)"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"the binfmt_misc entry {entry.name} is disabled"
    flags = next((line.split(":", 1)[1] for line in text.splitlines()
                  if line.startswith("flags:")), "")
    if "F" not in flags:
        return (f"the binfmt_misc entry {entry.name} lacks the F flag (flags:{flags.strip()}): "
                "its interpreter would be looked up inside the chroot")
    return None


def require(arch: str) -> None:
    """Makes chroots of `arch` run here, as far as root can (mounts binfmt_misc, enables
    the entry qemu-user-static ships); raises, saying what is missing, otherwise."""
    if status(arch) is None:
        return
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                       capture_output=True, check=False)
    if not _entry(arch).exists() and os.path.exists("/usr/sbin/update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", QEMU_USER[arch]],
                       capture_output=True, check=False)
    why = status(arch)
    if why is not None:
        raise RuntimeError(f"cannot run {arch} programs in a chroot here: {why}")


def second_stage(root: Path, log: object) -> float:
    """debootstrap's second stage in the chroot (under qemu-user); returns its seconds."""
    t0 = time.monotonic()
    print(f"appliance image: debootstrap --second-stage in {root} (emulated)", file=log,
          flush=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    # The kernel's postinst makes an initramfs with MODULES=most: under qemu-user that is
    # most of an hour of shell forks, for an initramfs the configuration step replaces
    # anyway (MODULES=list). conf.d overrides initramfs.conf until then.
    override = root / "etc/initramfs-tools/conf.d/zz-image-build.conf"
    override.parent.mkdir(parents=True, exist_ok=True)
    override.write_text("MODULES=list\n")
    r = subprocess.run(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"],
                       capture_output=True, text=True, env=env, timeout=5400)
    override.unlink(missing_ok=True)
    if r.returncode != 0:
        tail = (root / "debootstrap/debootstrap.log")
        detail = tail.read_text(errors="replace")[-3000:] if tail.exists() else r.stderr[-3000:]
        raise RuntimeError(f"debootstrap --second-stage in {root} failed "
                           f"(exit {r.returncode}):\n{detail}")
    seconds = time.monotonic() - t0
    print(f"appliance image: second stage done in {seconds:.0f} s", file=log, flush=True)
    return seconds
