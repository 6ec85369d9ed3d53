"""Layering: the kiosk's stages never lean on the demo's and the tests' aids (ordoscan.devtools),
and no module of ours leans on another's private names."""

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


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_reaches_into_another_modules_private_names() -> None:
    """A name one module of ours needs from another is that module's public API: no
    `from ordoscan.x import _y`, no `x._y` on a module of ours imported as `x`."""
    leaks = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        ours: set[str] = set()  # local names bound to modules of ours
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ordoscan"):
                leaks += [f"{rel}: from {node.module} import {a.name}"
                          for a in node.names if _private(a.name)]
                ours.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                ours.update(a.asname or a.name for a in node.names
                            if a.name.startswith("ordoscan"))
        leaks += [f"{rel}:{node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and _private(node.attr)
                  and isinstance(node.value, ast.Name) and node.value.id in ours]
    assert not leaks, "private names used across modules:\n" + "\n".join(leaks)
