"""Lifecycle webhooks against a real receiver process: every event type with its fields and a signature verified
here, retries through failures, timeouts and an outage, per-channel order, and hostile receivers."""

from __future__ import annotations

import time

import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.webhooks.support import of_type, webhook_env

pytestmark = pytest.mark.integration

COMMON = {"id", "type", "ts", "instance"}


def _fields(event: dict) -> set[str]:
    return set(event) - COMMON


def _distinct(events: list[dict]) -> int:
    """Messages published, each counted once: a POST that timed out after the receiver took it is sent again."""
    return len({(e["channel"], e["offset"]) for e in of_type(events, "message.published")})


def test_every_event_type_arrives_signed_with_its_fields(server_factory, receiver):
    server = server_factory(**webhook_env(receiver))
    api = Api(server)
    room = unique("room")
    token = api.token("alice", [room], publish=[room])
    first, second = HubClient(server.url).connect({"token": token}), HubClient(server.url).connect({"token": token})
    assert first.call("subscribe", {"channel": room, "presence": True})["ok"]
    assert second.call("subscribe", {"channel": room})["ok"]
    published = first.call("publish", {"channel": room, "event": "note", "data": {"n": 1}})
    assert published["ok"]
    api.publish(room, "server", {"n": 2})  # a trusted publish: no message.published
    assert first.call("unsubscribe", {"channel": room})["ok"]
    first.disconnect()
    time.sleep(0.3)
    second.disconnect()
    events = receiver.wait_events(lambda es: len(of_type(es, "connection.closed")) == 2, what="both closes")

    ours = [e for e in events if e.get("channel") in (room, None)]
    types = [e["type"] for e in ours]
    assert types.count("connection.opened") == 2 and types.count("connection.closed") == 2
    assert types.count("channel.occupied") == 1 and types.count("channel.vacated") == 1
    assert types.count("presence.joined") == 1 and types.count("presence.left") == 1  # one user, two connections
    assert types.count("subscription.created") == 2 and types.count("subscription.removed") == 2
    assert types.count("message.published") == 1

    sids = {e["sid"] for e in of_type(ours, "connection.opened")}
    assert len(sids) == 2
    for event in ours:
        assert len(event["id"]) >= 16 and event["instance"] and abs(event["ts"] - time.time()) < 60
    opened = of_type(ours, "connection.opened")[0]
    assert _fields(opened) == {"sid", "sub", "transport"} and opened["sub"] == "alice"
    assert opened["transport"] == "websocket"
    closed = of_type(ours, "connection.closed")
    assert all(_fields(e) == {"sid", "sub", "reason", "duration_s"} for e in closed)
    assert {e["sid"] for e in closed} == sids and all(e["duration_s"] > 0 for e in closed)
    assert {e["reason"] for e in closed} <= {"client_disconnect", "transport_close"}  # as the client closes
    created = of_type(ours, "subscription.created")
    assert all(_fields(e) == {"sid", "sub", "channel", "reason"} and e["channel"] == room for e in created)
    removed = of_type(ours, "subscription.removed")
    assert sorted(e["reason"] for e in removed) == ["disconnect", "unsubscribe"]
    assert of_type(ours, "channel.occupied")[0] == {**of_type(ours, "channel.occupied")[0], "channel": room}
    assert _fields(of_type(ours, "channel.occupied")[0]) == {"channel"}
    assert _fields(of_type(ours, "presence.joined")[0]) == {"channel", "sub"}
    message = of_type(ours, "message.published")[0]
    assert message == {**message, "channel": room, "sub": "alice", "offset": published["offset"],
                       "id": published["id"]}

    # The order a listener relies on, per channel.
    order = [e["type"] for e in ours if e.get("channel") == room]
    assert order.index("channel.occupied") < order.index("subscription.created")
    assert order.index("presence.joined") < order.index("message.published") < order.index("presence.left")
    assert order[-1] == "channel.vacated"
    assert len({e["id"] for e in events}) == len(events)
    assert not server.bad_log_lines()
    server.stop()  # the drain stops the webhook threads: both say so before the worker exits
    log = server.log()
    assert "webhook outbox stopped" in log and f"webhook deliverer for {receiver.hook_url} stopped" in log


