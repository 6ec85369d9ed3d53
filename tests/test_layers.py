"""The kiosk's stages never lean on the demo's and the tests' aids (ordoscan.devtools)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "firmware" / "ordoscan"
# What may use devtools: devtools itself, and the commands that exist for desks and tests.
ALLOWED = {"devtools", "commands/demo.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_kiosk_modules_import_nothing_from_devtools() -> None:
    leaks = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in ALLOWED or rel in ALLOWED:
            continue
        bad = sorted(n for n in _imports(path) if n.startswith("ordoscan.devtools"))
        if bad:
            leaks.append(f"{rel}: {', '.join(bad)}")
    assert not leaks, "kiosk modules import test aids:\n" + "\n".join(leaks)
