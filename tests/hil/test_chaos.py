"""Chaos soak: patients keep coming while the broker stops, the network is cut and the
daemon is SIGKILLed, at random; then tests.hil.checker proves that every scan that got
the good-read signal reached the broker, in seq order, duplicates only resends.

    pytest tests/hil/test_chaos.py                                  # CI: a short budget
    pytest tests/hil/test_chaos.py --soak-seconds 3600 --soak-seed 7  # a longer soak

Defined by the work done, not by the time it takes: the chaos goes on for the time
budget and until the kiosk has given a good-read signal for at least one scan per
SECONDS_PER_SCAN of that budget, every kind of fault injected; a loaded machine only
makes it longer. It gives up (and fails) only after GIVE_UP times the budget. Then it
restores everything, waits (with a deadline) for the outbox to drain, checks and stops.
The same seed gives the same sequence of patients and faults (their timing on a busy
machine varies, which is the point of a soak).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest
from ordoscan.devtools.scenes import render

from tests.hil.checker import Shown, Verdict, check
from tests.hil.rig import Grey, Rig, wait_until
from tests.hil.scenarios import epu, other_code, patient

DEFAULT_SECONDS = 60.0  # CI: the whole test stays under two minutes on an idle machine
SECONDS_PER_SCAN = 10.0  # the work a budget asks for: one signalled scan per this much of it
GIVE_UP = 4.0  # only a kiosk that stopped scanning needs this many times the budget
DEFAULT_SEED = 20261125
HOLD_S = (0.8, 1.6)  # a patient holds the code this long
# Then the counter stays empty this long: longer than the kiosk can lag behind its camera
# (the virtual rig's frames are at most 1.5 s old), so a good-read signal always belongs to
# the last patient shown before it.
GAP_S = (1.8, 2.6)
DRAIN_TIMEOUT_S = 120.0
FAULTS = ("broker stop", "network cut", "daemon SIGKILL")
# what comes to the counter (scene kind, weight): mostly ordonnances, some other codes, nothing
MIX = (("ordonnance", 5), ("phone_light", 1), ("phone_dark", 2), ("medicine_pack", 1),
       ("url", 1), ("blank", 1))


class Patients(threading.Thread):
    """One patient after another until told to stop; records what was shown and when."""

    def __init__(self, rig: Rig, seed: int) -> None:
        super().__init__(name="soak-patients", daemon=True)
        self.rig, self.rng = rig, random.Random(seed)
        self.stop = threading.Event()
        self.shown: list[Shown] = []
        self.error: BaseException | None = None
        self._used: set[str] = set()

    def _next(self) -> tuple[str, Grey, str | None]:
        kinds, weights = zip(*MIX, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        seed = self.rng.randrange(1, 10**9)
        if kind in ("ordonnance", "phone_light", "phone_dark"):
            scene = patient(self.rig, kind, seed)
            if epu(scene) in self._used:  # every scan its own identifier: signals map to codes
                return self._next()
            self._used.add(epu(scene))
            return kind, scene.image, epu(scene)
        if kind == "blank":
            return kind, render("blank", seed, size=self.rig.scene_size).image, None
        return kind, other_code(self.rig, kind, seed).image, None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                kind, image, payload = self._next()
                start = time.monotonic()
                self.rig.show(image)
                time.sleep(self.rng.uniform(*HOLD_S))
                self.rig.blank()
                self.shown.append(Shown(start, time.monotonic(), kind, payload))
                time.sleep(self.rng.uniform(*GAP_S))
        except BaseException as e:  # reported by the test, not lost in a thread
            self.error = e


def inject_faults(
    rig: Rig, rng: random.Random, enough: Callable[[list[str]], bool], give_up: float
) -> list[str]:
    """Faults one after another until `enough(the faults so far)` (or the give-up time);
    each kind at least once first."""
    order = list(FAULTS)
    rng.shuffle(order)
    done: list[str] = []
    while not enough(done) and time.monotonic() < give_up:
        time.sleep(rng.uniform(1.5, 5.0))
        fault = order.pop(0) if order else rng.choice(FAULTS)
        if fault == "broker stop":
            rig.broker_stop()
            time.sleep(rng.uniform(1.0, 6.0))
            rig.broker_start()
        elif fault == "network cut":
            rig.network_cut()
            time.sleep(rng.uniform(2.0, 8.0))
            rig.network_restore()
        else:
            rig.kill_daemon()  # at whatever instant this is: mid-scan, mid-publish, mid-commit
            time.sleep(rng.uniform(0.1, 2.0))
            rig.start_daemon()
        done.append(fault)
    return done


def good_reads(rig: Rig) -> list[float]:
    return [e.t for e in rig.events() if e.name == "good_read"]


def test_chaos_soak(rig: Rig, request: pytest.FixtureRequest, soak_report: list[str]) -> None:
    seconds = request.config.getoption("--soak-seconds") or DEFAULT_SECONDS
    seed = request.config.getoption("--soak-seed")
    seed = DEFAULT_SEED if seed is None else seed
    scans = max(3, int(seconds / SECONDS_PER_SCAN))
    rig.start_daemon()
    began = time.monotonic()

    def enough(faults: list[str]) -> bool:
        """The work is done: the budget spent, `scans` signalled, every kind of fault."""
        return (time.monotonic() >= began + seconds and len(good_reads(rig)) >= scans
                and set(faults) == set(FAULTS))

    patients = Patients(rig, seed * 2 + 1)
    patients.start()
    injected = inject_faults(rig, random.Random(seed), enough, began + GIVE_UP * seconds)
    patients.stop.set()
    patients.join(30)
    assert patients.error is None, f"the patient stream failed: {patients.error!r}"
    assert not patients.is_alive(), "the patient stream did not stop"

    # everything back, then the outbox must drain
    rig.network_restore()
    rig.broker_start()
    if not rig.running:
        rig.start_daemon()

    def verdict() -> Verdict:
        return check(patients.shown, good_reads(rig), rig.messages(), max_latency_s=GAP_S[0])

    drained = wait_until(lambda: verdict().lost == 0 and rig.outbox_depth() == 0,
                         DRAIN_TIMEOUT_S, 0.5)
    time.sleep(2.0)  # a late resend would come about now: it is counted as a duplicate
    assert rig.stop_daemon() == 0, "the daemon did not stop cleanly on SIGTERM"
    v = verdict()
    faults = {f: injected.count(f) for f in FAULTS}
    soak_report.extend([
        f"seed {seed}, {seconds:.0f} s of chaos on the {rig.name} rig "
        f"({time.monotonic() - began:.0f} s in all)",
        f"shown: {v.shown} ({v.ordonnances} ordonnances, {v.shown - v.ordonnances} other or none)",
        "faults injected: " + ", ".join(f"{n} x {f}" for f, n in faults.items()),
        f"good-read signals: {v.signalled} ({v.signalled_codes} identifiers)",
        f"delivered: {v.delivered} scans, {v.duplicates} duplicates (resends of the same "
        f"scan_id), {v.rescans} rescans after a restart, {v.unsignalled} delivered without a "
        "signal (killed between commit and beep)",
        f"lost: {v.lost}",
        "verdict: " + ("pass" if v.ok and drained else "FAIL: " + "; ".join(v.problems)),
    ])
    assert v.ok, "\n".join(v.problems)
    assert drained, "the outbox did not drain after the chaos"
    assert v.signalled >= scans, (
        f"{v.signalled} scans signalled, {scans} wanted: the kiosk gave up scanning "
        f"({GIVE_UP * seconds:.0f} s of chaos)")
    assert all(faults.values()), f"not every kind of fault was injected: {faults}"
