"""`ordoscan demo`, run as a user runs it: what it prints, that it ends, that it tidies up."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ordoscan.commands.demo import SAMPLES

from tests.support.kiosk import ROOT, payloads, scene, wait_until


def run_demo(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    (tmp / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "ordoscan", "demo", *args], cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp / "tmp"), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def sent_payloads() -> list[str]:
    return [p for s in SAMPLES if s.sent
            for p in payloads(scene(s.kind, s.seed), "ordonnance_numerique")]


def ins_payloads() -> list[str]:
    return [p for s in SAMPLES for p in payloads(scene(s.kind, s.seed), "ins")]


def test_demo_shows_the_main_job_and_tidies_up(tmp_path: Path) -> None:
    proc = run_demo(tmp_path, "--speed", "4")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    received = [json.loads(m) for m in re.findall(r"pharmacy ← (\{.*\})", out)]
    assert [m["seq"] for m in received] == [1, 2, 3]
    assert [m["payload"] for m in received] == sent_payloads()
    assert {m["kind"] for m in received} == {"ordonnance_numerique"}
    for i, sample in enumerate(SAMPLES, 1):
        assert f"[{i}/{len(SAMPLES)}] {sample.name}" in out
    assert "refused: medicine_pack" in out
    assert "repeat of" in out
    assert "the pharmacy system received 3 scan(s) (seq [1, 2, 3]); 0 left in the outbox" in out
    assert "● red" in out or "(*) red" in out  # the refusals lit red, drawn live
    for ins in ins_payloads():
        assert ins not in out and ins not in err
    # the kiosk's own log lines show payloads masked
    for p in sent_payloads():
        assert f"scan …{p[-4:]} queued" in out
    found = re.search(r"mosquitto on 127\.0\.0\.1:(\d+)", out)
    assert found is not None
    assert not port_open(int(found.group(1))), "the demo's broker is still running"
    assert list((tmp_path / "tmp").iterdir()) == [], "temporary files left behind"


def test_ctrl_c_stops_everything_and_removes_the_files(tmp_path: Path) -> None:
    proc = run_demo(tmp_path)
    assert proc.stdout is not None
    lines: list[str] = []
    port = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"mosquitto on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
        if line.startswith("[2/"):
            break
    assert port and lines[-1].startswith("[2/"), "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert wait_until(lambda: not port_open(port), 10)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_without_mosquitto_scans_stay_in_the_outbox(tmp_path: Path) -> None:
    proc = run_demo(tmp_path, "--speed", "4", "--keep", env={"ORDOSCAN_MOSQUITTO": ""})
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    # --keep keeps the folder and the kiosk's config, valid for `ordoscan run --config`
    kept = re.search(r"kept: (\S+) \(the kiosk's config: (\S+)\)", out)
    assert kept is not None, out
    config = Path(kept.group(2))
    assert config.parent == Path(kept.group(1)) and config.is_file()
    check = subprocess.run([sys.executable, "-m", "ordoscan", "config", "validate", "--config",
                            str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "source = \"replay\"" in config.read_text()
    shutil.rmtree(kept.group(1))
    assert "ORDOSCAN_MOSQUITTO is empty, so no broker is started" in out
    assert "./dev setup" in out and "apt-get install mosquitto" in out
    assert "3 scan(s) held in the outbox" in out
    assert "● amber" in out or "(*) amber" in out  # broker unreachable, scans queued
    assert "pharmacy ←" not in out
    assert list((tmp_path / "tmp").iterdir()) == []


def test_bad_speed_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_demo(tmp_path, "--speed", "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--speed 0" in err


def test_the_demo_reads_committed_samples_that_the_generator_draws() -> None:
    import numpy as np
    from ordoscan.devtools.demo_samples import SAMPLES_DIR
    from PIL import Image

    files = {s.path for s in SAMPLES}
    assert {p for p in SAMPLES_DIR.iterdir()} == files, "samples/ holds exactly the demo's PNGs"
    for s in SAMPLES:
        with Image.open(s.path) as img:
            committed = np.asarray(img.convert("L"))
        # refresh with `python -m ordoscan.devtools.demo_samples` after a change to devtools/scenes
        assert np.array_equal(committed, scene(s.kind, s.seed).image), s.path.name


def test_the_wheel_ships_the_samples() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["ordoscan"]
    for pattern in patterns:
        assert list((ROOT / "firmware" / "ordoscan").glob(pattern)), f"{pattern} matches nothing"
    assert "devtools/samples/*.png" in patterns
