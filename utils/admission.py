"""Admission control: Socket.IO sessions may never take the threads plain HTTP needs.

Under gunicorn gthread every websocket holds a worker thread for its whole life and every idle long-poll holds one
until its next ping, so each open session costs about one thread. Sessions beyond `threads - reserve` are refused
quickly with 503 and Retry-After while a thread is still free to say so; the reserve keeps /livez, the publish API
and the dashboard answering. When threads run short anyway, long-polls are answered early so they cannot pin the
pool. With WEBSOCKET_TRANSPORT=shared a websocket gives its thread back after the handshake (transport/), so only
polling sessions count against the threads and websockets have their own cap (MAX_WEBSOCKET_CLIENTS).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from engineio import packet as eio_packet
from prometheus_client import Counter

from utils.background import StartTask
from utils.metrics import PREFIX
from utils.runtime_stats import connected_clients

log = logging.getLogger(__name__)

ADMISSION_REFUSALS = Counter(f"{PREFIX}_admission_refusals", "Socket.IO connections refused before taking a thread",
                             ["reason"])
LONG_POLLS_CUT_SHORT = Counter(f"{PREFIX}_long_polls_cut_short", "Long-polls answered early to free a thread")
for _reason in ("capacity", "draining", "descriptors"):
    ADMISSION_REFUSALS.labels(_reason)

HOLD_KINDS = ("websocket", "long_poll", "http")


class ThreadBudget:
    """Knows at all times how the worker's threads are spent: held by websockets, by long-polls, or busy with
    ordinary requests."""

    def __init__(self, threads: int, reserve: int, websocket_limit: int | None = None) -> None:
        self.threads = threads
        self.reserve = reserve
        # None: websockets hold threads (threaded transport); a number: they hold none, but at most this many.
        self.websocket_limit = websocket_limit
        self._lock = threading.Lock()  # guards _held
        self._held = dict.fromkeys(HOLD_KINDS, 0)

    @property
    def session_capacity(self) -> int:
        return self.threads - self.reserve

    @contextmanager
    def hold(self, kind: str) -> Iterator[None]:
        with self._lock:
            self._held[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[kind] -= 1

    def free_threads(self) -> int:
        with self._lock:
            return self.threads - sum(self._held.values())

    def tight(self) -> bool:
        """Fewer threads free than the reserve: time to stop long-polls from sitting on them."""
        return self.free_threads() < self.reserve

    def report(self, engineio_server: Any) -> dict[str, int]:
        clients = connected_clients(engineio_server)
        sessions = clients["polling"] + (clients["websocket"] if self.websocket_limit is None else 0)
        with self._lock:
            held = dict(self._held)
        report = {
            "threads": self.threads, "reserved": self.reserve,
            "held_websocket": held["websocket"], "held_long_poll": held["long_poll"], "busy_http": held["http"],
            "free_threads": self.threads - sum(held.values()),
            "capacity": self.session_capacity, "sessions": sessions, "free": max(0, self.session_capacity - sessions),
        }
        if self.websocket_limit is not None:
            report |= {"websocket_capacity": self.websocket_limit, "websockets": clients["websocket"],
                       "websocket_free": max(0, self.websocket_limit - clients["websocket"])}
        return report


class LongPollCap:
    """While the budget is tight, answers long-polls older than `cap_seconds` with a no-op packet, so the client
    polls again and the thread serves someone else in between. One lazily started thread watches them all."""

    TASK = "long-poll cap"

    def __init__(self, budget: ThreadBudget, engineio_server: Any, cap_seconds: float, start_task: StartTask,
                 interval: float = 0.25) -> None:
        self.budget = budget
        self.engineio_server = engineio_server
        self._start_task = start_task  # utils.drain.BackgroundTasks.start: SIGTERM stops the watcher
        self.cap_seconds = cap_seconds
        self.interval = interval
        self._lock = threading.Lock()  # guards _polls and _watcher
        self._polls: dict[str, float] = {}  # sid -> when its current long-poll started
        self._watcher: object | None = None
        self._stop = threading.Event()

    @contextmanager
    def track(self, sid: str) -> Iterator[None]:
        with self._lock:
            self._polls[sid] = time.monotonic()
            if self._watcher is None:
                self._watcher = self._start_task(self.TASK, self._watch, self.stop)
        try:
            yield
        finally:
            with self._lock:
                self._polls.pop(sid, None)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.budget.tight():
                continue
            deadline = time.monotonic() - self.cap_seconds
            with self._lock:
                overdue = [sid for sid, started in self._polls.items() if started <= deadline]
                for sid in overdue:
                    del self._polls[sid]  # one no-op per poll is enough
            for sid in overdue:
                socket = self.engineio_server.sockets.get(sid)
                if socket is not None and not socket.closed:
                    socket.send(eio_packet.Packet(eio_packet.NOOP))
                    LONG_POLLS_CUT_SHORT.inc()


class Admission:
    """Decides whether a new Engine.IO session may start; answers the refusal itself when not."""

    def __init__(self, budget: ThreadBudget, engineio_server: Any, draining: Callable[[], bool],
                 long_poll_cap_seconds: float, start_task: StartTask) -> None:
        self.budget = budget
        self.engineio_server = engineio_server
        self.draining = draining
        self.poll_cap = LongPollCap(budget, engineio_server, long_poll_cap_seconds, start_task)

    def refusal_reason(self, websocket: bool = False) -> str | None:
        """Why a new session must be refused, if it must; `websocket` for a direct websocket handshake."""
        if self.draining():
            return "draining"
        report = self.budget.report(self.engineio_server)
        if self.budget.websocket_limit is None:
            full = report["free"] <= 0
        else:
            # A websocket holds no thread; a polling handshake is refused at the websocket cap too, as most
            # clients upgrade a moment later.
            full = report["websocket_free"] <= 0 or (report["free"] <= 0 and not websocket)
        return "capacity" if full else None

    def capacity_check(self) -> str | None:
        """Readiness check: a load balancer should send new clients elsewhere while we are full (no figures: the
        reason is public, the figures are in /readyz's detail and /metrics)."""
        report = self.budget.report(self.engineio_server)
        if report["free"] <= 0:
            return "no free Socket.IO capacity"
        if report.get("websocket_free", 1) <= 0:
            return "no free websocket capacity"
        return None

    @staticmethod
    def refuse(reason: str, start_response: Callable) -> Iterable[bytes]:
        status, headers, body = refusal(reason)
        start_response(status, headers)
        return [body]


def refusal(reason: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """A refused new session's 503 answer (status, headers, body), counted; also for a shortage met past admission
    (`descriptors`: the process is out of file descriptors, see utils/descriptors.py)."""
    ADMISSION_REFUSALS.labels(reason).inc()
    log.debug("refused a new Socket.IO session: %s", reason)
    message = {"draining": "Server is shutting down", "descriptors": "Server out of connections"}.get(
        reason, "Server at capacity")
    body = json.dumps({"code": 5, "message": message, "reason": reason}).encode()
    # Jittered so refused clients do not all come back in the same second.
    retry_after = str(random.randint(1, 5))
    return "503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                       ("Retry-After", retry_after)], body
