"""Readiness with REDIS_URL: Redis reachable and the message-queue listener subscribed and really receiving.

A background monitor probes once a second by sending a marker through Redis to this instance's own listener,
which is the only way to know the listener receives (python-socketio reports nothing). It also restarts a
listener thread that ended, asks a listener that is idle yet receives nothing at all to reconnect, and keeps
this instance's presence heartbeat going.

Idle matters: a listener behind on its queue (starved of CPU by a reconnect storm, or replaying a catch-up) also
receives nothing new for seconds, and reconnecting it would throw away what Redis already sent it, join markers
included, so every subscription waiting for one fails and comes back as more work. Such a listener is only
reported not ready until it catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from hub.errors import Unavailable
from hub.presence import PresenceChange
from hub.redis_client import OUTAGE_ERRORS
from utils.background import Once, StartTask

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
# No probe back for this long: not ready (the listener is dead, stuck or far behind).
STALE_AFTER = 5.0
# Nothing at all received for this long while Redis answers and the listener polls idle: the subscription is
# dead, reconnect it.
RECONNECT_AFTER = 5.0
# An empty poll at most this long ago means the listener is idle now (it polls every second when it is).
IDLE_WITHIN = 2.5


class QueueListener(Protocol):
    subscribed: bool
    last_marker: float
    last_receive: float
    last_idle: float

    def initialize(self) -> None: ...
    def listener_alive(self) -> bool: ...
    def restart_listener(self) -> None: ...
    def reconnect(self) -> None: ...
    def probe(self, on_reached: Callable[[], None]) -> None: ...


class Heartbeat(Protocol):
    def heartbeat(self) -> list[PresenceChange]: ...


class RedisHealth:
    """The monitor behind the `redis` readiness check; also restarts the listener and keeps presence alive."""

    TASK = "redis health monitor"

    def __init__(
        self,
        client: Any,
        listener: QueueListener,
        presence: Heartbeat,
        start_task: StartTask,
        *,
        announce: Callable[[PresenceChange], None] = lambda change: None,
        presence_interval: float = 5.0,
        sentinel: bool = False,
    ) -> None:
        self.client = client
        self.listener = listener
        self.presence = presence
        self.presence_interval = presence_interval
        self.announce = announce
        self._start_task = start_task  # utils.drain.BackgroundTasks.start: SIGTERM stops the monitor
        self._stop = threading.Event()
        # Behind Sentinel an unreachable master is a failover under way (or the Sentinels finding no master).
        self.sentinel = sentinel
        self._start = Once()
        self._ticked = False
        self._redis_error: str | None = None
        self._last_beat = 0.0
        self._last_reconnect = 0.0
        self._said_behind = False  # a listener behind is logged once per episode

    def ensure_started(self) -> None:
        """Start the monitor (and the listener) on first use: apps built for a CLI command never start them."""
        if self._start.claim():
            self.listener.initialize()
            self._start_task(self.TASK, self._run, self.stop)

    def stop(self) -> None:
        """End the monitor (graceful shutdown), and with it this instance's presence heartbeat."""
        self._stop.set()

    def _run(self) -> None:
        log.info("redis health monitor started")
        while not self._stop.is_set():
            try:
                self.tick()
            # The monitor is what readiness relies on: a bug in one round must not end it.
            except Exception:
                log.exception("redis health monitor round failed")
            self._stop.wait(PROBE_INTERVAL)

    def tick(self) -> None:
        """One round: listener thread, Redis, probe, presence heartbeat, reconnect if nothing arrives."""
        if not self.listener.listener_alive():
            self.listener.restart_listener()
        try:
            self.client.ping()
            self.listener.probe(lambda: None)
        except (*OUTAGE_ERRORS, Unavailable) as exc:
            if self._redis_error is None:
                log.warning("redis unreachable%s: %s", " (failing over?)" if self.sentinel else "", exc)
            self._redis_error = type(exc).__name__
            self._ticked = True
            return
        if self._redis_error is not None:
            log.info("redis reachable again")
        self._redis_error = None
        now = time.monotonic()
        if now - self._last_beat >= self.presence_interval:
            try:
                for change in self.presence.heartbeat():
                    self.announce(change)  # users whose last connection was on a crashed instance
                self._last_beat = now
            except OUTAGE_ERRORS as exc:
                log.warning("presence heartbeat failed: %s", exc)
        silent = now - max(self.listener.last_receive, self.listener.last_marker)
        if self._ticked and silent > RECONNECT_AFTER:
            self._silent(now, silent)
        else:
            self._said_behind = False
        self._ticked = True

    def _silent(self, now: float, silent: float) -> None:
        """Nothing received for RECONNECT_AFTER: reconnect a deaf idle listener; leave a busy one to catch up."""
        if now - self.listener.last_idle > IDLE_WITHIN:
            if not self._said_behind:
                self._said_behind = True
                log.warning("message-queue listener is behind (nothing new for %.0fs, still working through what "
                            "arrived); not reconnecting it", silent)
            return
        self._said_behind = False
        if now - self._last_reconnect > RECONNECT_AFTER:
            log.warning("message-queue listener received nothing for %.0fs while redis answers; reconnecting", silent)
            self._last_reconnect = now
            self.listener.reconnect()

    def check(self) -> str | None:
        """Readiness check: None when ready, else why not."""
        self.ensure_started()
        if not self._ticked:
            return "starting"
        if self._redis_error is not None:
            return f"{'failing over' if self.sentinel else 'redis unreachable'} ({self._redis_error})"
        if not self.listener.listener_alive():
            return "message-queue listener not running"
        if not self.listener.subscribed:
            return "message-queue listener not subscribed"
        late = time.monotonic() - self.listener.last_marker
        if late > STALE_AFTER:
            return f"message-queue listener not receiving (last probe {late:.0f}s ago)"
        return None
