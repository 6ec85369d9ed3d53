"""Health: systemd notification and watchdog, clock synchronisation, system figures.

`SystemdNotifier` speaks the sd_notify protocol itself (one datagram per
message to $NOTIFY_SOCKET) so the daemon needs no libsystemd binding; off
systemd it does nothing. `Watchdog` pings the systemd watchdog only while
every liveness check passes, so a hung camera or a dead thread gets the
service restarted instead of a kiosk that looks alive and reads nothing.
`clock_synced()` and `system_info()` feed scan messages, telemetry and
`ordoscan check`; neither raises.

Wiring, in the daemon::

    notifier = SystemdNotifier()
    watchdog = Watchdog(notifier, {
        "camera": frames_arriving(lambda: last_frame_time, cfg.camera.stall_timeout_s * 2),
        "publisher": thread_alive(lambda: publisher_thread),
    }, status=lambda: f"queue {depth}, broker {state}")
    notifier.ready("running"); watchdog.start()
    ...
    notifier.stopping(); watchdog.stop()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ordoscan.lifecycle import Closeable, Service

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]  # (ok, why not), e.g. (False, "no camera frame for 12 s")

STATUS_EVERY_S = 5.0  # STATUS= at most this often (when the text changed)
STOP_TIMEOUT_S = 5.0

THERMAL_PATH = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED_PATH = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
VCGENCMD_TIMEOUT_S = 2.0

# Bits of the firmware's get_throttled word: 0-3 now, 16-19 since boot.
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
    16: "under-voltage occurred",
    17: "arm frequency capping occurred",
    18: "throttling occurred",
    19: "soft temperature limit occurred",
}


def _socket_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as an AF_UNIX address: a path, or '@name' for the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def _one_line(value: object) -> str:
    return " ".join(str(value).splitlines())


class SystemdNotifier(Closeable):
    """sd_notify without libsystemd: KEY=value datagrams to $NOTIFY_SOCKET, a no-op without it."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw)
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET = %r: neither a path nor an @abstract name; ignored", raw)
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._address is not None

    def notify(self, **fields: object) -> bool:
        """Send KEY=value fields in one message, e.g. notify(READY=1, STATUS="up"); True if sent."""
        if self._address is None or not fields:
            return False
        bad = [key for key in fields if not key.isupper() or not key.replace("_", "").isalnum()]
        if bad:  # systemd would ignore them; say so rather than send a half-understood message
            log.warning("sd_notify field %r: use upper-case letters, digits and '_'", bad[0])
            return False
        data = "".join(f"{key}={_one_line(value)}\n" for key, value in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    self._sock = socket.socket(socket.AF_UNIX, kind)
                # never wait on systemd: a full socket buffer loses this message, not the pipeline
                self._sock.sendto(data, socket.MSG_DONTWAIT, self._address)
            except OSError as e:
                if not self._failing:
                    log.warning("sd_notify to %r failed: %s", self._display, e)
                self._failing = True
                return False
            if self._failing:
                log.info("sd_notify to %r works again", self._display)
                self._failing = False
            return True

    @property
    def _display(self) -> str:
        a = self._address
        return "@" + a[1:].decode(errors="replace") if isinstance(a, bytes) else str(a)

    def ready(self, status: str | None = None) -> bool:
        """Startup finished (READY=1), with an optional status line."""
        return self.notify(READY=1) if status is None else self.notify(READY=1, STATUS=status)

    def watchdog(self) -> bool:
        """Keep-alive ping (WATCHDOG=1)."""
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status` (STATUS=...)."""
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """Shutdown began (STOPPING=1)."""
        return self.notify(STOPPING=1)

    def watchdog_interval(self) -> float | None:
        """WatchdogSec of the unit, in seconds, when it applies to this process; else None."""
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None  # meant for another process (we were started by the main one)
            except ValueError:
                log.warning("WATCHDOG_PID = %r: not a pid; watchdog ignored", self._watchdog_pid)
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            usec = 0
        if usec <= 0:
            log.warning(
                "WATCHDOG_USEC = %r: not a positive integer; watchdog ignored", self._watchdog_usec
            )
            return None
        return usec / 1_000_000

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


# -- liveness -------------------------------------------------------------------


def frames_arriving(
    last_frame_at: Callable[[], float | None],
    within_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Check:
    """A check: a camera frame arrived within `within_s` (timestamps on `clock`).

    Before the first frame the check counts from its own creation, so a
    camera that never delivers is caught as well as one that stops.
    """
    created = clock()

    def check() -> tuple[bool, str]:
        last = last_frame_at()
        age = clock() - (created if last is None else last)
        if age <= within_s:
            return True, ""
        what = "no camera frame yet" if last is None else "no camera frame"
        return False, f"{what} for {age:.0f} s (limit {within_s:g} s)"

    return check


def thread_alive(thread: threading.Thread | Callable[[], threading.Thread | None]) -> Check:
    """A check: the thread (or the one a callable returns now) is running."""

    def check() -> tuple[bool, str]:
        t = thread if isinstance(thread, threading.Thread) else thread()
        if t is not None and t.is_alive():
            return True, ""
        name = t.name if t is not None else "worker"
        return False, f"thread {name!r} is not running"

    return check


class Watchdog(Service):
    """Pings the systemd watchdog only while every liveness check passes; keeps STATUS= current."""

    def __init__(
        self,
        notifier: SystemdNotifier,
        checks: Mapping[str, Check] | None = None,
        *,
        status: Callable[[], str] | None = None,
        ping_every: float | None = None,
        status_every: float = STATUS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._checks: dict[str, Check] = dict(checks or {})
        self._summary = status
        if ping_every is None:
            interval = notifier.watchdog_interval()
            ping_every = interval / 2 if interval else None  # half: a late ping still lands in time
        self.ping_every = ping_every
        self.status_every = status_every
        self._clock = clock
        self._withheld: tuple[str, ...] = ()  # names of the failing checks, once logged
        self._sent_status: str | None = None
        self._sent_at = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add_check(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def evaluate(self) -> tuple[bool, list[str]]:
        """Run every check: (all passed, 'name: reason' of each failure)."""
        with self._lock:
            checks = list(self._checks.items())
        failures = []
        for name, check in checks:
            try:
                ok, reason = check()
            except Exception as e:  # a broken check is a failed check, never a dead watchdog
                ok, reason = False, f"check raised {type(e).__name__}: {e}"
            if not ok:
                failures.append(f"{name}: {reason or 'failed'}")
        return not failures, failures

    def tick(self) -> bool:
        """One round: ping if every check passes, update STATUS=; True if WATCHDOG=1 was sent."""
        ok, failures = self.evaluate()
        names = tuple(f.split(":", 1)[0] for f in failures)
        changed = names != self._withheld
        if changed:
            if names:
                log.warning(
                    "watchdog ping withheld (systemd will restart us): %s", "; ".join(failures)
                )
            else:
                log.info("liveness checks pass again; watchdog pings resumed")
            self._withheld = names
        sent = bool(ok and self.ping_every and self._notifier.watchdog())
        self._update_status(failures, force=changed)
        return sent

    def _update_status(self, failures: list[str], *, force: bool) -> None:
        text = ""
        if self._summary is not None:
            try:
                text = _one_line(self._summary())
            except Exception as e:  # the summary is informative only
                text = f"status unavailable ({type(e).__name__})"
        if failures:
            text = "unhealthy: " + "; ".join(failures) + (f" | {text}" if text else "")
        if not text or text == self._sent_status:
            return
        now = self._clock()
        due = force or now - self._sent_at >= self.status_every
        if due and self._notifier.status(text):
            self._sent_status, self._sent_at = text, now

    @property
    def period(self) -> float:
        """Time between two rounds."""
        periods = [p for p in (self.ping_every, self.status_every) if p and p > 0]
        return min(periods) if periods else STATUS_EVERY_S

    def start(self) -> None:
        """Run rounds in a thread; nothing to do (no thread) off systemd."""
        if not self._notifier.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep the thread: a silent watchdog would restart a healthy kiosk
                log.exception("watchdog round failed")
            self._stop.wait(self.period)


# -- clock ----------------------------------------------------------------------

TIME_ERROR = 5  # adjtimex(2) return state: the clock is not synchronised
STA_UNSYNC = 0x0040


class _Timeval(ctypes.Structure):
    """struct timeval: seconds and microseconds."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of adjtimex(2), as glibc lays it out on 64-bit and 32-bit-time builds."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 16),  # the kernel's padding, plus room to spare
    ]


@functools.cache
def _adjtimex_fn() -> Any:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.POINTER(_Timex)]
    fn.restype = ctypes.c_int
    return fn


def _adjtimex() -> tuple[int, _Timex] | None:
    """adjtimex(2) in read-only mode (modes = 0): (state, struct), or None if unavailable."""
    fn = _adjtimex_fn()
    if fn is None:
        return None
    tx = _Timex()
    state = int(fn(ctypes.byref(tx)))
    if state < 0:
        return None
    return state, tx


def sync_state(state: int, status: int) -> bool:
    """Whether adjtimex's return state and status word say the clock is synchronised."""
    return 0 <= state != TIME_ERROR and not status & STA_UNSYNC


def clock_synced() -> bool:
    """True if the kernel says the system clock is synchronised (NTP); False if not or unknown."""
    result = _adjtimex()
    if result is None:
        return False
    state, tx = result
    return sync_state(state, tx.status)


# -- system figures -------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def cpu_temperature(path: Path = THERMAL_PATH) -> float | None:
    """CPU temperature in °C (the kernel gives millidegrees); None off a Pi or if unreadable."""
    text = _read_text(path)
    try:
        return round(int(text) / 1000, 1) if text else None
    except ValueError:
        return None


def _parse_throttled(text: str) -> int | None:
    text = text.strip().removeprefix("throttled=")
    try:
        return int(text, 16)
    except ValueError:
        return None


def throttled(path: Path = THROTTLED_PATH, vcgencmd: str | None = "vcgencmd") -> int | None:
    """The firmware's throttling word (THROTTLE_BITS) from sysfs or `vcgencmd`; None if unknown."""
    text = _read_text(path)
    if text:
        return _parse_throttled(text)
    exe = shutil.which(vcgencmd) if vcgencmd else None
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "get_throttled"],
            capture_output=True, text=True, timeout=VCGENCMD_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_throttled(out.stdout) if out.returncode == 0 else None


def throttle_flags(word: int | None) -> list[str] | None:
    """The names of the bits set in a throttling word."""
    if word is None:
        return None
    return [name for bit, name in THROTTLE_BITS.items() if word >> bit & 1]


def disk_free(path: str | os.PathLike[str]) -> int | None:
    """Free bytes (for this user) on the file system of path, or of its nearest existing parent."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return None
    return None


def system_info(
    path: str | os.PathLike[str],
    *,
    thermal_path: Path = THERMAL_PATH,
    throttled_path: Path = THROTTLED_PATH,
    vcgencmd: str | None = "vcgencmd",
) -> dict[str, Any]:
    """CPU temperature, throttling, free disk under path, load average; None where unknown."""
    word = throttled(throttled_path, vcgencmd)
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_temp_c": cpu_temperature(thermal_path),
        "throttled": word,
        "throttled_flags": throttle_flags(word),
        "disk_free_bytes": disk_free(path),
        "load_avg": load,
    }
