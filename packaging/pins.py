"""The kiosk's pinned wheels (provisioning/constraints-kiosk.txt), for build-deb.sh.

    python3 pins.py list FILE         name==version, one a line: what build-deb.sh
                                      downloads, and the constraints the package's
                                      postinst installs with
    python3 pins.py verify FILE DIR   every wheel in DIR (ordoscan's own aside) is a
                                      pinned version with a pinned sha256, and every
                                      pin has its wheel; exit 1 naming the package if not

Standard library only: it runs with whatever python3 builds the package.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, sha256 hashes) of each entry of a constraints file."""
    pins: dict[str, tuple[str, set[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        line = line.strip().removesuffix("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash=sha256:"):
            pins[name][1].add(line.removeprefix("--hash=sha256:"))
        else:
            raw, _, version = line.partition("==")
            name = canonical(raw)
            pins[name] = (version, set())
    return pins


def verify(path: Path, folder: Path) -> list[str]:
    """What is wrong with the wheels in `folder` against the pins in `path` (empty: nothing)."""
    pins = read_pins(path)
    problems: list[str] = []
    seen: set[str] = set()
    for wheel in sorted(folder.glob("*.whl")):
        dist, version = wheel.name.split("-")[:2]
        name = canonical(dist)
        if name == "ordoscan":
            continue
        seen.add(name)
        if name not in pins:
            problems.append(f"{name} {version}: {wheel.name} is not pinned in {path}")
            continue
        pinned, hashes = pins[name]
        if version != pinned:
            problems.append(f"{name} {version}: {wheel.name} is not the pinned {pinned}")
            continue
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest not in hashes:
            problems.append(
                f"{name} {version}: {wheel.name} has sha256 {digest}, not a hash pinned in "
                f"{path} (a wheel changed since it was pinned, or a damaged download)"
            )
    problems.extend(
        f"{name} {version}: no wheel in {folder}"
        for name, (version, _) in sorted(pins.items()) if name not in seen
    )
    return problems


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "list":
        for name, (version, _) in sorted(read_pins(Path(argv[1])).items()):
            print(f"{name}=={version}")
        return 0
    if len(argv) == 3 and argv[0] == "verify":
        problems = verify(Path(argv[1]), Path(argv[2]))
        for p in problems:
            print(f"pins: {p}", file=sys.stderr)
        return 1 if problems else 0
    print("usage: pins.py list FILE | pins.py verify FILE DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
