"""Fan-out when Redis carries messages: nothing to queue locally, joins placed exactly in the live order.

With REDIS_URL, RedisHistoryStore.append already broadcasts each message through python-socketio's Redis
channel, and every instance's queue listener emits it to its own members of the channel room. What is left
for this class is the one thing that must happen at a precise point of that shared order: a subscription.
attach() has Redis publish, in one atomic step, the backlog the client is owed (to the client's own room) and
then a marker; when this instance's listener reaches the marker, every message before it went out as backlog
or before the join, and every later one will reach the client live. So each message arrives exactly once and
in offset order, even while other instances publish to the same channel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.errors import Unavailable
from hub.fanout import Delivery
from hub.history import Message
from hub.presence import PresenceChange, PresenceView
from hub.redis_history import RedisHistoryStore

log = logging.getLogger(__name__)

# A join whose marker has not come back after this long is forgotten (Redis dropped it or the listener was
# down); the subscriber's own wait gives up long before.
_STALE_JOIN_SECONDS = 60.0
# How long a join waits for the listener to be subscribed (it starts with the first client, or reconnects).
_LISTENER_WAIT_SECONDS = 5.0
# A join still waiting for its marker after this long means the listener is that far behind (a reconnect storm): a
# join started now would likely outlast its subscriber's wait (blueprints.realtime.namespace.ATTACH_TIMEOUT, 10 s),
# and the backlog replayed for it would be work nobody waits for. New joins are refused at once until it catches up.
JOIN_DELAY_LIMIT = 4.0


class JoinMarkers(Protocol):
    """Run a function on this instance's queue listener when a marker published through Redis reaches it."""

    def register(self, channel: str, fn: Callable[[], None]) -> str:
        """Remember `fn`; return the marker packet up to its argument list, for RedisHistoryStore.replay()."""

    def forget(self, marker: str) -> None:
        """Drop a marker that will never arrive or is no longer awaited, and the backlog published ahead of it."""

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until markers can come back (the listener is subscribed); False on timeout."""


@dataclass
class _Join:
    sid: str
    channel: str
    presence: PresenceView | None
    done: threading.Event = field(default_factory=threading.Event)
    since: float = field(default_factory=time.monotonic)
    marker: str = ""


class RedisFanout:
    """The hub's Fanout (hub.fanout.Fanout) for a Redis deployment (see the module docstring).

    Live messages never pass through here: the history store broadcast each one when it gave it its offset, and
    python-socketio's message-queue listener of every instance emits it to that instance's subscribers.
    """

    replays_backlog = True  # history.replay() publishes the backlog from its first offset in the join's atomic step

    def __init__(self, history: RedisHistoryStore, markers: JoinMarkers, delivery: Delivery, *,
                 on_use: Callable[[], Any] = lambda: None):
        self.history = history
        self.markers = markers
        self.on_use = on_use  # called before each join (the health monitor starts on first use)
        self._delivery = delivery
        # Guards _joins and _failed: the handler thread adds, the listener thread completes, unsubscribe cancels.
        self._lock = threading.Lock()
        self._joins: dict[tuple[str, str], _Join] = {}
        self._failed = 0
        self._delayed = 0

    def admit(self, count: int = 1) -> None:
        """Never refuses: nothing is queued in this process, and Redis itself refuses (503) a message it cannot
        take when the history store appends it."""

    def admit_join(self) -> None:
        """Refuse a join while the oldest one waiting for its marker has waited JOIN_DELAY_LIMIT (listener behind)."""
        with self._lock:
            oldest = next(iter(self._joins.values()), None)  # dicts keep insertion order: the first is the oldest
            if oldest is None or time.monotonic() - oldest.since < JOIN_DELAY_LIMIT:
                return
            self._delayed += 1
        raise Unavailable("subscriptions are waiting for the message queue, retry shortly", retry_after=2.0)

    def deliver(self, message: Message, *, exclude: str | None = None) -> None:
        """Nothing to do or to wait for: RedisHistoryStore.append_all broadcast the message (skipping `exclude` on
        every instance) in the same atomic step that gave it its offset."""

    def announce(self, change: PresenceChange) -> None:
        self._delivery.send_presence(change)

    def _after(self, channel: str, backlog: Sequence[Message]) -> int:
        if backlog:
            return backlog[0].offset - 1
        point = self.history.take_read_point(channel)
        return point if point is not None else self.history.latest(channel)

    def attach(self, sid: str, channel: str, backlog: Sequence[Message], *,
               presence: PresenceView | None = None) -> threading.Event:
        """Publish `sid`'s backlog and its join marker through Redis; the event is set once the join happened.

        The backlog is re-read in the atomic step (from the first offset the caller found missing, or from
        where its last read ended), so messages published since that read are included, not lost.
        """
        self.on_use()
        job = _Join(sid, channel, presence)
        self._purge_stale()
        if not self.markers.wait_subscribed(_LISTENER_WAIT_SECONDS):
            # The event stays unset: the subscriber's wait times out and its handler undoes the subscription.
            log.warning("join of %s to %s: the message-queue listener is not subscribed", sid, channel)
            with self._lock:
                self._failed += 1
            return job.done
        with self._lock:
            self._joins[(sid, channel)] = job
        job.marker = self.markers.register(channel, lambda: self._joined(job))
        try:
            replay = self.history.replay(channel, self._after(channel, backlog), sid, job.marker)
        except Unavailable:
            # The event stays unset: the subscriber's wait times out and its handler undoes the subscription.
            self._cancel(job)
            with self._lock:
                self._failed += 1
        else:
            if not replay.complete:
                log.info("join of %s to %s: history no longer holds everything after the read", sid, channel)
        return job.done

    def _joined(self, job: _Join) -> None:
        """Runs on the queue listener, at the marker's place in the live order."""
        with self._lock:
            current = self._joins.get((job.sid, job.channel))
            if current is job:
                del self._joins[(job.sid, job.channel)]
        try:
            if current is job:
                self._delivery.add(job.sid, job.channel, job.presence)
        finally:
            job.done.set()

    def _cancel(self, job: _Join) -> None:
        with self._lock:
            if self._joins.get((job.sid, job.channel)) is job:
                del self._joins[(job.sid, job.channel)]
        self.markers.forget(job.marker)

    def _purge_stale(self) -> None:
        horizon = time.monotonic() - _STALE_JOIN_SECONDS
        with self._lock:
            stale = [job for job in self._joins.values() if job.since < horizon]
        for job in stale:
            self._cancel(job)

    def detach(self, sid: str, channel: str) -> None:
        with self._lock:
            job = self._joins.pop((sid, channel), None)  # a join still on its way must not re-add it
        if job is not None and job.marker:
            self.markers.forget(job.marker)  # nor send its backlog: a subscribe again would replay it too
        self._delivery.remove(sid, channel)

    def stats(self) -> dict[str, int]:
        """`pending`: joins waiting for their marker; `failed`: joins that could not be placed (listener not
        subscribed, Redis unreachable), `delayed`: joins refused by admit_join, both since start."""
        with self._lock:
            return {"pending": len(self._joins), "failed": self._failed, "delayed": self._delayed}
