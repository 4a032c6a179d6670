"""A flood of connects with the webhook receiver down (every POST timing out) costs connects and publishes nothing:
measured against a server without webhooks, cycle by cycle in turn so machine noise falls on both alike. The events
wait in the queue meanwhile, and the deliverer's figures say so."""

from __future__ import annotations

import pytest
import requests

from tests.hub.realtime_client import Api
from tests.webhooks.support import SECRET, compare

pytestmark = pytest.mark.integration

CYCLES = 150


def test_a_connect_flood_with_the_receiver_down_does_not_slow_connects_or_publishes(server_factory, receiver):
    receiver.control(delay=30)  # takes each POST and never answers in time
    common = {"WEBHOOK_SECRET": SECRET, "CLIENT_RATE_LIMIT": 0}
    plain = server_factory(**common)
    hooked = server_factory(WEBHOOK_URLS=receiver.hook_url, WEBHOOK_TIMEOUT_MS=1000, WEBHOOK_BATCH_SIZE=20, **common)

    def token_for(server):
        api = Api(server)
        return lambda room: {"token": api.token("flood", [room], publish=[room])}

    figures = compare({"plain": (plain, token_for(plain)), "hooked": (hooked, token_for(hooked))}, CYCLES)
    print(figures)
    for kind in ("connect", "publish"):
        base, hooked_ms = figures["plain"][kind], figures["hooked"][kind]
        assert hooked_ms["p50_ms"] <= 1.5 * base["p50_ms"] + 2, (kind, figures)
        assert hooked_ms["p95_ms"] <= 2 * base["p95_ms"] + 10, (kind, figures)

    def depth() -> float:
        text = requests.get(hooked.url + "/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("signalboard_webhook_queue_depth{"))

    # Each cycle raised five events (opened, created, published, removed, closed): all wait, none was dropped.
    hooked.wait_until(lambda: depth() >= CYCLES * 5, timeout=10, what="the flood's events in the queue")
    metrics = requests.get(hooked.url + "/metrics", timeout=5).text
    assert 'signalboard_webhook_failures_total{reason="timeout"' in metrics
    assert hooked.readyz()["status"] == "ready"
