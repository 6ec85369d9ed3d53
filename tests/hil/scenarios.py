"""The hardware-in-loop scenarios: written once, run on any rig (tests.hil.rig.Rig).

Each scenario is a plain function over a rig and a `Check` (which collects
what went wrong), plus a row of the expectation table: the signals a
person at the counter should see and hear, written like SPEC §4 (see
tests.hil.signals for the tokens: `ready(3)` is green with three rising beeps,
`good_read(1)` the green dip with one beep, `+` joins signals that come
together in any order, `*N` repeats), and how many scan messages the
pharmacy system should receive.

Scenes come from ordoscan.devtools.scenes (seeded). A scene is used only if the
decoder reads every code that matters in it (the QR code, and the INS
DataMatrix where the scenario is about it): the rig tests the kiosk, not
the luck of a render.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial

from ordoscan.classifier import Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Decoder
from ordoscan.devtools.scenes import Scene, render

from tests.hil.rig import Rig, wait_until
from tests.hil.signals import matches, summary

SAME_CODE_TIMEOUT_S = 1.5  # scan.same_code_timeout_s (the default the rigs run with)
HOLD_S = 1.5  # how long a patient holds a code under the camera
GAP_S = 2.0  # and the counter stays empty after (longer than same_code_timeout_s)
SETTLE_S = 45.0  # longest wait for the expected signals and messages
QUIET_S = 1.5  # then nothing more may happen for this long
MAX_SCENE_TRIES = 40
PATIENT_WAIT_S = 20.0  # a patient waits this long at most for the kiosk to signal the read


@dataclass
class Check:
    """What went wrong in a scenario, in words (never a payload)."""

    problems: list[str] = field(default_factory=list)

    def __call__(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return ok


@cache
def _reader() -> tuple[Decoder, Classifier]:
    return Decoder(60), Classifier(ScanConfig())


def _kinds_read(scene: Scene) -> list[Kind]:
    decoder, classifier = _reader()
    return sorted((classifier.classify(s).kind for s in decoder.decode(scene.image)),
                  key=lambda k: k.value)


def patient(rig: Rig, kind: str, seed: int, *, ins: bool | None = None) -> Scene:
    """An ordonnance scene (paper or phone) whose QR code reads; with or without an INS code."""
    for s in range(seed, seed + MAX_SCENE_TRIES):
        scene = render(kind, s, size=rig.scene_size)
        truth = sorted((k for k, _ in scene.truth), key=lambda k: k.value)
        has_ins = Kind.INS in truth
        if ins is not None and has_ins != ins:
            continue
        if Kind.ORDONNANCE in truth and _kinds_read(scene) == truth:
            return scene
    raise RuntimeError(f"no readable {kind} scene in seeds {seed}..{seed + MAX_SCENE_TRIES}")


def other_code(rig: Rig, kind: str, seed: int) -> Scene:
    """A scene with one code that is not an ordonnance (medicine pack, 2D-Doc), read."""
    for s in range(seed, seed + MAX_SCENE_TRIES):
        scene = render(kind, s, size=rig.scene_size)
        if scene.truth and len(_kinds_read(scene)) == len(scene.truth):
            return scene
    raise RuntimeError(f"no readable {kind} scene in seeds {seed}..{seed + MAX_SCENE_TRIES}")


def _delivered(rig: Rig, payload: str) -> bool:
    return any(m.payload == payload for m in rig.messages())


def epu(scene: Scene) -> str:
    return next(p for k, p in scene.truth if k is Kind.ORDONNANCE)


def present(rig: Rig, scene: Scene, hold_s: float = HOLD_S, gap_s: float = GAP_S) -> None:
    """A patient holds the code under the camera, then takes it away."""
    rig.show(scene.image)
    time.sleep(hold_s)  # the stimulus itself lasts this long: not a wait for a result
    rig.blank()
    time.sleep(gap_s)


def wait_for(rig: Rig, since: float, token: str, count: int = 1, timeout: float = SETTLE_S) -> bool:
    seen = rig.wait_events(lambda t: t.count(token) >= count, since, timeout)
    return seen.count(token) >= count


# -- the scenarios ---------------------------------------------------------------------------


def good_read_on_paper(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    scene = patient(rig, "ordonnance", 101, ins=False)
    present(rig, scene)
    if check(rig.wait_messages(1), "the scan did not reach the broker"):
        m = rig.messages()[0]
        check(m.payload == epu(scene), "the payload is not the QR code's, unchanged")
        check(m.kind == "ordonnance_numerique" and m.symbology == "QRCode", "kind or symbology")
        check(m.symbology_id == "]Q1", f"symbology id {m.symbology_id!r}")
    # masked in the log, and nothing kept once delivered (secure delete, WAL truncated)
    check(wait_until(lambda: not rig.leaks([epu(scene)], mqtt=False), 15),
          "the identifier is in the log, the pin trace or the outbox after delivery: "
          + ", ".join(rig.leaks([epu(scene)], mqtt=False)))


def phone_in_dark_mode(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    scene = patient(rig, "phone_dark", 202)
    present(rig, scene)
    if check(rig.wait_messages(1), "the scan did not reach the broker"):
        check(rig.messages()[0].payload == epu(scene), "payload differs from the phone's code")


def held_still_10s(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    scene = patient(rig, "ordonnance", 303)
    present(rig, scene, hold_s=10.0)
    check(rig.wait_messages(1), "the scan did not reach the broker")


def shown_again(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    scene = patient(rig, "ordonnance", 404)
    present(rig, scene, gap_s=SAME_CODE_TIMEOUT_S + 1.5)  # it leaves the view long enough
    present(rig, scene)
    check(rig.wait_messages(1), "the scan did not reach the broker")
    # a repeat within repeat_window_s is signalled again but never sent again
    time.sleep(QUIET_S)
    check(len({m.scan_id for m in rig.messages()}) == 1, "the repeat was sent again")


def ins_in_the_same_frame(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    scene = patient(rig, "ordonnance", 505, ins=True)
    ins = next(p for k, p in scene.truth if k is Kind.INS)
    since = rig.now()
    present(rig, scene)
    if check(rig.wait_messages(1), "the scan did not reach the broker"):
        check(rig.messages()[0].payload == epu(scene), "the relayed code is not the QR code")

    # proof that the kiosk saw the INS code and dropped it: its telemetry counts it
    def ins_ignored() -> bool:
        return any(t["scans"].get("ignored", {}).get("ins", 0) >= 1 for t in rig.telemetry())

    check(wait_until(ins_ignored, 20), "telemetry never counted an ignored INS code")
    check(rig.wait_events(lambda t: "good_read(1)" in t, since, 5).count("good_read(1)") == 1,
          "the INS code changed the signals")
    # INS content nowhere: not in any message, log, pin trace or outbox file
    check(not rig.leaks([ins]), "INS content found: " + ", ".join(rig.leaks([ins])))


def pack_and_2d_doc_refused(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    present(rig, other_code(rig, "medicine_pack", 606))
    present(rig, other_code(rig, "2d_doc", 707))

    def refusals() -> int:
        tel = rig.telemetry()
        return sum(tel[-1]["scans"].get("refusals", {}).values()) if tel else 0

    check(wait_until(lambda: refusals() >= 2, 20), "telemetry does not count the two refusals")


def fifty_patients(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    kinds = ("ordonnance", "phone_light", "phone_dark")
    shown: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        # the next patient's scene is rendered while the current one is at the counter
        def next_scene(i: int) -> Future[Scene]:
            return pool.submit(patient, rig, kinds[i % 3], 1000 + 50 * i)

        coming = next_scene(0)
        for i in range(50):
            scene = coming.result()
            if i < 49:
                coming = next_scene(i + 1)
            rig.show(scene.image)
            shown.append(epu(scene))
            # at least 0.7 s, and until the kiosk has taken this code (its scan reached the
            # broker; a count of good-read signals would be fooled by a repeat): the pace is
            # the kiosk's, so a starved daemon makes the queue slower, not shorter (a read
            # that never comes fails below, after PATIENT_WAIT_S)
            time.sleep(0.7)
            wait_until(partial(_delivered, rig, shown[-1]), PATIENT_WAIT_S, 0.1)
            rig.blank()
            time.sleep(0.3)
    if check(rig.wait_messages(50, 60), f"{len(rig.messages())} of 50 scans reached the broker"):
        msgs = rig.messages()
        check([m.payload for m in msgs] == shown, "not the patients' codes, in their order")
        seqs = [m.seq for m in msgs]
        check(seqs == list(range(seqs[0], seqs[0] + 50)), "seq not consecutive and increasing")
        check(len({m.scan_id for m in msgs}) == 50, "scan_id not unique")


def broker_outage(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    rig.broker_stop()
    scene = patient(rig, "ordonnance", 808)
    since = rig.now()
    present(rig, scene)
    check(wait_for(rig, since, "amber_on"), "no amber while the scan waits for the broker")
    time.sleep(2.0)  # the outage lasts: nothing may get through
    check(not rig.messages(), "a message got through a stopped broker")
    restarted = rig.now()
    rig.broker_start()
    if check(rig.wait_messages(1), "the queued scan was not delivered after the outage"):
        check(rig.messages()[0].payload == epu(scene), "delivered payload differs")
    check(wait_for(rig, restarted, "amber_off"), "amber did not go off once delivered")


def sigkill_with_scans_queued(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    rig.broker_stop()
    scenes = [patient(rig, "ordonnance", 900 + 40 * i) for i in range(3)]
    since = rig.now()
    for s in scenes:
        present(rig, s, gap_s=0.5)
    check(wait_for(rig, since, "good_read(1)", 3), "three good reads were not signalled")
    rig.kill_daemon()
    check(rig.outbox_depth() == 3, "the three scans were not queued on disk at the kill")
    restart = rig.now()
    rig.start_daemon()
    check(wait_for(rig, restart, "amber_on"), "no amber for the queued scans after the restart")
    rig.broker_start()
    if check(rig.wait_messages(3), "queued scans were lost across the SIGKILL"):
        msgs = rig.messages()
        check([m.payload for m in msgs] == [epu(s) for s in scenes], "payloads or order differ")
        check([m.seq for m in msgs] == sorted(m.seq for m in msgs), "not in seq order")


def camera_lost_and_back(rig: Rig, check: Check) -> None:
    rig.start_daemon()
    since = rig.now()
    rig.camera_unplug()
    check(wait_for(rig, since, "fault(4)", timeout=20), "no fault signal for the lost camera")
    time.sleep(2.0)
    back = rig.now()
    rig.camera_replug()
    check(wait_for(rig, back, "ready", timeout=40), "the kiosk did not get ready again")
    scene = patient(rig, "ordonnance", 1111)
    present(rig, scene)  # and it reads again
    check(rig.wait_messages(1), "no scan after the camera came back")


def outbox_full(rig: Rig, check: Check) -> None:
    rig.start_daemon(max_messages=2)
    rig.broker_stop()
    scenes = [patient(rig, "ordonnance", 1200 + 40 * i) for i in range(3)]
    for s in scenes:
        present(rig, s)
    since = rig.now()
    rig.broker_start()
    if check(rig.wait_messages(2), "the two queued scans were not delivered"):
        check([m.payload for m in rig.messages()] == [epu(s) for s in scenes[:2]],
              "not the two accepted scans")
    check(wait_for(rig, since, "ready"), "the fault did not clear once the outbox drained")


def disk_full(rig: Rig, check: Check) -> None:
    rig.use_small_disk()
    rig.start_daemon()
    rig.fill_disk()
    first, second = (patient(rig, "ordonnance", 1300 + 40 * i) for i in range(2))
    since = rig.now()
    present(rig, first)
    check(wait_for(rig, since, "fault(4)"), "no fault signal on a full disk")
    rig.free_disk()
    present(rig, second)
    if check(rig.wait_messages(1), "no scan delivered once the disk had room again"):
        check([m.payload for m in rig.messages()] == [epu(second)],
              "only the scan taken after the disk had room may be delivered")


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Rig, Check], None]
    signals: str  # expected, in the tokens of tests.hil.signals
    messages: int  # scan messages the pharmacy system receives
    timeout_s: float | None = None  # the test's hang guard, if longer than the default


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("good read on paper", good_read_on_paper, "ready(3) > good_read(1)", 1),
    Scenario("phone in dark mode", phone_in_dark_mode, "ready(3) > good_read(1)", 1),
    Scenario("held still 10 s", held_still_10s, "ready(3) > good_read(1)", 1),
    Scenario("shown again after leaving view", shown_again,
             "ready(3) > good_read(1) > good_read(1)", 1),
    Scenario("INS DataMatrix in the same frame", ins_in_the_same_frame,
             "ready(3) > good_read(1)", 1),
    Scenario("medicine pack and 2D-Doc refused", pack_and_2d_doc_refused,
             "ready(3) > refused(2) > refused(2)", 0),
    # fifty scenes rendered and checked while the queue moves at the kiosk's pace: on a loaded
    # 2-core machine (load 20) about 7 s a patient, past the default 300 s
    Scenario("fifty patients back to back", fifty_patients, "ready(3) > good_read(1)*50", 50,
             timeout_s=900.0),
    Scenario("broker outage and recovery", broker_outage,
             "ready(3) > good_read(1) + amber_on > amber_off", 1),
    Scenario("SIGKILL with scans queued", sigkill_with_scans_queued,
             "ready(3) > good_read(1) + amber_on > good_read(1)*2 > ready(3) + amber_on"
             " > amber_off", 3),
    Scenario("camera lost and back", camera_lost_and_back,
             "ready(3) > fault(4) > ready > good_read(1)", 1),
    Scenario("outbox full", outbox_full,
             "ready(3) > good_read(1) + amber_on > good_read(1) > fault(4) > amber_off + ready",
             2),
    Scenario("disk full", disk_full, "ready(3) > fault(4) > good_read(1) + ready", 1),
)


@dataclass
class Row:
    """One line of the printed table."""

    scenario: str
    expected: str
    seen: str
    messages: str
    verdict: str


def run(rig: Rig, scenario: Scenario) -> tuple[Row, list[str]]:
    """Run one scenario; its table row and the problems found (none: it passed)."""
    check = Check()
    since = 0.0  # a fresh rig per scenario: everything it shows belongs to this scenario
    scenario.run(rig, check)
    # the signals settle on the expectation, and then nothing more happens for a while
    seen = rig.wait_events(lambda t: matches(scenario.signals, t), since, SETTLE_S)
    if matches(scenario.signals, seen):
        time.sleep(QUIET_S)
        seen = rig.tokens(since)
    rig.wait_messages(scenario.messages, 10)
    time.sleep(0.5)  # a message too many would arrive about now
    got = len(rig.messages())
    check(matches(scenario.signals, seen),
          f"signals differ from the expectation (pin writes up to {rig.lateness():.2f} s late)")
    check(got == scenario.messages, f"{got} scan messages, expected {scenario.messages}")
    if rig.running:
        check(rig.stop_daemon() == 0, "the daemon did not stop cleanly on SIGTERM")
    verdict = "pass" if not check.problems else "FAIL"
    return Row(scenario.name, scenario.signals, summary(seen),
               f"{scenario.messages} / {got}", verdict), check.problems
