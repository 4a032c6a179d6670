"""Webhook pieces on their own: settings validation, the memory queue's batching and bound, signing."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from blueprints.webhooks.queue import MemoryWebhookQueue
from config import ConfigError, load_config
from utils.outbound import display_url, signature, signed_json

BASE = {"SECRET_KEY": "unit-test-secret-key-0123456789"}


def _event(n: int, age: float = 0.0) -> dict:
    return {"id": f"e{n}", "type": "channel.occupied", "ts": time.time() - age, "instance": "i", "channel": "c"}


@pytest.mark.parametrize("env, complaint", [
    ({"WEBHOOK_URLS": "http://127.0.0.1:9/h"}, "WEBHOOK_SECRET"),
    ({"WEBHOOK_URLS": "http://127.0.0.1:9/h", "WEBHOOK_SECRET": "short"}, "WEBHOOK_SECRET"),
    ({"AUTH_HOOK_URL": "http://127.0.0.1:9/a"}, "WEBHOOK_SECRET"),
    ({"WEBHOOK_URLS": "ftp://x/h"}, "WEBHOOK_URLS"),
    ({"WEBHOOK_URLS": "http://user:pw@x/h"}, "WEBHOOK_URLS"),
    ({"WEBHOOK_URLS": "http://x/h,http://x/h"}, "WEBHOOK_URLS"),
    ({"WEBHOOK_EVENTS": "channel.occupied,channel.exploded"}, "WEBHOOK_EVENTS"),
])
def test_bad_webhook_settings_stop_start_up_naming_the_variable(env, complaint):
    with pytest.raises(ConfigError, match=complaint):
        load_config(environ={**BASE, **env})


def test_webhook_settings_defaults():
    config = load_config(environ={**BASE, "WEBHOOK_URLS": "http://a/h, https://b/h", "WEBHOOK_SECRET": "x" * 16})
    assert config["WEBHOOK_URLS"] == ("http://a/h", "https://b/h")
    assert "message.published" in config["WEBHOOK_EVENTS"] and len(config["WEBHOOK_EVENTS"]) == 9
    assert (config["WEBHOOK_BATCH_SIZE"], config["WEBHOOK_BATCH_MS"], config["WEBHOOK_TIMEOUT_MS"]) == (100, 1000, 5000)
    assert (config["WEBHOOK_MAX_AGE_SECONDS"], config["WEBHOOK_QUEUE_SIZE"]) == (3600, 10000)
    assert (config["AUTH_HOOK_TIMEOUT_MS"], config["AUTH_HOOK_CACHE_SECONDS"]) == (2000, 30)


def test_memory_queue_batches_by_size_or_linger_and_keeps_the_head_until_acked():
    queue = MemoryWebhookQueue(["a", "b"], max_events=5)
    assert queue.batch("a", 3, 0.2, 0.05) == []
    queue.put([_event(1)])
    started = time.monotonic()
    assert [p.event["id"] for p in queue.batch("a", 3, 0.2, 1.0)] == ["e1"]  # waited for the linger
    assert 0.15 < time.monotonic() - started < 0.9
    queue.put([_event(2), _event(3), _event(4)])
    head = queue.batch("a", 3, 10.0, 1.0)  # full: no linger
    assert [p.event["id"] for p in head] == ["e1", "e2", "e3"]
    assert [p.event["id"] for p in queue.batch("a", 3, 10.0, 1.0)] == ["e1", "e2", "e3"]  # unacked: same head
    queue.ack("a", head)
    assert queue.stats("a").depth == 1 and queue.stats("b").depth == 4  # each receiver has its own queue
    refused = queue.put([_event(n) for n in range(5, 9)])
    assert [e["id"] for e in refused] == ["e6", "e7", "e8"]  # b was full after e5; a took them all
    assert queue.stats("b").depth == 5


def test_signature_is_hmac_of_timestamp_dot_body():
    body, headers = signed_json("s" * 16, {"events": [{"id": "x", "text": "é"}]})
    expected = hmac.new(b"s" * 16, headers["X-Signalboard-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Signalboard-Signature"] == f"sha256={expected.hexdigest()}"
    assert signature("k", "1", b"{}") != signature("k", "2", b"{}")
    assert display_url("https://user:pw@example.com:8443/hooks/in?token=abc") == "https://example.com:8443/hooks/in"


def test_the_app_routes_hub_events_to_the_outbox_and_reports_each_receiver():
    from app import create_app
    from tests.conftest import UNIT_CONFIG

    app = create_app({**UNIT_CONFIG, "WEBHOOK_URLS": ("http://127.0.0.1:9/in?key=secret",),
                      "WEBHOOK_SECRET": "w" * 16})
    webhooks = app.extensions["webhooks"]
    hub = app.extensions["hub"].hub
    assert hub.events is webhooks.outbox and not webhooks.started
    assert webhooks.status() == [{"url": "http://127.0.0.1:9/in", "depth": 0, "oldest_age": 0.0, "delivered": 0,
                                  "last_error": None}]
    assert app.extensions["dashboard"]["sampler"].webhook_status() == webhooks.status()
    assert create_app(UNIT_CONFIG).extensions.get("webhooks") is None
