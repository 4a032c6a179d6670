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
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from engineio import packet as eio_packet
from prometheus_client import Counter

from utils.address_limits import AddressLimits
from utils.background import StartTask
from utils.client_address import Network, client_address
from utils.metrics import PREFIX
from utils.runtime_stats import connected_clients

log = logging.getLogger(__name__)

ADMISSION_REFUSALS = Counter(f"{PREFIX}_admission_refusals", "Socket.IO connections refused before taking a thread",
                             ["reason"])
LONG_POLLS_CUT_SHORT = Counter(f"{PREFIX}_long_polls_cut_short", "Long-polls answered early to free a thread")

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


class Reservation:
    """A handshake's place in the budget and in its address's slots, taken in one step with the check.

    The session python-engineio creates takes it over (`bind`, from the connect observer); a handshake that made no
    session gives it back when its request ends (`release`)."""

    __slots__ = ("admission", "address", "pending")

    def __init__(self, admission: Admission, address: str) -> None:
        self.admission = admission
        self.address = address
        self.pending = True

    def bind(self, sid: str) -> None:
        self.admission._settle(self, sid)

    def release(self) -> None:
        self.admission._settle(self, None)


RESERVATION_KEY = "signalboard.admission"

# reason -> status, message; per-address refusals are the client's doing (429), the others the server's state (503).
REFUSALS = {
    "capacity": ("503 SERVICE UNAVAILABLE", "Server at capacity"),
    "draining": ("503 SERVICE UNAVAILABLE", "Server is shutting down"),
    "descriptors": ("503 SERVICE UNAVAILABLE", "Server out of connections"),
    "connect_rate": ("429 TOO MANY REQUESTS", "Too many new sessions from this address"),
    "sessions_per_address": ("429 TOO MANY REQUESTS", "Too many open sessions from this address"),
    "connections_per_address": ("429 TOO MANY REQUESTS", "Too many connections from this address"),
}
for _reason in REFUSALS:
    ADMISSION_REFUSALS.labels(_reason)


class Admission:
    """Decides whether a new Engine.IO session may start; answers the refusal itself when not."""

    def __init__(self, budget: ThreadBudget, engineio_server: Any, draining: Callable[[], bool],
                 long_poll_cap_seconds: float, start_task: StartTask, limits: AddressLimits | None = None,
                 trusted_proxies: tuple[Network, ...] = ()) -> None:
        self.budget = budget
        self.engineio_server = engineio_server
        self.draining = draining
        self.poll_cap = LongPollCap(budget, engineio_server, long_poll_cap_seconds, start_task)
        self.limits = limits
        self.trusted_proxies = trusted_proxies
        # Guards _pending: handshakes admitted whose session python-engineio has not yet registered. Counting them
        # makes the check and the registration one step (a burst can no longer pass the cap).
        self._lock = threading.Lock()
        self._pending = 0

    def admit(self, environ: dict, websocket: bool = False) -> tuple[Reservation | None, str | None, float]:
        """(reservation, None, 0) for a handshake that may run, or (None, reason, retry_after) for a refusal."""
        if self.draining():
            return None, "draining", 0.0
        address = client_address(environ, self.trusted_proxies)
        if self.limits is not None:
            wait = self.limits.rate_wait(address)
            if wait:
                return None, "connect_rate", wait
        with self._lock:
            reason = self.refusal_reason(websocket, self._pending)
            if reason:
                return None, reason, 0.0
            if self.limits is not None and not self.limits.try_take(address):
                return None, "sessions_per_address", 0.0
            self._pending += 1
        return Reservation(self, address), None, 0.0

    def _settle(self, reservation: Reservation, sid: str | None) -> None:
        with self._lock:
            if not reservation.pending:
                return
            reservation.pending = False
            self._pending -= 1
        if self.limits is None:
            return
        if sid is None:
            self.limits.give_back(reservation.address)
        else:
            self.limits.bind(sid, reservation.address)

    def on_connect(self, sid: str, environ: dict) -> None:
        """Connect observer: the new session takes over its handshake's reservation."""
        reservation = environ.get(RESERVATION_KEY)
        if reservation is not None:
            reservation.bind(sid)

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Disconnect observer: the session's address slot is free again."""
        if self.limits is not None:
            self.limits.session_closed(sid)

    def refusal_reason(self, websocket: bool = False, pending: int = 0) -> str | None:
        """Why a new session must be refused, if it must; `websocket` for a direct websocket handshake, `pending`
        handshakes admitted but not yet registered."""
        if self.draining():
            return "draining"
        report = self.budget.report(self.engineio_server)
        if self.budget.websocket_limit is None:
            full = report["free"] - pending <= 0
        else:
            # A websocket holds no thread; a polling handshake is refused at the websocket cap too, as most
            # clients upgrade a moment later.
            full = report["websocket_free"] - pending <= 0 or (report["free"] - pending <= 0 and not websocket)
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
    def refuse(reason: str, start_response: Callable, retry_after: float = 0.0) -> Iterable[bytes]:
        status, headers, body = refusal(reason, retry_after)
        start_response(status, headers)
        return [body]


def refusal(reason: str, retry_after: float = 0.0) -> tuple[str, list[tuple[str, str]], bytes]:
    """A refused new session's answer (status, headers, body), counted: 429 for what one address did, 503 for the
    server's state; also for a shortage met past admission (`descriptors`: the process is out of file descriptors,
    see utils/descriptors.py). `retry_after`: seconds until it would pass (0: jittered 1 to 5 s)."""
    ADMISSION_REFUSALS.labels(reason).inc()
    log.debug("refused a new Socket.IO session: %s", reason)
    status, message = REFUSALS[reason]
    body = json.dumps({"code": 5, "message": message, "reason": reason}).encode()
    # Jittered so refused clients do not all come back in the same second.
    seconds = str(max(1, math.ceil(retry_after)) if retry_after else random.randint(1, 5))
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Retry-After", seconds)], body
