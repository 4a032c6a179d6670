"""/metrics in process: exposition, token, HTTP and Socket.IO counters, capped labels, runtime figures."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from blueprints.metrics.instrument import instrument_socketio
from extensions import socketio
from integration import socket_observers
from tests.conftest import UNIT_CONFIG
from utils.metrics import LabelCap, channel_namespace


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_exposition_has_our_families_and_process_metrics(client):
    response = client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = scrape(client)
    clients = samples["signalboard_connected_clients"]
    assert clients == {(("transport", "polling"),): 0, (("transport", "sse"),): 0, (("transport", "websocket"),): 0}
    budget = {dict(labels)["figure"]: v for labels, v in samples["signalboard_thread_budget"].items()}
    assert budget["threads"] == 1200 and budget["capacity"] == 1200 - budget["reserved"]
    assert samples["signalboard_draining"] == {(): 0}
    assert "process_resident_memory_bytes" in samples and "python_info" in samples
    for name in ("signalboard_disconnect_races_total", "signalboard_admission_refusals_total",
                 "signalboard_socketio_connects_total", "signalboard_socketio_disconnects_total",
                 "signalboard_fanout_latency_seconds_bucket", "signalboard_drained_sessions_total"):
        assert name in samples, name
    assert not any(name.endswith("_created") for name in samples)


def test_openmetrics_when_asked(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_draining_shows(app, client):
    app.extensions["readiness"].start_draining()
    assert scrape(client)["signalboard_draining"] == {(): 1}


@pytest.fixture
def token_client():
    return create_app({**UNIT_CONFIG, "METRICS_TOKEN": "metrics-token-0123"}).test_client()


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic metrics-token-0123",
                                           "Bearer metrics-token-01234", "metrics-token-0123"])
def test_token_refusals(token_client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = token_client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "metrics-token-0123" not in response.get_data(as_text=True)


def test_token_accepted(token_client):
    assert "signalboard_connected_clients" in scrape(token_client, Authorization="bearer metrics-token-0123")


def test_http_requests_by_endpoint_method_status(client):
    before = {key: value("signalboard_http_requests_total", endpoint=e, method=m, status=s)
              for key, (e, m, s) in {"livez": ("health.livez", "GET", "200"),
                                     "missing": ("unmatched", "GET", "404"),
                                     "odd": ("unmatched", "other", "405")}.items()}
    client.get("/livez")
    client.get("/livez")
    client.get("/no/such/path/123")
    client.open("/livez", method="PROPFIND")
    assert value("signalboard_http_requests_total", endpoint="health.livez", method="GET", status="200") \
        == before["livez"] + 2
    assert value("signalboard_http_requests_total", endpoint="unmatched", method="GET", status="404") \
        == before["missing"] + 1
    assert value("signalboard_http_requests_total", endpoint="unmatched", method="other", status="405") \
        == before["odd"] + 1


@pytest.mark.parametrize("channel, expected", [
    ("orders.eu", "orders"), ("public:news", "public"), ("chat:room.1", "chat"), ("lobby", "lobby"),
    ("a.b:c", "a"), ("", "none"),
])
def test_channel_namespace(channel, expected):
    assert channel_namespace(channel) == expected


def test_label_cap_keeps_the_first_values_and_folds_the_rest():
    cap = LabelCap(3)
    assert [cap(v) for v in ("a", "b", "a", "c", "d", "e", "b")] == ["a", "b", "a", "c", "other", "other", "b"]


def test_label_cap_holds_under_threads():
    cap = LabelCap(10)
    results: list[str] = []
    lock = threading.Lock()

    def label_many(offset: int) -> None:
        labels = [cap(f"v{offset + i}") for i in range(50)]
        with lock:
            results.extend(labels)

    threads = [threading.Thread(target=label_many, args=(n * 50,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results) - {"other"}) == 10
    assert results.count("other") == 400 - 10


def eio_environ(transport: str) -> dict:
    return {"QUERY_STRING": f"EIO=4&transport={transport}", "REQUEST_METHOD": "GET"}


def test_engineio_connects_and_disconnects_are_counted(app):
    eio = socketio.server.eio
    connects = value("signalboard_socketio_connects_total", transport="websocket")
    timeouts = value("signalboard_socketio_disconnects_total", reason="ping_timeout")
    assert eio._trigger_event("connect", "eio-sid-1", eio_environ("websocket")) is None
    eio._trigger_event("disconnect", "eio-sid-1", eio.reason.PING_TIMEOUT)
    assert value("signalboard_socketio_connects_total", transport="websocket") == connects + 1
    assert value("signalboard_socketio_disconnects_total", reason="ping_timeout") == timeouts + 1


@pytest.mark.parametrize("packet, event", [
    ('2["subscribe",{"channel":"public:x"}]', "subscribe"),
    ('217["publish",{}]', "publish"),
    ('2/dashboard,5["snapshot"]', "snapshot"),
    ('51-["upload",{"_placeholder":true,"num":0}]', "upload"),
    ('2["na\\"me"]', "other"),
    ('2["' + "x" * 65 + '"]', "other"),
])
def test_received_events_are_counted_by_name(app, monkeypatch, packet, event):
    # A live socket that joined every namespace: the malformed-input guard drops messages of closed sockets and
    # binary ones for namespaces not joined.
    monkeypatch.setitem(socketio.server.eio.sockets, "eio-sid-1", SimpleNamespace(closed=False, upgraded=False))
    monkeypatch.setattr(socketio.server.manager, "sid_from_eio_sid", lambda eio_sid, namespace: "sio-sid-1")
    monkeypatch.setattr(socketio.server, "_binary_packet", {})
    before = value("signalboard_socketio_events_received_total", event=event)
    socketio.server.eio._trigger_event("message", "eio-sid-1", packet)
    assert value("signalboard_socketio_events_received_total", event=event) == before + 1


@pytest.mark.parametrize("packet", ["0{}", '3["ack"]', "1", '40{"token":"x"}'])
def test_other_packets_are_not_events(app, packet):
    total = sum(s.value for m in REGISTRY.collect() if m.name == "signalboard_socketio_events_received"
                for s in m.samples if s.name.endswith("_total"))
    socketio.server.eio._trigger_event("message", "eio-sid-unknown", packet)
    after = sum(s.value for m in REGISTRY.collect() if m.name == "signalboard_socketio_events_received"
                for s in m.samples if s.name.endswith("_total"))
    assert after == total


def test_emits_are_counted_once_even_if_instrumented_twice(app):
    instrument_socketio(socket_observers(app))
    before = value("signalboard_socketio_events_sent_total", event="unit-test-event")
    socketio.emit("unit-test-event", {"n": 1}, to="a-room-nobody-is-in")
    socketio.server.emit(event="unit-test-event", data={"n": 2}, to="a-room-nobody-is-in")
    assert value("signalboard_socketio_events_sent_total", event="unit-test-event") == before + 2


def test_closed_in_production_without_a_token():
    """Production without METRICS_TOKEN: /metrics answers 403 unless METRICS_PUBLIC=1 opens it explicitly."""
    closed = create_app({**UNIT_CONFIG, "METRICS_PUBLIC": False}).test_client()
    response = closed.get("/metrics")
    assert response.status_code == 403 and response.json["error"]["code"] == "metrics_closed"
    assert "signalboard_" not in response.get_data(as_text=True)
    development = create_app({**UNIT_CONFIG, "METRICS_PUBLIC": False, "SIGNALBOARD_ENV": "development"})
    assert development.test_client().get("/metrics").status_code == 200


def test_readyz_shows_figures_only_where_metrics_may_be_read(token_client):
    """Load balancers get status and reasons; the free capacity an attacker would size a flood by is not public."""
    closed = create_app({**UNIT_CONFIG, "METRICS_PUBLIC": False}).test_client()
    assert closed.get("/readyz").json == {"status": "ready", "reasons": {}}
    assert token_client.get("/readyz").json == {"status": "ready", "reasons": {}}
    detailed = token_client.get("/readyz", headers={"Authorization": "Bearer metrics-token-0123"}).json
    assert detailed["budget"]["free"] > 0 and detailed["clients"] == {"websocket": 0, "polling": 0, "sse": 0}


def test_duplicate_publishes_are_counted(client):
    before = value("signalboard_publish_duplicates_total", channel_namespace="dup")
    headers = {"Authorization": f"Bearer {UNIT_CONFIG['API_KEYS'][0]}"}
    body = {"channel": "dup.a", "event": "e", "idempotency_key": "k"}
    for _ in range(3):
        assert client.post("/api/v1/publish", json=body, headers=headers).status_code == 200
    batch = {"messages": [{**body, "channel": "dup.b"}, {**body, "channel": "dup.b"}]}
    assert client.post("/api/v1/publish/batch", json=batch, headers=headers).status_code == 200
    assert value("signalboard_publish_duplicates_total", channel_namespace="dup") == before + 3


def test_fanout_failures_and_refusals_reach_metrics_and_the_dashboard(monkeypatch):
    """A send the worker fails and publishes refused while its queue is full: counted in /metrics and the snapshot."""
    app = create_app({**UNIT_CONFIG, "FANOUT_QUEUE_SIZE": 1, "PUBLISH_WAIT_MS": 0})
    client = app.test_client()
    release, sending = threading.Event(), threading.Event()

    def stuck_then_broken(*args, **kwargs):
        sending.set()
        release.wait(5)
        raise OSError("socket went away")

    monkeypatch.setattr(socketio.server, "emit", stuck_then_broken)
    publish = {"channel": "orders", "event": "created", "data": 1}
    headers = {"Authorization": f"Bearer {UNIT_CONFIG['API_KEYS'][0]}"}
    assert client.post("/api/v1/publish", json=publish, headers=headers).status_code == 200
    assert sending.wait(5)  # the worker holds the first message
    assert client.post("/api/v1/publish", json=publish, headers=headers).status_code == 200  # queued: 1 of 1
    refused = client.post("/api/v1/publish", json=publish, headers=headers)
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "unavailable"
    release.set()
    hub = app.extensions["hub"].hub
    deadline = time.monotonic() + 5
    while hub.fanout.stats()["failed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    samples = scrape(client)
    assert samples["signalboard_fanout_failed_total"] == {(): 2}
    assert samples["signalboard_fanout_pending"] == {(): 0}
    assert samples["signalboard_fanout_joins_delayed_total"] == {(): 0}  # memory mode never delays a join
    assert samples["signalboard_publish_refused_total"] == {(("reason", "fanout_full"),): 1,
                                                            (("reason", "store_unavailable"),): 0}
    assert app.extensions["dashboard"]["sampler"].fanout_figures() == {"pending": 0, "failed": 2, "refused": 1}
    hub.fanout.stop()
