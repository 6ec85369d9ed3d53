"""Every shell script in the repository passes shellcheck (all severities)
and starts with `set -euo pipefail`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {
    ".git", ".venv", "node_modules", "build", "dist",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__",
}
SHELLS = ("sh", "bash", "dash")


def is_shell_script(path: Path) -> bool:
    if path.suffix in {".sh", ".bash"}:
        return True
    try:
        with path.open("rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    words = first[2:].decode("ascii", "replace").split()
    if not words:
        return False
    interpreter = Path(words[0]).name
    if interpreter == "env" and len(words) > 1:
        interpreter = words[1]
    return interpreter in SHELLS


def shell_scripts() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if is_shell_script(path):
            found.append(path)
    return found


def test_the_known_scripts_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shell_scripts()}
    assert {"dev", ".ci/run", "provisioning/install.sh"} <= names, names


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed: the README set-up (./dev) installs it")
    scripts = shell_scripts()
    r = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style", *map(str, scripts)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, f"shellcheck found problems:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_strict_mode(script: Path) -> None:
    head = script.read_text(errors="replace").splitlines()[:40]
    assert "set -euo pipefail" in (line.strip() for line in head), (
        f"{script}: no 'set -euo pipefail' near the top"
    )
