"""One deliverer per receiver: takes the head batch of its queue, signs and POSTs it, and retries it with
exponential backoff and jitter until it is accepted or its events pass WEBHOOK_MAX_AGE_SECONDS."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from blueprints.webhooks.queue import Pending, QueueStats, WebhookQueue
from hub.redis_client import OUTAGE_ERRORS
from utils.metrics import WEBHOOK_EVENTS, WEBHOOK_FAILURES, WEBHOOK_LATENCY
from utils.outbound import INSTANCE_HEADER, PostFailed, display_url, post, signed_json

log = logging.getLogger(__name__)

ANSWER_CAP = 4096  # bytes of a receiver's answer read (for the error text); the rest is never read
RETRY_BASE = 0.25  # seconds before the first retry; doubled per attempt up to the configured cap
STATS_EVERY = 1.0
EXPIRED_LOG_EVERY = 60.0
IDLE_WAIT = 1.0  # longest a deliverer blocks on an empty queue before it looks at stop and its figures


@dataclass(frozen=True)
class DeliverySettings:
    secret: str
    instance: str  # sent as X-Signalboard-Instance (not signed: for the receiver's logs)
    batch_size: int
    linger: float
    timeout: float
    max_age: float
    retry_max: float


class Deliverer:
    """Delivers `target`'s queue to `url`, from its own background thread (run())."""

    def __init__(self, url: str, target: str, queue: WebhookQueue, settings: DeliverySettings) -> None:
        self.url = url
        self.label = display_url(url)
        self.target = target
        self.queue = queue
        self.settings = settings
        self._stop = threading.Event()
        self.stopped = threading.Event()
        # Read by /metrics and the dashboard from other threads; replaced whole, never mutated.
        self.stats = QueueStats(0, 0.0)
        self.last_error: dict[str, Any] | None = None
        self.delivered = 0
        self._expired_unlogged = 0
        self._expired_logged_at = 0.0
        self._stats_at = 0.0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        log.info("webhook deliverer for %s started", self.label)
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    attempt = self._step(attempt)
                except OUTAGE_ERRORS as exc:  # Redis down: the events wait there; try again shortly
                    self._note_error("queue", f"queue unavailable: {exc}")
                    self._stop.wait(RETRY_BASE * 4)
                # The only thread delivering to this receiver: a bug must be loud, not the end of its webhooks.
                except Exception:
                    log.exception("webhook deliverer for %s failed; carrying on", self.label)
                    self._note_error("internal", "internal error (see the server log)")
                    self._stop.wait(RETRY_BASE * 4)
        finally:
            self.stopped.set()
            log.info("webhook deliverer for %s stopped", self.label)

    def _step(self, attempt: int) -> int:
        """One attempt at the head batch; returns the number of failed attempts in a row."""
        self._refresh_stats()
        s = self.settings
        batch = self.queue.batch(self.target, s.batch_size, s.linger, IDLE_WAIT)
        if not batch:
            return 0
        if self._send(batch):
            self.queue.ack(self.target, batch)
            now = time.time()
            for item in batch:
                WEBHOOK_EVENTS.labels(item.event["type"], "delivered").inc()
                WEBHOOK_LATENCY.observe(max(0.0, now - item.ts))
            self.delivered += len(batch)
            return 0
        if self._give_up_expired(batch):
            return attempt  # the younger rest is retried at once
        self._back_off(attempt)
        return attempt + 1

    def _send(self, batch: list[Pending]) -> bool:
        body, headers = signed_json(self.settings.secret, {"events": [item.event for item in batch]})
        headers[INSTANCE_HEADER] = self.settings.instance
        try:
            answer = post(self.url, body, headers, timeout=self.settings.timeout, max_answer_bytes=ANSWER_CAP)
        except PostFailed as exc:
            self._fail(exc.reason, str(exc))
            return False
        if 200 <= answer.status < 300:
            return True
        excerpt = answer.body[:200].decode("utf-8", "replace").replace("\n", " ")
        self._fail("status", f"HTTP {answer.status}: {excerpt}".strip())
        return False

    def _fail(self, reason: str, detail: str) -> None:
        WEBHOOK_FAILURES.labels(self.label, reason).inc()
        self._note_error(reason, detail)
        log.debug("webhook POST to %s failed: %s", self.label, detail)

    def _note_error(self, reason: str, detail: str) -> None:
        self.last_error = {"at": round(time.time(), 3), "reason": reason, "detail": detail[:300]}

    def _give_up_expired(self, batch: list[Pending]) -> bool:
        """Drop the head events older than WEBHOOK_MAX_AGE_SECONDS; logged at most once a minute per receiver."""
        cutoff = time.time() - self.settings.max_age
        expired = []
        for item in batch:
            if item.ts > cutoff:
                break
            expired.append(item)
        if not expired:
            return False
        self.queue.ack(self.target, expired)
        for item in expired:
            WEBHOOK_EVENTS.labels(item.event["type"], "expired").inc()
        self._expired_unlogged += len(expired)
        now = time.monotonic()
        if now - self._expired_logged_at >= EXPIRED_LOG_EVERY:
            log.warning("webhooks: gave up on %d events for %s older than %gs (last error: %s)",
                        self._expired_unlogged, self.label, self.settings.max_age,
                        (self.last_error or {}).get("detail"))
            self._expired_unlogged, self._expired_logged_at = 0, now
        return True

    def _back_off(self, attempt: int) -> None:
        """Sleep base * 2^attempt (capped), half of it jittered, keeping this instance's lease meanwhile."""
        delay = min(self.settings.retry_max, RETRY_BASE * 2 ** min(attempt, 20))
        until = time.monotonic() + delay * random.uniform(0.5, 1.0)
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0 or not self.queue.keep(self.target):
                return
            self._refresh_stats()
            self._stop.wait(min(left, 1.0))

    def _refresh_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_at >= STATS_EVERY:
            self._stats_at = now
            self.stats = self.queue.stats(self.target)
