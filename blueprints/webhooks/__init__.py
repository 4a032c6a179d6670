"""Lifecycle webhooks: with WEBHOOK_URLS, the hub's events are batched, signed and POSTed to each receiver by
background deliverers, with retries, never on a request thread (docs/webhooks.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask

from blueprints.webhooks.delivery import Deliverer, DeliverySettings
from blueprints.webhooks.outbox import WebhookOutbox
from blueprints.webhooks.queue import MemoryWebhookQueue, QueueStats, WebhookQueue
from blueprints.webhooks.redis_queue import RedisWebhookQueue
from hub.redis_client import RedisKeys, connect
from hub.redis_history import Replicas
from utils.background import StartTask
from utils.metrics import WEBHOOK_QUEUES
from utils.outbound import display_url

EXTENSION_KEY = "webhooks"


def target_name(url: str) -> str:
    """A receiver's name in the queue (a Redis consumer group): stable per URL, no secret in it."""
    return "w" + hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass
class Webhooks:
    outbox: WebhookOutbox
    deliverers: list[Deliverer]

    start_task: StartTask  # utils.drain.BackgroundTasks.start: SIGTERM stops each deliverer
    started: bool = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            for deliverer in self.deliverers:
                self.start_task(f"webhook deliverer: {deliverer.label}", deliverer.run, deliverer.stop)

    def queue_stats(self) -> dict[str, QueueStats]:
        return {deliverer.label: deliverer.stats for deliverer in self.deliverers}

    def status(self) -> list[dict[str, Any]]:
        """Per receiver, for the dashboard: what waits, how old it is, what was delivered, the last error."""
        return [{"url": d.label, "depth": d.stats.depth, "oldest_age": round(d.stats.oldest_age, 1),
                 "delivered": d.delivered, "last_error": d.last_error} for d in self.deliverers]


def build_queue(config: Any, targets: Sequence[str]) -> WebhookQueue:
    """The memory queue, or with REDIS_URL the cluster's stream: chosen once, here."""
    if not config["REDIS_URL"]:
        return MemoryWebhookQueue(targets, config["WEBHOOK_QUEUE_SIZE"])
    return RedisWebhookQueue(connect(config["REDIS_URL"]), RedisKeys(config["REDIS_KEY_PREFIX"]), targets,
                             owner=config["INSTANCE_ID"], lease_seconds=2 * config["WEBHOOK_TIMEOUT_MS"] / 1000 + 2,
                             max_age_seconds=config["WEBHOOK_MAX_AGE_SECONDS"], replicas=Replicas.from_config(config))


def init_webhooks(app: Flask) -> Webhooks | None:
    """With WEBHOOK_URLS: the outbox for the hub's lifecycle events (the hub is built with it) and one deliverer per
    receiver."""
    config = app.config
    urls = config["WEBHOOK_URLS"]
    if not urls:
        return None
    start_task = app.extensions["background_tasks"].start
    targets = [target_name(url) for url in urls]
    queue = build_queue(config, targets)
    settings = DeliverySettings(
        secret=config["WEBHOOK_SECRET"], instance=config["INSTANCE_ID"], batch_size=config["WEBHOOK_BATCH_SIZE"],
        linger=config["WEBHOOK_BATCH_MS"] / 1000, timeout=config["WEBHOOK_TIMEOUT_MS"] / 1000,
        max_age=config["WEBHOOK_MAX_AGE_SECONDS"], retry_max=config["WEBHOOK_RETRY_MAX_MS"] / 1000)
    deliverers = [Deliverer(url, target, queue, settings) for url, target in zip(urls, targets, strict=True)]
    webhooks = Webhooks(WebhookOutbox(queue, types=config["WEBHOOK_EVENTS"], instance=config["INSTANCE_ID"],
                                      max_events=config["WEBHOOK_QUEUE_SIZE"], start=start_task),
                        deliverers, start_task)
    # Deliverers start with the first request: with Redis, events of a crashed instance wait for any instance.
    app.before_request(webhooks.start)
    app.extensions[EXTENSION_KEY] = webhooks
    WEBHOOK_QUEUES.bind(webhooks.queue_stats)
    names = ", ".join(display_url(url) for url in urls)
    app.logger.info("webhooks to %s (%s queue)", names, "redis" if config["REDIS_URL"] else "memory")
    return webhooks
