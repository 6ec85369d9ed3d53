"""The Debian side of the tests that build a root: which mirror, which
architecture, and removing a build folder safely."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"


def debian_mirror() -> str:
    """The Debian mirror apt's sources on this machine use for bookworm."""
    sources = Path("/etc/apt")
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for block in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in block.splitlines():
                    if ":" in line and not line.lstrip().startswith("#"):
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.strip()
                if (
                    fields.get("enabled", "yes") != "no"
                    and "deb" in fields.get("types", "").split()
                    and SUITE in fields.get("suites", "").split()
                ):
                    return fields.get("uris", "").split()[0]
        elif f.suffix == ".list":
            for line in text.splitlines():
                words = line.split()
                if words[:1] == ["deb"]:
                    words = [w for w in words[1:] if not w.startswith("[")]
                    if len(words) >= 2 and words[1] == SUITE:
                        return words[0]
    return "http://deb.debian.org/debian"


def arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            found.append(mount_point)
    return found


def safe_rmtree(path: Path) -> None:
    """rm -rf that first makes sure no file system is still mounted inside."""
    for m in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"not removing {path}: still mounted inside: {left}")
    shutil.rmtree(path, ignore_errors=True)
