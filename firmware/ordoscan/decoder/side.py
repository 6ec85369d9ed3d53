"""A second core for the decoder: one worker thread beside the scan thread.

A Pi 4 or 5 has four cores and the scan loop ran on one: on a Pi 4 a turn of it
spent most of its time on the two fast passes (QR Code, DataMatrix) and the
finder search. The fast passes do not depend on each other, nor do the finder
search's row and column hits and its coarser level, and zxing-cpp and numpy's
loops release the GIL: the decoder hands the DataMatrix pass and part of the
search to this worker and does the rest itself (fork and join within one
decode() call: a frame's pixels are the camera's lease, held until the scan
loop asks for the next frame, so no task outlives its frame's decode()).

    side = SideCore()
    task = side.submit(lambda: dm_pass(frame))
    qr = qr_pass(frame)
    dm = side.result(task)
    side.close()

One task at a time is the use made of it (submit, then result, before the next
submit); tasks run in the order submitted. An exception in a task is raised again
by result(), on the caller's thread. The worker's thread starts with the first
task and is a daemon: close() ends it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

THREAD_NAME = "ordoscan-decode-side"


class Task(Generic[T]):
    """One piece of work handed to the side core."""

    __slots__ = ("_done", "_fn", "error", "spent", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None
        self.spent = 0.0  # the worker's CPU time on it (s)

    def _run(self) -> None:
        t0 = time.thread_time()
        try:
            self.value = self._fn()
        except BaseException as e:  # raised again on the caller's thread, by result()
            self.error = e
        finally:
            self._fn = _done_fn  # the frame it held is the caller's again
            self.spent = time.thread_time() - t0
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


def _done_fn() -> Any:
    return None


class SideCore:
    """A worker thread that runs the decoder's tasks in order (see the module)."""

    def __init__(self, name: str = THREAD_NAME) -> None:
        self._name = name
        self._q: queue.SimpleQueue[Task[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.tasks = 0  # tasks run
        self.cpu_s = 0.0  # the worker's CPU time over them

    def submit(self, fn: Callable[[], T]) -> Task[T]:
        """Queue `fn` for the worker; its value is result(task)'s."""
        task = Task(fn)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._q.put(task)
        return task

    def result(self, task: Task[T]) -> T:
        """Wait for `task`; its value, or its exception raised here."""
        task.wait()
        self.tasks += 1
        self.cpu_s += task.spent
        if task.error is not None:
            raise task.error
        return task.value  # type: ignore[return-value]  # (set: the task ended without error)

    def close(self, timeout: float = 1.0) -> None:
        """End the worker once its queued tasks are done (waiting up to `timeout`)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._q.put(None)
        thread.join(timeout)

    def __enter__(self) -> SideCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while True:
            task = self._q.get()
            if task is None:
                return
            task._run()
