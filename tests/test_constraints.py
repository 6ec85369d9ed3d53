"""provisioning/constraints.txt pins what the installer pulls, with hashes (issue 9 item 14)."""

from __future__ import annotations

import re
import tomllib

from ordoscan.devtools import constraints
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = constraints.ROOT

COMPILED = {"numpy", "pillow", "pydantic-core", "zxing-cpp"}  # one wheel per architecture


def entries() -> dict[str, tuple[str, list[str]]]:
    text = constraints.OUTPUT.read_text()
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", text.split("\n", 4)[-1].strip()):
        head, *rest = block.split("\\\n")
        name, _, version = head.strip().partition("==")
        out[name] = (version, [h.strip().removeprefix("--hash=sha256:") for h in rest])
    return out


def test_every_dependency_ci_tests_is_pinned_at_the_tested_version() -> None:
    assert constraints.main(["--check"]) == 0, "stale: python -m ordoscan.devtools.constraints"
    assert {n: v for n, (v, _) in entries().items()} == constraints.pins()


def test_every_pin_has_hashes_for_both_architectures() -> None:
    for name, (_, hashes) in entries().items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
        if name in COMPILED:
            assert len(hashes) >= len(constraints.ARCHES), f"{name}: one wheel per architecture"


def test_the_pins_satisfy_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {n: v for n, (v, _) in entries().items()}
    for spec in project["dependencies"]:
        req = Requirement(spec)
        assert req.specifier.contains(pinned[canonicalize_name(req.name)]), spec
