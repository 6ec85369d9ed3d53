"""`ordoscan check [--config PATH] [--json]`: the installer's self-test (SPEC §5).

Each check runs on its own, with a time limit, and says what it found or
what is wrong and where: config valid, camera opens and gives frames, GPIO
pins claimable, broker reachable (TLS, credentials), outbox integrity, free
disk, clock synchronised. A check that cannot run because an earlier one
failed (no valid config) is "skipped". Exit 0 when all pass, 2 for a bad
configuration, 1 when anything else failed; the last line names the failures.

It opens the camera and claims the pins itself, so run it with the service
stopped (`systemctl stop ordoscan`): a running kiosk holds both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ordoscan.config import Config, check_files, config_path, load_config
from ordoscan.errors import ConfigError, OrdoscanError, OutboxCorrupt
from ordoscan.privacy import printable

CAMERA_FRAMES = 3  # frames the camera must give
CAMERA_TIMEOUT_S = 5.0
BROKER_TIMEOUT_S = 10.0
MIN_FREE_BYTES = 64 * 1024 * 1024  # below this the outbox may soon refuse scans
BUSY_HINT = "; if the kiosk service runs, stop it first: systemctl stop ordoscan"

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skipped"


def _hint_if_busy(text: str) -> str:
    """A device already held is most often held by the running service: say so."""
    busy = any(w in text.lower() for w in ("in use", "busy", "resource temporarily"))
    return text + BUSY_HINT if busy else text


@dataclass
class Result:
    """One line of the report."""

    name: str
    status: str  # ok, FAIL, warn, skipped
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def check_config(path: str | None) -> tuple[Result, Config | None]:
    where = config_path(path)
    try:
        cfg = load_config(path)
        check_files(cfg, where)  # what `run` would refuse at start (the [mqtt] files)
    except ConfigError as e:
        return Result("config", FAIL, str(e).replace("\n", "; "), {"path": str(where)}), None
    return Result("config", OK, f"{where}: valid", {"path": str(where)}), cfg


def check_camera(cfg: Config) -> Result:
    from ordoscan.camera import open_source, release_frame

    source = open_source(cfg.camera, remember_played=False)  # use up no replay file
    started = time.monotonic()
    try:
        source.open()
    except OrdoscanError as e:
        return Result("camera", FAIL, _hint_if_busy(str(e)))
    try:
        shapes = set()
        got = 0
        deadline = started + CAMERA_TIMEOUT_S
        while got < CAMERA_FRAMES and time.monotonic() < deadline:
            frame = source.read(timeout=max(0.0, deadline - time.monotonic()))
            if frame is None:
                continue
            got += 1
            shapes.add(f"{frame.image.shape[1]}x{frame.image.shape[0]}")
            release_frame(source, frame)  # a CSI camera lends its buffers: give each back
        exposure = source.exposure_state()
    except OrdoscanError as e:
        return Result("camera", FAIL, f"{source.name}: opened, then: {e}")
    finally:
        source.close()
    elapsed = time.monotonic() - started
    data = {"source": source.name, "frames": got, "sizes": sorted(shapes),
            "elapsed_s": round(elapsed, 2), "exposure": exposure}
    if got < CAMERA_FRAMES:
        hint = ""
        if cfg.camera.source == "replay" and not cfg.camera.loop:
            # without loop each image is one frame: a small folder runs dry within the check
            hint = (f"; a replay gives each image once: set camera.loop = true, or put at "
                    f"least {CAMERA_FRAMES} images in {printable(cfg.camera.path)}")
        return Result("camera", FAIL, f"{source.name}: opened but gave {got} of "
                      f"{CAMERA_FRAMES} frames in {CAMERA_TIMEOUT_S:g} s{hint}", data)
    return Result("camera", OK, f"{source.name}: {got} frames ({', '.join(sorted(shapes))}) "
                  f"in {elapsed:.1f} s{_exposure_note(exposure)}", data)


def _exposure_note(exposure: dict[str, Any] | None) -> str:
    """What the installer should know of the exposure: capped, or left to a USB camera."""
    if exposure is None:
        return ""
    cap = exposure.get("cap_us")
    if cap is None:  # a USB camera without manual exposure, or an uncappable tuning
        return "; exposure: the camera's own, uncapped (a moving hand may blur in dim light)"
    who = "the kiosk's" if exposure.get("by") == "kiosk" else "the camera's"
    return f"; exposure: {who}, capped at {cap / 1000:g} ms"


def check_gpio(cfg: Config) -> Result:
    from ordoscan.feedback import Feedback

    g = cfg.gpio
    pins = f"green {g.green}, amber {g.amber}, red {g.red}, buzzer {g.buzzer}"
    try:
        feedback = Feedback(g)  # claims the four pins, lights nothing
    except OrdoscanError as e:
        return Result("gpio", FAIL, _hint_if_busy(str(e)))
    feedback.stop()
    polarity = "active-high" if g.active_high else "active-low"
    return Result("gpio", OK, f"{g.pin_factory}: BCM pins {pins} claimable ({polarity})",
                  {"pin_factory": g.pin_factory})


def check_broker(cfg: Config) -> Result:
    from ordoscan.security import check_broker as probe

    found = probe(cfg, BROKER_TIMEOUT_S)
    detail = found.message + "".join(f"; note: {n}" for n in found.notes)
    status = FAIL if not found.ok else WARN if found.publish_ok is None else OK
    return Result("broker", status, detail, found.as_dict())


def check_outbox(cfg: Config) -> Result:
    from ordoscan.outbox import Outbox
    from ordoscan.outbox.recovery import DAMAGED_NEXT

    path = Path(cfg.outbox.path)
    if not path.exists():
        if not path.parent.is_dir() and not path.parent.parent.is_dir():
            return Result("outbox", FAIL, f"{path}: {path.parent.parent} does not exist; the "
                          "daemon creates only the last folder (is outbox.path spelled right?)")
        return Result("outbox", OK, f"{path}: not created yet (the daemon creates it in "
                      f"{path.parent} at its first start)", {"exists": False})
    try:
        with Outbox(path, max_messages=cfg.outbox.max_messages, max_age_h=cfg.outbox.max_age_h,
                    device_id=cfg.device.id, site=cfg.device.site, readonly=True) as outbox:
            integrity = outbox.integrity_check()
            st = outbox.stats()
    except OutboxCorrupt as e:
        return Result("outbox", FAIL, f"{e}; {DAMAGED_NEXT}")
    except OrdoscanError as e:
        return Result("outbox", FAIL, str(e))
    data = {"exists": True, "integrity": integrity, "depth": st.depth,
            "oldest_age_s": st.oldest_age_s, "last_seq": st.last_seq,
            "quarantined": list(st.quarantined)}
    if integrity != "ok":
        return Result("outbox", FAIL, f"{path}: damaged: {integrity}; {DAMAGED_NEXT}", data)
    detail = f"{path}: integrity ok, {st.depth} scan(s) queued, last seq {st.last_seq}"
    if st.quarantined:
        return Result("outbox", WARN, detail + f"; it replaced {len(st.quarantined)} damaged "
                      f"file(s), report(s) beside it: {', '.join(st.quarantined)}", data)
    return Result("outbox", OK, detail, data)


def check_disk(cfg: Config) -> Result:
    from ordoscan.health import disk_free

    free = disk_free(cfg.outbox.path)
    where = Path(cfg.outbox.path).parent
    if free is None:
        return Result("disk", FAIL, f"{where}: free space unknown")
    data = {"free_bytes": free, "min_bytes": MIN_FREE_BYTES}
    text = f"{where}: {free / 1e6:,.0f} MB free"
    if free < MIN_FREE_BYTES:
        return Result("disk", FAIL, f"{text}, under {MIN_FREE_BYTES / 1e6:.0f} MB", data)
    return Result("disk", OK, text, data)


def check_clock(cfg: Config) -> Result:
    from ordoscan.health import clock_synced

    if clock_synced():
        return Result("clock", OK, "system clock synchronised (NTP)", {"synced": True})
    return Result("clock", FAIL, "system clock not synchronised: scans are stamped "
                  "clock_synced=false (check systemd-timesyncd and that NTP is reachable: "
                  "timedatectl timesync-status)", {"synced": False})


CHECKS: tuple[tuple[str, Callable[[Config], Result]], ...] = (
    ("camera", check_camera),
    ("gpio", check_gpio),
    ("broker", check_broker),
    ("outbox", check_outbox),
    ("disk", check_disk),
    ("clock", check_clock),
)


def run_checks(path: str | None) -> list[Result]:
    """Every check, in order; one that raises is a FAIL that names the exception."""
    first, cfg = check_config(path)
    results = [first]
    for name, check in CHECKS:
        if cfg is None:
            results.append(Result(name, SKIP, "needs a valid configuration"))
            continue
        try:
            results.append(check(cfg))
        except Exception as e:  # a check must report, never take the others down
            results.append(Result(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}"))
    return results


def table(results: list[Result]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'CHECK':<{width}}  {'RESULT':<7}  DETAIL"]
    lines += [f"{r.name:<{width}}  {r.status:<7}  {r.detail}" for r in results]
    failed = [r.name for r in results if r.failed]
    lines.append("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    results = run_checks(args.config)
    failed = [r.name for r in results if r.failed]
    if args.json:
        out = {"ok": not failed, "failed": failed, "checks": [asdict(r) for r in results]}
        json.dump(out, sys.stdout, indent=2, default=str)
        print()
    else:
        print(table(results))
    if "config" in failed:
        return 2
    return 1 if failed else 0