def test_webhook_events_selects_types(server_factory, receiver):
    server = server_factory(**webhook_env(receiver, WEBHOOK_EVENTS="channel.occupied,channel.vacated"))
    api = Api(server)
    room = unique("room")
    client = HubClient(server.url).connect({"token": api.token("bob", [room])})
    assert client.call("subscribe", {"channel": room})["ok"]
    client.disconnect()
    events = receiver.wait_events(lambda es: of_type(es, "channel.vacated"), what="vacated")
    assert [e["type"] for e in events] == ["channel.occupied", "channel.vacated"]


def test_failures_timeouts_and_an_outage_lose_nothing_and_keep_channel_order(server_factory, receiver):
    server = server_factory(**webhook_env(receiver, WEBHOOK_BATCH_SIZE=5, WEBHOOK_TIMEOUT_MS=500))
    api = Api(server)
    rooms = [unique("room") for _ in range(3)]
    token = api.token("carol", rooms, publish=rooms)
    client = HubClient(server.url).connect({"token": token})
    for room in rooms:
        assert client.call("subscribe", {"channel": room})["ok"]

    def publish_round(tag: str, count: int = 4) -> None:
        for i in range(count):
            for room in rooms:
                assert client.call("publish", {"channel": room, "event": "n", "data": {"tag": tag, "i": i}})["ok"]

    receiver.control(fail_first=3)  # the first three POSTs answer 500
    publish_round("failing")
    receiver.wait_events(lambda es: _distinct(es) >= 12, what="through 500s")
    receiver.control(delay=1.0)  # slower than WEBHOOK_TIMEOUT_MS: every attempt times out
    publish_round("slow")
    time.sleep(2.5)
    receiver.control(delay=0)
    receiver.wait_events(lambda es: _distinct(es) >= 24, what="after the timeouts")
    receiver.stop()  # down for 30 s
    publish_round("down")
    time.sleep(30)
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert server.readyz()["status"] == "ready"  # webhooks degrade; they do not take the server out of service
    assert 'signalboard_webhook_failures_total{reason="refused"' in metrics
    depth = [line for line in metrics.splitlines() if line.startswith("signalboard_webhook_queue_depth{")]
    assert depth and float(depth[0].split()[-1]) >= 12, depth
    receiver.start()
    events = receiver.wait_events(lambda es: _distinct(es) >= 36, timeout=30, what="after the outage")
    published = of_type(events, "message.published")
    # Every one of them (ids unique apart from retries of a batch whose answer was lost to the timeout), in order.
    assert {e["offset"] for e in published if e["channel"] == rooms[0]} == set(range(1, 13))
    for room in rooms:
        first_seen: list[int] = []
        for event in published:
            if event["channel"] == room and event["offset"] not in first_seen:
                first_seen.append(event["offset"])
        assert first_seen == list(range(1, 13)), (room, first_seen)
    delivered = [line for line in requests.get(server.url + "/metrics", timeout=5).text.splitlines()
                 if line.startswith('signalboard_webhook_events_total{outcome="delivered",type="message.published"}')]
    assert delivered and float(delivered[0].split()[-1]) >= 36


def test_events_past_max_age_are_dropped_counted_and_logged_once(server_factory, receiver):
    server = server_factory(**webhook_env(receiver, WEBHOOK_MAX_AGE_SECONDS=2, WEBHOOK_RETRY_MAX_MS=300))
    room = unique("room")
    client = HubClient(server.url).connect({"token": Api(server).token("kim", [room], publish=[room])})
    assert client.call("subscribe", {"channel": room})["ok"]
    # The subscribe's last event; a batch boundary may still fall before it, so only the publishes are counted.
    receiver.wait_events(lambda es: of_type(es, "presence.joined"), what="the subscription")
    receiver.stop()
    for i in range(5):
        assert client.call("publish", {"channel": room, "event": "old", "data": i})["ok"]
    time.sleep(3)  # past WEBHOOK_MAX_AGE_SECONDS, retried all along

    def expired() -> float:
        text = requests.get(server.url + "/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith('signalboard_webhook_events_total{outcome="expired",type="message.published"}'))

    server.wait_until(lambda: expired() == 5, what="the five counted as expired")
    assert server.log().count("webhooks: gave up on") == 1  # however many rounds it took: one line a minute
    receiver.start()
    assert client.call("publish", {"channel": room, "event": "new", "data": 5})["ok"]
    events = receiver.wait_events(lambda es: of_type(es, "message.published"), what="the new message")
    assert [e["offset"] for e in of_type(events, "message.published")] == [6]  # the expired five never came
    client.disconnect()
