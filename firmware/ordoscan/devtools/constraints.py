"""Writes provisioning/constraints.txt: what the installer pulls, pinned with hashes.

`python -m ordoscan.devtools.constraints` (from a checkout, after `./dev setup`)
takes the exact versions CI tests (the packages installed in this venv for
ordoscan's own requirements, extras excluded, and what they require), downloads
their wheels for CPython 3.11 (Debian bookworm's) on aarch64 (the Pi) and
x86_64, and writes one `name==version --hash=sha256:...` entry per package with
the hash of every such wheel. pip then refuses anything else:

    pip install --require-hashes -r constraints.txt    # the dependencies, as tested
    pip install --no-deps ordoscan-*.whl                # then the kiosk itself

It also writes provisioning/constraints-kiosk.txt, the same entries without
numpy and Pillow: a kiosk takes those two from Debian bookworm (python3-numpy,
python3-pil), which picamera2's compiled helpers are built against, and
everything else at these pins (packaging/build-deb.sh ships exactly those
wheels, provisioning/install.sh installs them with --require-hashes).

`--check` only compares the pins with this venv (no download): exit 1 if stale.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
OUTPUT = ROOT / "provisioning" / "constraints.txt"
KIOSK_OUTPUT = ROOT / "provisioning" / "constraints-kiosk.txt"
# what a kiosk takes from apt instead (bookworm: numpy 1.24, Pillow 9.4)
FROM_APT = frozenset({"numpy", "pillow"})
PYTHON = "3.11"  # Debian bookworm's, on the Pi and in CI
ARCHES = ("aarch64", "x86_64")
# bookworm's glibc is 2.36: every manylinux tag up to it
GLIBC = ("2_36", "2_35", "2_34", "2_31", "2_28", "2_27", "2_24", "2_17")
ENVIRONMENT = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.2",
               "sys_platform": "linux", "platform_system": "Linux",
               "implementation_name": "cpython", "platform_python_implementation": "CPython",
               "os_name": "posix", "extra": ""}


def pins(top: str = "ordoscan") -> dict[str, str]:
    """name -> installed version for `top`'s requirements (no extras) and theirs."""
    found: dict[str, str] = {}
    todo = [Requirement(r) for r in distribution(top).requires or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(ENVIRONMENT):
            continue  # an extra, or another Python's backport
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here: run ./dev setup first") from None
        found[name] = dist.version
        todo.extend(Requirement(r) for r in dist.requires or [])
    return dict(sorted(found.items()))


def _download(wanted: dict[str, str], arch: str, folder: Path) -> None:
    platforms = [a for g in GLIBC for a in ("--platform", f"manylinux_{g}_{arch}")]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
         *platforms, "--dest", str(folder), *(f"{n}=={v}" for n, v in wanted.items())],
        check=True,
    )


def _wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split("-")[0])


def render(wanted: dict[str, str], wheels: list[Path]) -> str:
    """The file's text: a header, then each pin with the hashes of its wheels."""
    lines = [
        "# What the installer pulls from PyPI, as CI tested it: exact versions, and the",
        "# sha256 of each CPython 3.11 wheel for aarch64 (Raspberry Pi) and x86_64.",
        "# Written by `python -m ordoscan.devtools.constraints` (see docs/INSTALL.md);",
        "# use: pip install --require-hashes -r provisioning/constraints.txt",
    ]
    for name, version in wanted.items():
        hashes = sorted({hashlib.sha256(w.read_bytes()).hexdigest()
                         for w in wheels if _wheel_name(w) == name})
        if not hashes:
            raise SystemExit(f"no wheel of {name}=={version} for CPython {PYTHON}")
        lines.append(f"{name}=={version} \\")
        lines.extend(f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "")
                     for i, h in enumerate(hashes))
    return "\n".join(lines) + "\n"


def kiosk_render(text: str) -> str:
    """The kiosk's file from the whole file's text: its entries, less what apt provides."""
    lines = [
        "# What a kiosk installs from PyPI: provisioning/constraints.txt without numpy and",
        "# Pillow, which it takes from Debian bookworm (python3-numpy, python3-pil: picamera2's",
        "# helpers are built against them). Written by `python -m ordoscan.devtools.constraints`;",
        "# used by packaging/build-deb.sh and provisioning/install.sh (see docs/INSTALL.md).",
    ]
    keep = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.startswith(" "):  # an entry's first line: name==version
            keep = canonicalize_name(line.partition("==")[0]) not in FROM_APT
        if keep:
            lines.append(line)
    return "\n".join(lines) + "\n"


def pinned(text: str) -> dict[str, str]:
    """name -> version of each entry of a constraints file's text."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "==" in line and not line.lstrip().startswith(("#", "--")):
            name, _, rest = line.partition("==")
            out[canonicalize_name(name.strip())] = rest.split()[0]
    return out


def main(argv: list[str]) -> int:
    wanted = pins()
    if "--check" in argv:
        have = pinned(OUTPUT.read_text()) if OUTPUT.exists() else {}
        if have != wanted:
            print(f"{OUTPUT}: stale (pinned {have}, tested {wanted}); "
                  "run: python -m ordoscan.devtools.constraints", file=sys.stderr)
            return 1
        kiosk = KIOSK_OUTPUT.read_text() if KIOSK_OUTPUT.exists() else ""
        if kiosk != kiosk_render(OUTPUT.read_text()):
            print(f"{KIOSK_OUTPUT}: not {OUTPUT.name} less {', '.join(sorted(FROM_APT))}; "
                  "run: python -m ordoscan.devtools.constraints", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHES:
            _download(wanted, arch, Path(tmp) / arch)
        wheels = sorted(Path(tmp).glob("*/*.whl"))
        OUTPUT.write_text(render(wanted, wheels))
    KIOSK_OUTPUT.write_text(kiosk_render(OUTPUT.read_text()))
    print(f"wrote {OUTPUT}: {len(wanted)} packages, and {KIOSK_OUTPUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
