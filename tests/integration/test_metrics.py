"""GET /metrics on the real server while real Socket.IO clients connect, send, receive and leave."""

from __future__ import annotations

import threading

import pytest
import requests
import socketio
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

TOKEN = "metrics-scrape-token-0123"


class Scrape(dict):
    """Samples by (name, sorted labels)."""

    def get_value(self, name: str, **labels: str) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(server) -> Scrape:
    response = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert response.status_code == 200
    samples = Scrape()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.get_value(name, **labels) - before.get_value(name, **labels)


@pytest.fixture
def metrics_server(server_factory):
    return server_factory(ALLOW_ANONYMOUS="1", METRICS_TOKEN=TOKEN)


def test_metrics_needs_the_token(metrics_server):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        response = requests.get(metrics_server.url + "/metrics", headers=headers, timeout=5)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    samples = scrape(metrics_server)
    assert samples.get_value("signalboard_draining") == 0
    assert samples.get_value("process_open_fds") > 0  # process metrics come from the worker itself
    assert TOKEN not in metrics_server.log()


def test_sessions_events_messages_and_requests_are_counted(metrics_server):
    server = metrics_server
    before = scrape(server)
    received = threading.Event()
    websocket = socketio.Client(reconnection=False)
    websocket.on("headline", lambda *args: received.set())
    websocket.connect(server.url, transports=["websocket"], wait_timeout=5)
    polling = socketio.Client(reconnection=False)
    polling.connect(server.url, transports=["polling"], wait_timeout=5)
    try:
        assert websocket.call("subscribe", {"channel": "public:news"}, timeout=5)["ok"] is True
        assert polling.call("subscribe", {"channel": "public:news"}, timeout=5)["ok"] is True
        published = requests.post(server.url + "/api/v1/publish", timeout=5,
                                  headers={"Authorization": "Bearer test-api-key-1-0123456789"},
                                  json={"channel": "public:news", "event": "headline", "data": {"n": 1}})
        assert published.status_code == 200
        assert received.wait(5)
        during = scrape(server)
    finally:
        websocket.disconnect()
        polling.disconnect()
    server.wait_until(lambda: sum(server.readyz()["clients"].values()) == 0, what="clients gone")
    after = scrape(server)

    assert during.get_value("signalboard_connected_clients", transport="websocket") == 1
    assert during.get_value("signalboard_connected_clients", transport="polling") == 1
    # Sessions that hold a thread: with the shared transport a websocket holds none.
    holding = 2 if server.websocket_transport == "threaded" else 1
    assert during.get_value("signalboard_thread_budget", figure="sessions") == holding
    assert delta(before, during, "signalboard_socketio_connects_total", transport="websocket") == 1
    assert delta(before, during, "signalboard_socketio_connects_total", transport="polling") == 1
    assert delta(before, during, "signalboard_socketio_events_received_total", event="subscribe") == 2
    assert delta(before, during, "signalboard_socketio_events_sent_total", event="headline") == 1
    assert delta(before, during, "signalboard_messages_published_total", channel_namespace="public") == 1
    assert delta(before, during, "signalboard_messages_delivered_total", channel_namespace="public") == 2
    assert delta(before, during, "signalboard_fanout_latency_seconds_count") == 1
    assert delta(before, during, "signalboard_http_requests_total", endpoint="api.publish", method="POST",
                 status="200") == 1

    assert after.get_value("signalboard_connected_clients", transport="websocket") == 0
    reasons = {reason: delta(before, after, "signalboard_socketio_disconnects_total", reason=reason)
               for reason in ("client_disconnect", "transport_close", "server_disconnect", "ping_timeout")}
    # python-engineio's websocket client closes the socket right after its close packet, so the server may see either.
    assert sum(reasons.values()) == 2 and reasons["client_disconnect"] >= 1, reasons
    assert server.bad_log_lines() == []
