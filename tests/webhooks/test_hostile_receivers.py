"""Receivers that redirect, answer a gigabyte, never end their body or dribble their headers: the server keeps
serving at its usual pace, its memory stays put, nothing is followed, and once the receiver behaves every event
arrives."""

from __future__ import annotations

import time

import psutil
import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.webhooks.support import of_type, webhook_env

pytestmark = pytest.mark.integration


def _metric(server, prefix: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_hostile_receivers_change_nothing_else(server_factory, receiver):
    server = server_factory(**webhook_env(receiver, WEBHOOK_TIMEOUT_MS=1000, WEBHOOK_BATCH_MS=50))
    worker = psutil.Process(server.worker_pid())
    room = unique("room")
    client = HubClient(server.url).connect({"token": Api(server).token("fay", [room], publish=[room])})
    assert client.call("subscribe", {"channel": room})["ok"]
    published = 0

    def publish(count: int) -> float:
        """Publish `count` messages; the slowest round trip in seconds."""
        nonlocal published
        slowest = 0.0
        for _ in range(count):
            started = time.monotonic()
            assert client.call("publish", {"channel": room, "event": "n", "data": published})["ok"]
            slowest = max(slowest, time.monotonic() - started)
            published += 1
        return slowest

    publish(5)
    receiver.wait_events(lambda es: len(of_type(es, "message.published")) == 5, what="the first five")
    rss_before = worker.memory_info().rss
    for mode, failure in (("redirect", "status"), ("slow_headers", "timeout"), ("huge", None), ("endless", None)):
        receiver.control(mode=mode)
        posts_before = len(receiver.entries())
        failures_before = _metric(server, f'signalboard_webhook_failures_total{{reason="{failure}"')
        slowest = 0.0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and len(receiver.entries()) < posts_before + 2:
            slowest = max(slowest, publish(2))
            time.sleep(0.2)
        assert len(receiver.entries()) >= posts_before + 2, f"{mode}: the receiver was not retried"
        assert slowest < 0.5, f"{mode}: a publish took {slowest:.2f}s"
        if failure:
            assert _metric(server, f'signalboard_webhook_failures_total{{reason="{failure}"') > failures_before
        assert server.readyz()["status"] == "ready"
    rss_after = worker.memory_info().rss
    assert rss_after - rss_before < 50 * 2**20, f"memory grew by {(rss_after - rss_before) / 2**20:.0f} MiB"
    receiver.control(mode="ok")
    events = receiver.wait_events(lambda es: {e["offset"] for e in of_type(es, "message.published")} ==
                                  set(range(1, published + 1)), what="every message after the hostility")
    first_seen: list[int] = []
    for event in of_type(events, "message.published"):
        if event["offset"] not in first_seen:
            first_seen.append(event["offset"])
    assert first_seen == list(range(1, published + 1))
    assert not [e for e in receiver.entries("/elsewhere")]  # the redirect was never followed
    assert not server.bad_log_lines()
    client.disconnect()
