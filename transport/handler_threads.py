"""Threads for the work the shared loop hands off (a namespace connect, an event, a session's end), kept while idle.

The loop thread must never run application code, so each client packet that may do so gets a thread of its own, as
python-engineio's `start_background_task` gives it. Starting a thread is the expensive part (about a sixth of the
server's CPU in a connect storm, docs/perf.md): `Thread.start` waits until the new thread runs, and the loop thread
waited with it. `HandlerThreads.run` gives the same guarantee (the call starts at once, in a thread of its own,
never queued behind another call) but takes an idle thread when one waits, and starts one only when none does.

A call runs in a fresh, empty `contextvars.Context`, as in a new thread, and an exception it raises goes to
`threading.excepthook` as a new thread's would (utils/socketio_error_handler.py installs ours). Threads that
finished a call wait for the next one as idle threads (named IDLE_NAME, which utils/runtime_stats counts with the
pools, as a leak check must not see them): at most `max_idle` of them, each at most `idle_seconds`, then it ends.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any

BUSY_NAME = "signalboard-handler"
IDLE_NAME = "signalboard-handler-idle"


class HandlerThreads:
    """Runs each call at once in a thread of its own, reusing idle threads instead of starting a new one per call."""

    def __init__(self, max_idle: int = 32, idle_seconds: float = 10.0) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()  # guards _idle and _closed
        self._idle: list[_Worker] = []  # the most recently parked last: it is taken first, the others time out
        self._closed = False

    def run(self, target: Callable[..., object], *args: Any) -> None:
        """Call `target(*args)` in a thread of its own, now; returns at once."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.give(target, args)
        else:
            _Worker(self, target, args)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """Idle threads end now, and busy ones once their call returns (later calls still get a thread each)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.give(None, ())

    def _park(self, worker: _Worker) -> bool:
        """After a call: True when `worker` is now idle (and will be woken by give), False when it must end."""
        with self._lock:
            if self._closed or len(self._idle) >= self.max_idle:
                return False
            self._idle.append(worker)
            return True

    def _leave(self, worker: _Worker) -> bool:
        """An idle thread timed out: True when it left the idle list (and may end), False when run() took it just
        now and a call is on its way."""
        with self._lock:
            try:
                self._idle.remove(worker)
            except ValueError:
                return False
            return True


class _Worker:
    """One thread of a HandlerThreads: runs its first call, then each call given to it while it was idle."""

    __slots__ = ("pool", "task", "wake", "thread")

    def __init__(self, pool: HandlerThreads, target: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.pool = pool
        self.task: tuple[Callable[..., object] | None, tuple[Any, ...]] = (target, args)
        self.wake = threading.Lock()  # held while idle; released by give() once the task is set
        self.wake.acquire()
        self.thread = threading.Thread(target=self._serve, name=BUSY_NAME, daemon=True)
        self.thread.start()

    def give(self, target: Callable[..., object] | None, args: tuple[Any, ...]) -> None:
        """The next call for this idle worker (None: end)."""
        self.task = (target, args)
        self.wake.release()

    def _serve(self) -> None:
        thread = self.thread
        while True:
            target, args = self.task
            if target is None:
                return
            self.task = (None, ())  # let go of the call's arguments while idle
            thread.name = BUSY_NAME
            try:
                contextvars.Context().run(target, *args)
            except BaseException:  # noqa: BLE001 - what a new thread does with it: threading.excepthook
                exc_type, exc_value, exc_tb = sys.exc_info()
                threading.excepthook(threading.ExceptHookArgs((exc_type, exc_value, exc_tb, thread)))
                del exc_type, exc_value, exc_tb
            del target, args
            thread.name = IDLE_NAME
            if not self.pool._park(self):
                return
            if not self.wake.acquire(timeout=self.pool.idle_seconds):
                if self.pool._leave(self):
                    return
                self.wake.acquire()  # run() took this worker as the wait ended: its call is being given
