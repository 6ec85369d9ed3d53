"""`python -m ordoscan listen ...` as the integrator runs it, for the tests."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from pathlib import Path

from tests.support import child_env

ROOT = Path(__file__).resolve().parents[2]


class Listen:
    """`python -m ordoscan listen ...` with its stderr followed line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ordoscan", "listen", *args],
            cwd=ROOT, env=child_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.err: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read_err, daemon=True)
        self._reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))
            if "listening on" in line:
                self._listening.set()

    def wait_listening(self, timeout: float = 30.0) -> bool:
        return self._listening.wait(timeout)

    def finish(self, timeout: float = 30.0) -> tuple[int, list[str]]:
        """Exit code and stdout lines, once the process ends (stderr is the reader's)."""
        rc = self.proc.wait(timeout)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self._reader.join(5)
        return rc, out.splitlines()


def printed_lines(listen: Listen) -> queue.Queue[str]:
    """A listener's stdout lines as they come (a read with a timeout cannot hang the test)."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert listen.proc.stdout is not None
        for line in listen.proc.stdout:
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out
