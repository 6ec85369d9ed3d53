"""provisioning/constraints.txt pins what the installer pulls, with hashes (issue 9 item 14);
constraints-kiosk.txt is what a kiosk installs (numpy and Pillow are apt's), and the Debian
package carries exactly those wheels."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ordoscan.devtools import constraints
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = constraints.ROOT

COMPILED = {"numpy", "pillow", "pydantic-core", "zxing-cpp"}  # one wheel per architecture


def entries(path: Path = constraints.OUTPUT) -> dict[str, tuple[str, list[str]]]:
    text = path.read_text()
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


# --- what a kiosk installs: the pins less numpy and Pillow (apt's), checked when packaged ---

PINS_TOOL = ROOT / "packaging" / "pins.py"
KIOSK_PYTHON = Path("/usr/bin/python3")  # Debian's, which sees apt's python3-numpy / python3-pil


def test_the_kiosk_pins_are_the_tested_pins_less_what_apt_provides() -> None:
    whole = entries()
    kiosk = entries(constraints.KIOSK_OUTPUT)
    assert set(whole) - set(kiosk) == {"numpy", "pillow"} == constraints.FROM_APT
    assert kiosk == {n: e for n, e in whole.items() if n not in constraints.FROM_APT}


def pins_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PINS_TOOL), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_pins_verify_names_each_wheel_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    zx = wheels / "zxing_cpp-3.1.1-cp311-cp311-manylinux_2_28_x86_64.whl"
    zx.write_bytes(b"zxing-cpp wheel bytes")
    paho = wheels / "paho_mqtt-2.2.0-py3-none-any.whl"
    paho.write_bytes(b"paho wheel bytes")
    (wheels / "ordoscan-0.1.0-py3-none-any.whl").write_bytes(b"ours: not pinned, not checked")
    pins = tmp_path / "pins.txt"

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    def write_pins(extra: str = "") -> None:
        pins.write_text(
            "# a header\n"
            f"paho-mqtt==2.2.0 \\\n    --hash=sha256:{sha(paho)}\n"
            f"zxing-cpp==3.1.1 \\\n    --hash=sha256:{'0' * 64} \\\n"
            f"    --hash=sha256:{sha(zx)}\n" + extra
        )

    write_pins()
    ok = pins_tool("verify", pins, wheels)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert pins_tool("list", pins).stdout == "paho-mqtt==2.2.0\nzxing-cpp==3.1.1\n"

    zx.write_bytes(b"zxing-cpp wheel bytes, changed")  # a wheel that is not the one pinned
    bad = pins_tool("verify", pins, wheels)
    assert bad.returncode == 1
    assert f"pins: zxing-cpp 3.1.1: {zx.name} has sha256 " in bad.stderr
    assert "paho" not in bad.stderr

    write_pins(extra="gpiozero==2.0.1.post3 \\\n    --hash=sha256:" + "1" * 64 + "\n")
    missing = pins_tool("verify", pins, wheels)
    assert missing.returncode == 1
    assert f"gpiozero 2.0.1.post3: no wheel in {wheels}" in missing.stderr

    (wheels / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"six")
    unpinned = pins_tool("verify", pins, wheels)
    assert f"six 1.16.0: six-1.16.0-py2.py3-none-any.whl is not pinned in {pins}" in unpinned.stderr


def copy_for_packaging(dest: Path) -> Path:
    """What build-deb.sh reads, copied (so that a pin can be changed without touching ours)."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("firmware", "packaging", "provisioning", "systemd"):
        shutil.copytree(ROOT / name, dest / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "docs/INSTALL.md"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def build_deb(top: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # the wheels come from the shared cache, or PyPI the first time
    return subprocess.run([str(top / "packaging" / "build-deb.sh"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900,
                          env=os.environ | {"PYTHON": sys.executable})


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    r = build_deb(ROOT, out)
    assert r.returncode == 0, f"build-deb.sh failed:\n{r.stdout}\n{r.stderr}"
    return Path(r.stdout.strip().splitlines()[-1])


def deb_file(deb: Path, member: str) -> str:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    return subprocess.run(["tar", "-xO", f"./{member}"], input=tar, capture_output=True,
                          check=True).stdout.decode()


@pytest.mark.slow
def test_the_package_carries_exactly_the_pinned_wheels(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    wheels = sorted(line.rsplit("/", 1)[-1] for line in listing.splitlines()
                    if "/opt/ordoscan/wheels/" in line and line.endswith(".whl"))
    shipped = {canonicalize_name(w.split("-")[0]): w.split("-")[1] for w in wheels}
    kiosk = {n: v for n, (v, _) in entries(constraints.KIOSK_OUTPUT).items()}
    assert shipped.pop("ordoscan") == tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert shipped == kiosk  # no numpy, no Pillow: the kiosk's are apt's
    # the postinst installs with the same pins as constraints
    assert deb_file(deb, "opt/ordoscan/constraints.txt").split() == [
        f"{n}=={v}" for n, v in sorted(kiosk.items())]
    assert "--constraint \"$PREFIX/constraints.txt\"" in (ROOT / "packaging/postinst").read_text()


@pytest.mark.slow
def test_a_wheel_whose_hash_is_not_pinned_stops_the_build_naming_it(tmp_path: Path) -> None:
    top = copy_for_packaging(tmp_path / "src")
    pins = top / "provisioning" / "constraints-kiosk.txt"
    text = pins.read_text()
    # zxing-cpp's hashes replaced, as a tampered or changed wheel would not match them
    head, _, rest = text.partition("zxing-cpp==")
    rest = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "e" * 64, rest)
    pins.write_text(head + "zxing-cpp==" + rest)
    out = tmp_path / "out"
    r = build_deb(top, out)
    assert r.returncode == 1, r.stderr
    named = r"pins: zxing-cpp 3\.1\.1: zxing_cpp-3\.1\.1-\S+\.whl has sha256 [0-9a-f]{64}, not a"
    assert re.search(named, r.stderr), r.stderr
    assert "build-deb: the wheels for" in r.stderr
    assert not list(out.glob("*.deb"))


def apt_python_has(module: str) -> bool:
    return KIOSK_PYTHON.exists() and subprocess.run(
        [str(KIOSK_PYTHON), "-c", f"import {module}"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not (apt_python_has("numpy") and apt_python_has("PIL")),
                    reason="Debian's python3-numpy and python3-pil are not installed "
                           "(./dev setup installs them)")
def test_the_kiosks_combination_apt_numpy_and_pillow_with_the_pinned_rest(
    deb: Path, tmp_path: Path
) -> None:
    """What the postinst makes, on Debian's Python: a venv that sees apt's numpy and Pillow,
    the pinned wheels installed from the package; then a sample decoded as a kiosk would."""
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([str(KIOSK_PYTHON), "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    opt = root / "opt" / "ordoscan"
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--find-links", str(opt / "wheels"),
         "--constraint", str(opt / "constraints.txt"), "ordoscan"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    pinned = {n: v for n, (v, _) in entries(constraints.KIOSK_OUTPUT).items()}
    # the version each name resolves to there (the venv's first, as an import would)
    probe = (
        "import json, sys, importlib.metadata as m, numpy, PIL\n"
        "print(json.dumps({'numpy': numpy.__file__, 'PIL': PIL.__file__,\n"
        "    'versions': {n: m.version(n) for n in sys.argv[1:]}}))\n"
    )
    seen = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", probe, *pinned],
                                     capture_output=True, text=True, check=True).stdout)
    assert seen["numpy"].startswith("/usr/lib/python3/dist-packages/")
    assert seen["PIL"].startswith("/usr/lib/python3/dist-packages/")
    assert seen["versions"] == pinned  # the pins, even where apt has another version
    sample = ROOT / "firmware" / "ordoscan" / "devtools" / "samples" / "ordonnance-0.png"
    out = subprocess.run([str(venv / "bin" / "ordoscan"), "decode", "--json", str(sample)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    [symbol] = json.loads(out.stdout)["symbols"]
    assert (symbol["kind"], symbol["format"]) == ("ordonnance_numerique", "QRCode")
