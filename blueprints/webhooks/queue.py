"""Where webhook events wait for their receivers: one ordered queue per receiver, behind a small Protocol.

The memory queue is bounded and lost on restart; the Redis one (redis_queue.py) survives the instance and is
shared by the cluster. Each receiver's queue is consumed by one deliverer at a time, head first: a batch stays at
the head until it is acknowledged, which is what keeps each channel's events in order across retries.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Pending:
    """One queued event: `key` identifies it in its queue, `event` is what the receiver gets."""

    key: str
    event: dict[str, Any]

    @property
    def ts(self) -> float:
        return float(self.event["ts"])


@dataclass(frozen=True)
class QueueStats:
    depth: int  # events waiting for this receiver (delivered-but-unacknowledged included)
    oldest_age: float  # seconds since the oldest waiting event was raised; 0 when none waits


class WebhookQueue(Protocol):
    def put(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue `events` (in order) for every receiver; returns those refused for lack of room (once per receiver
        that refused them). Raises when they may not be safely queued (Redis down, or not confirmed by its replicas:
        hub.errors.Unavailable); the outbox then puts them again. Called by the outbox's pump, never by a request
        thread."""

    def batch(self, target: str, size: int, linger: float, wait: float) -> list[Pending]:
        """The head of `target`'s queue, at most `size` events, once `size` are there or the oldest has waited
        `linger` seconds; [] if that does not happen within `wait` seconds (or this instance may not deliver)."""

    def ack(self, target: str, batch: Sequence[Pending]) -> None:
        """Remove a delivered (or given-up) head batch from `target`'s queue."""

    def keep(self, target: str) -> bool:
        """Renew this instance's right to deliver to `target` (between retries); False once another has it."""

    def stats(self, target: str) -> QueueStats:
        """Depth and oldest age of `target`'s queue; may do I/O, so only the deliverer calls it."""


class MemoryWebhookQueue:
    """A bounded deque per receiver in this process: full means the newest event is refused (and counted)."""

    def __init__(self, targets: Sequence[str], max_events: int) -> None:
        self.max_events = max_events
        # Guards _queues and _seq; notified when events arrive.
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Pending]] = {target: deque() for target in targets}
        self._seq = 0

    def put(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        refused = []
        with self._cond:
            for event in events:
                self._seq += 1
                item = Pending(str(self._seq), event)
                for queue in self._queues.values():
                    if len(queue) >= self.max_events:
                        refused.append(event)
                    else:
                        queue.append(item)
            self._cond.notify_all()
        return refused

    def batch(self, target: str, size: int, linger: float, wait: float) -> list[Pending]:
        queue = self._queues[target]
        give_up = time.monotonic() + wait
        with self._cond:
            while True:
                now = time.monotonic()
                if queue and (len(queue) >= size or time.time() - queue[0].ts >= linger):
                    return [queue[i] for i in range(min(size, len(queue)))]
                if now >= give_up:
                    return []
                until = give_up - now
                if queue:
                    until = min(until, max(0.0, queue[0].ts + linger - time.time()))
                self._cond.wait(max(until, 0.001))

    def ack(self, target: str, batch: Sequence[Pending]) -> None:
        keys = {item.key for item in batch}
        queue = self._queues[target]
        with self._cond:
            while queue and queue[0].key in keys:
                queue.popleft()

    def keep(self, target: str) -> bool:
        return True

    def stats(self, target: str) -> QueueStats:
        with self._cond:
            queue = self._queues[target]
            oldest = time.time() - queue[0].ts if queue else 0.0
            return QueueStats(len(queue), max(0.0, oldest))
