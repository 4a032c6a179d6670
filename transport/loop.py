"""One thread for every handed-off websocket: a selector for reads and backlogged writes, and a timer heap that
replaces python-engineio's one sleeping ping thread per connection.

Only the loop thread touches the selector, reads, and makes the send() calls; other threads ask for work with
call_soon(), flush_soon() and call_later(), which wake the selector through a socket pair when needed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from utils.background import StartTask

log = logging.getLogger(__name__)

Handler = Callable[[int], None]


class Flushable(Protocol):
    def flush(self) -> None:
        """Send what is buffered (called on the loop thread)."""


class SharedLoop:
    """A selector loop run by one background task, started on first use through `start` (utils.drain.BackgroundTasks:
    the graceful shutdown stops it last)."""

    TASK = "shared websocket loop"

    def __init__(self, start: StartTask, name: str = "signalboard-transport") -> None:
        self.name = name
        self._start = start
        # Made when the loop starts, so an app that never serves a websocket (unit tests) holds no descriptors.
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._lock = threading.Lock()  # guards _calls, _flushes, _timers, _woken, _thread_started and _stopped
        self._calls: list[Callable[[], object]] = []
        self._flushes: list[Flushable] = []
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()  # tie-breaker so equal due times never compare callables
        self._woken = False
        self._thread_started = False
        self._stopped = False
        self.thread_ident: int | None = None

    # ---- any thread ---------------------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread_started:
                return
            self._thread_started = True
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._start(self.TASK, self._run, self.stop)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop thread, after the callbacks asked for before it."""
        with self._lock:
            self._calls.append(callback)
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()

    def flush_soon(self, connection: Flushable) -> None:
        """Have the loop thread call connection.flush(); cheaper than call_soon for the hot path of a broadcast."""
        with self._lock:
            self._flushes.append(connection)
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()

    def flush_all(self, connections: Iterable[Flushable]) -> None:
        """flush_soon for many connections at once: one lock and at most one wake-up for a whole broadcast."""
        with self._lock:
            self._flushes.extend(connections)
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()

    def call_later(self, delay: float, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop thread in about `delay` seconds (no cancel: callbacks check their own state)."""
        entry = (time.monotonic() + delay, next(self._order), callback)
        with self._lock:
            heapq.heappush(self._timers, entry)
            # Pings are all scheduled one interval ahead, so a new timer is rarely the earliest: no wake needed then.
            # Before the loop started there is nothing to wake (and flagging it would make the next call_soon skip
            # its wake-up while the new loop sleeps until this timer).
            wake = self._timers[0] is entry and not self._woken and self._wake_w is not None
            self._woken = self._woken or wake
        if wake:
            self._wake()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w is None:
            return  # not started yet: the first select() will see the work
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # full means a wake-up is already pending; closed means the loop has stopped

    # ---- loop thread only ---------------------------------------------------------------------------------------

    def _started_selector(self) -> selectors.BaseSelector:
        if self._selector is None:
            raise RuntimeError(f"{self.name}: the loop is used before it started")
        return self._selector

    def register(self, sock: socket.socket, handler: Handler, events: int = selectors.EVENT_READ) -> None:
        self._started_selector().register(sock, events, handler)

    def modify(self, sock: socket.socket, handler: Handler, events: int) -> None:
        self._started_selector().modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        try:
            self._started_selector().unregister(sock)
        except (KeyError, ValueError):
            pass  # never registered, or its fd is already closed

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_ident

    def _run(self) -> None:
        selector, wake_r, wake_w = self._started_selector(), self._wake_r, self._wake_w
        if wake_r is None or wake_w is None:
            raise RuntimeError(f"{self.name}: the loop runs without its wake-up pair")
        self.thread_ident = threading.get_ident()
        threading.current_thread().name = self.name
        log.debug("%s loop started", self.name)
        while True:
            with self._lock:
                if self._stopped:
                    break
                timeout = 0.0 if self._calls or self._flushes else None
                if timeout is None and self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, mask in selector.select(timeout):
                if key.data is None:
                    self._drain_wake(wake_r)
                else:
                    self._guarded(key.data, mask)
            self._run_calls()
            self._run_flushes()
            self._run_timers()
        selector.close()
        wake_r.close()
        wake_w.close()

    def _drain_wake(self, wake_r: socket.socket) -> None:
        # Drain first, then clear the flag: cleared first, a wake-up sent in between would be drained with the flag
        # left set, and every later call_soon()/flush_soon() would skip waking a sleeping loop. Work asked for
        # between the two steps is still seen: the lists are read after this returns.
        try:
            while wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            self._woken = False

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for callback in calls:
            self._guarded(callback)

    def _run_flushes(self) -> None:
        with self._lock:
            flushes, self._flushes = self._flushes, []
        for connection in flushes:
            self._guarded(connection.flush)

    def _run_timers(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            while self._timers and self._timers[0][0] <= now:
                due.append(heapq.heappop(self._timers)[2])
        for callback in due:
            self._guarded(callback)

    def _guarded(self, callback: Callable[..., object], *args: Any) -> None:
        # The one thread serving every websocket must outlive any single connection's failure, whatever it is.
        try:
            callback(*args)
        except Exception:
            log.exception("%s: a connection callback failed", self.name)
