"""The single ordered queue between publishing and sending, so publishers never wait for subscribers.

Everything that changes what a connection receives goes through this one queue and is carried out by one
worker in arrival order: messages, subscriptions (with their recovery backlog), unsubscriptions and presence
announcements. That order is what makes recovery exact: a subscription queued after message N and before
message N+1 replays up to N from history, then joins the live audience in time for N+1, so each message
reaches the subscriber exactly once and in offset order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hub.errors import Unavailable
from hub.history import Message
from hub.presence import PresenceChange, PresenceView
from utils.background import StartTask

log = logging.getLogger(__name__)


class Delivery(Protocol):
    """What the fan-out worker needs from the network layer (implemented with Socket.IO rooms)."""

    def send(self, message: Message, sid: str | None = None, exclude: str | None = None) -> None:
        """Send to everyone subscribed to the message's channel but `exclude`, or to one connection."""

    def send_presence(self, change: PresenceChange) -> None:
        """Tell the channel's presence listeners that a user joined or left."""

    def add(self, sid: str, channel: str, presence: PresenceView | None) -> None:
        """Make `sid` a live recipient of `channel` (and of its presence events, as `presence` says, if any)."""

    def remove(self, sid: str, channel: str) -> None:
        """Stop sending `channel` to `sid`."""


class Fanout(Protocol):
    """What the hub needs from live delivery: FanoutQueue in one process, hub.redis_fanout.RedisFanout with Redis.

    Whatever the implementation, a subscription's backlog reaches the subscriber before any live message after it,
    and each message reaches it once, in offset order.
    """

    # True when attach() reads the backlog again itself, in the step that places the join (Redis), so it needs of
    # `backlog` only its first message, which says where the replay starts: the hub then reads just that one.
    replays_backlog: bool

    def admit(self, count: int = 1) -> None:
        """Raise Unavailable if `count` more messages cannot be taken now; called before they are stored."""

    def admit_join(self) -> None:
        """Raise Unavailable if a subscription started now would not be placed in time; called before it starts."""

    def deliver(self, message: Message, *, exclude: str | None = None) -> threading.Event | None:
        """Send a stored message live (to every subscriber but connection `exclude`); the event is set once it was
        handed to every subscriber's connection. None: there is nothing to wait for."""

    def announce(self, change: PresenceChange) -> None:
        """Tell the channel's presence listeners that a user joined or left."""

    def attach(self, sid: str, channel: str, backlog: Sequence[Message], *,
               presence: PresenceView | None = None) -> threading.Event:
        """Send `backlog` to `sid`, then make it a live recipient (of the channel's presence events too, as `presence`
        shows them); the event is set once that happened (or failed)."""

    def detach(self, sid: str, channel: str) -> None:
        """Stop sending `channel` to `sid`."""

    def stats(self) -> dict[str, int]:
        """`pending` (in flight now) and `failed` (items that could not be carried out, since start)."""


@dataclass(frozen=True)
class _Send:
    message: Message
    exclude: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class _Attach:
    sid: str
    channel: str
    backlog: Sequence[Message]
    presence: PresenceView | None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class _Detach:
    sid: str
    channel: str


_STOP = object()


class FanoutQueue:
    """The Fanout of one process: a queue fed by the hub (never blocking) and drained by run() in one worker.

    The bound is checked by admit() before a message is stored, not when it is queued, so a message that
    was stored is always queued too: refusing it afterwards would leave it in history but never sent live.
    """

    replays_backlog = False  # attach() sends the backlog it is given

    def __init__(self, delivery: Delivery, *, max_pending: int = 10_000, start: StartTask | None = None) -> None:
        """`start` runs the worker when the first item is queued (lazy, so that apps built only for a CLI command or a
        unit test never start a thread they do not use); None: the caller runs run() itself."""
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        # Guards the counters below (updated by the worker and by publishers) and the one-time handover of _start.
        self._stats_lock = threading.Lock()
        self._handled = 0
        self._failed = 0
        self._delivery = delivery
        self._start = start
        # None: not started; True: running; False: returned (stop() or a crash).
        self._running: bool | None = None

    @property
    def running(self) -> bool | None:
        """None before the worker started, then True while it runs and False once it has returned."""
        return self._running

    def _put(self, item: object) -> None:
        if self._running is None and self._start is not None:
            with self._stats_lock:
                start, self._start = self._start, None  # whoever takes it starts the worker, once
            if start is not None:
                self._running = True
                start("fan-out worker", self.run, self.stop)
        self._queue.put(item)

    def readiness(self, nearly_full: float) -> str | None:
        """Readiness check: why this process should get no new publishers (worker gone, queue nearly full)."""
        if self._running is False:
            return "fan-out worker stopped"
        if self.pending() >= nearly_full * self.max_pending:
            return f"fan-out queue {self.pending()}/{self.max_pending}"
        return None

    def pending(self) -> int:
        return self._queue.qsize()

    def admit(self, count: int = 1) -> None:
        """Raise Unavailable if `count` more messages would take the queue past its bound."""
        if self._queue.qsize() + count > self.max_pending:
            raise Unavailable("fan-out queue is full, retry shortly")

    def admit_join(self) -> None:
        """Never refuses: a join waits in the worker's queue behind at most max_pending messages."""

    def deliver(self, message: Message, *, exclude: str | None = None) -> threading.Event | None:
        """Queue `message` for its channel (but not connection `exclude`); the returned event is set once it has
        been handed to the delivery (None once the worker has stopped: nothing will set it)."""
        job = _Send(message, exclude)
        self._put(job)
        return None if self._running is False else job.done

    def announce(self, change: PresenceChange) -> None:
        self._put(change)

    def attach(self, sid: str, channel: str, backlog: Sequence[Message], *,
               presence: PresenceView | None = None) -> threading.Event:
        """Queue: send `backlog` to `sid`, then add it to the channel; the returned event is set once done."""
        job = _Attach(sid, channel, tuple(backlog), presence)
        self._put(job)
        return job.done

    def detach(self, sid: str, channel: str) -> None:
        self._put(_Detach(sid, channel))

    def stop(self) -> None:
        """Ask run() to return once it has handled everything queued before this call."""
        self._queue.put(_STOP)

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            counts = {"handled": self._handled, "failed": self._failed}
        return {"pending": self.pending(), **counts}

    def _handle(self, item: object, delivery: Delivery) -> None:
        if isinstance(item, _Send):
            try:
                delivery.send(item.message, exclude=item.exclude)
            finally:
                item.done.set()
        elif isinstance(item, _Attach):
            try:
                for message in item.backlog:
                    delivery.send(message, item.sid)
                delivery.add(item.sid, item.channel, item.presence)
            finally:
                # Set even on failure so the subscriber's handler stops waiting and can answer.
                item.done.set()
        elif isinstance(item, _Detach):
            delivery.remove(item.sid, item.channel)
        elif isinstance(item, PresenceChange):
            delivery.send_presence(item)

    def run(self) -> None:
        """Worker loop: handle queued items in order until stop() is called."""
        log.info("fan-out worker started")
        self._running = True
        try:
            self._loop(self._delivery)
        finally:
            self._running = False
            log.info("fan-out worker stopped")

    def _loop(self, delivery: Delivery) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                self._handle(item, delivery)
            # The worker is the only path to subscribers: one failing send must not stop every later one.
            except Exception:
                log.exception("fan-out failed for %s", type(item).__name__)
                with self._stats_lock:
                    self._failed += 1
            else:
                with self._stats_lock:
                    self._handled += 1
