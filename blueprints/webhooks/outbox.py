"""The hand-off between the threads that raise lifecycle events and the webhook queue: raising appends to a bounded
buffer and returns; one pump thread moves the buffer into the queue (which may be Redis), in order."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection
from typing import Any

import redis

from blueprints.webhooks.queue import WebhookQueue
from hub.errors import Unavailable
from hub.redis_client import OUTAGE_ERRORS
from utils.background import StartTask
from utils.metrics import WEBHOOK_EVENTS

log = logging.getLogger(__name__)

PUMP_BATCH = 500
RETRY_PAUSE = 0.5  # after a failed put (Redis down, or replicas not confirming): the buffer keeps the events, in order


class WebhookOutbox:
    """An EventSink (hub.events) for the selected types; bounded at `max_events` waiting for the pump."""

    def __init__(self, queue: WebhookQueue, *, types: Collection[str], instance: str, max_events: int,
                 start: StartTask) -> None:
        self.queue = queue
        self.types = frozenset(types)
        self.instance = instance
        self.max_events = max_events
        self._start: StartTask | None = start  # utils.drain.BackgroundTasks.start: SIGTERM stops the pump
        # Guards _buffer, _start and _stopping; notified when events arrive or on stop.
        self._cond = threading.Condition()
        self._buffer: deque[dict[str, Any]] = deque()
        self._stopping = False
        self.stopped = threading.Event()

    def wants(self, event_type: str) -> bool:
        return event_type in self.types

    def raise_event(self, event_type: str, **fields: Any) -> None:
        if event_type not in self.types:
            return
        event = {"id": uuid.uuid4().hex, "type": event_type, "ts": round(time.time(), 6), "instance": self.instance,
                 **fields}
        with self._cond:
            if self._start is not None:  # lazily, so apps built for a CLI command or a unit test start no thread
                start, self._start = self._start, None
                start("webhook outbox", self.run, self.stop)
            if len(self._buffer) >= self.max_events:
                full = True
            else:
                full = False
                self._buffer.append(event)
                self._cond.notify()
        WEBHOOK_EVENTS.labels(event_type, "overflow" if full else "queued").inc()

    @property
    def started(self) -> bool:
        return self._start is None

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer)

    def _take(self) -> list[dict[str, Any]]:
        with self._cond:
            while not self._buffer and not self._stopping:
                self._cond.wait(1.0)
            return [self._buffer[i] for i in range(min(PUMP_BATCH, len(self._buffer)))]

    def _drop_taken(self, count: int) -> None:
        with self._cond:
            for _ in range(count):
                self._buffer.popleft()

    def run(self) -> None:
        """The pump: until stop(), move buffered events into the queue; a failed put is retried, not lost."""
        log.info("webhook outbox started")
        failing = False
        try:
            while True:
                events = self._take()
                if not events:
                    break  # stopping, and nothing left
                try:
                    refused = self.queue.put(events)
                # Unavailable: stored but not confirmed by enough replicas (redis_queue.py), so put again.
                except (*OUTAGE_ERRORS, redis.ResponseError, Unavailable) as exc:
                    if not failing:
                        log.warning("webhook events cannot be queued (will retry, %d buffered): %s",
                                    self.pending(), exc)
                    failing = True
                    if self._stopping:
                        break
                    time.sleep(RETRY_PAUSE)
                    continue
                if failing:
                    log.info("webhook events are queued again")
                failing = False
                self._drop_taken(len(events))
                for event in refused:
                    WEBHOOK_EVENTS.labels(event["type"], "overflow").inc()
        finally:
            self.stopped.set()
            log.info("webhook outbox stopped")

    def stop(self) -> None:
        """Let the pump queue what is buffered (one attempt) and return."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
