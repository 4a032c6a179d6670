"""Socket.IO namespace '/' against the real server with real python-socketio clients: auth, delivery, ordering,
recovery with `since`, eviction, presence, client publish, limits and every error ack."""

from __future__ import annotations

import threading
import time

import pytest

from hub.tokens import TokenIssuer
from tests.hub.realtime_client import Ack, Api, Delivery, HubClient, unique
from tests.server import TEST_ENV, ServerProcess, module_server

pytestmark = pytest.mark.integration

SECRET = TEST_ENV["SECRET_KEY"]
HISTORY = 20
MAX_SUBSCRIPTIONS = 3
MAX_PAYLOAD = 512


server = module_server(HISTORY_MAX_MESSAGES=HISTORY, MAX_SUBSCRIPTIONS=MAX_SUBSCRIPTIONS, MAX_PAYLOAD_BYTES=MAX_PAYLOAD,
                       API_RATE_LIMIT=0, CLIENT_RATE_LIMIT=0)


@pytest.fixture(scope="module")
def api(server):
    return Api(server)


@pytest.fixture
def connect(server, api):
    """Connect clients with tokens for the given sub and channels; all are disconnected after the test."""
    clients: list[HubClient] = []

    def open_client(sub: str = "alice", channels: list[str] | None = None, **token_args) -> HubClient:
        client = HubClient(server.url)
        clients.append(client)
        return client.connect({"token": api.token(sub, channels or ["**"], **token_args)})

    yield open_client
    for client in clients:
        client.disconnect()


def error_ack(ack: dict, code: str) -> dict:
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert set(ack["error"]) >= {"code", "message"}
    return ack["error"]


@pytest.mark.parametrize(
    "auth, reason",
    [
        (None, "token_missing"),
        ({}, "token_missing"),
        ({"token": ""}, "token_missing"),
        ({"token": "not-a-jwt"}, "token_invalid"),
        ({"token": 42}, "token_invalid"),
        ({"token": TokenIssuer("some-other-secret-123456").issue("eve", ["**"], 60)}, "token_invalid"),
        ({"token": TokenIssuer(SECRET, clock=lambda: time.time() - 3600).issue("old", ["**"], 60)}, "token_expired"),
    ],
)
def test_connect_refused_with_a_reason(server, auth, reason):
    refusal = HubClient(server.url).try_connect(auth)
    assert refusal["data"]["code"] == "unauthorized" and refusal["data"]["reason"] == reason
    assert refusal["message"]


def test_publish_reaches_subscriber_as_event_with_data_and_meta(connect, api):
    channel = unique("orders")
    client = connect("alice", ["orders.*"])
    ack = client.call("subscribe", {"channel": channel})
    assert ack["ok"] is True and ack["channel"] == channel and ack["offset"] == 0 and ack["recovered"] is False
    published = api.publish(channel, "order.created", {"id": 7, "items": ["a", "b"]})
    client.wait_offsets(channel, 1)
    (delivery,) = client.deliveries(channel)
    assert delivery.event == "order.created" and delivery.data == {"id": 7, "items": ["a", "b"]}
    assert delivery.meta == published  # {"channel", "offset", "id", "ts"}, exactly as the publisher was told


def test_ordering_under_concurrent_publishers(connect, server):
    channel = unique("race")
    client = connect()
    assert client.call("subscribe", {"channel": channel})["ok"]

    def publish() -> None:
        mine = Api(server)
        for n in range(50):
            mine.publish(channel, "e", {"n": n})

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert client.wait_offsets(channel, 200) == list(range(1, 201))


def test_recovery_after_disconnect_is_exact_and_ordered(connect, api, server):
    """Messages published while away arrive exactly once, in order, before the ack and before newer ones."""
    channel = unique("recover")
    first = connect("alice", [channel])
    epoch = first.call("subscribe", {"channel": channel})["epoch"]
    for n in range(5):
        api.publish(channel, "e", n)
    first.wait_offsets(channel, 5)
    first.disconnect()
    for n in range(5, 10):
        api.publish(channel, "e", n)

    stop = threading.Event()

    def keep_publishing() -> None:  # newer messages race the resubscription
        mine = Api(server)
        while not stop.is_set():
            mine.publish(channel, "e", "live")
            time.sleep(0.005)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    try:
        second = connect("alice", [channel])
        ack = second.call("subscribe", {"channel": channel, "since": 5, "epoch": epoch})
        time.sleep(0.2)
    finally:
        stop.set()
        publisher.join(timeout=10)
    assert ack["ok"] and ack["recovered"] is True and ack["epoch"] == epoch
    latest = api.get(f"/channels/{channel}/history", params={"limit": 1}).json()["offset"]
    assert latest > ack["offset"] >= 10
    offsets = second.wait_offsets(channel, latest - 5)
    assert offsets == list(range(6, latest + 1))
    log = second.log
    ack_at = next(i for i, e in enumerate(log) if isinstance(e, Ack) and e.event == "subscribe")
    before = [e.meta["offset"] for e in log[:ack_at] if isinstance(e, Delivery)]
    # The backlog, complete, ahead of the ack. Newer messages may come between it and the ack: the client joins the
    # live audience before the handler's ack is written (the order of everything is checked above).
    assert before[: ack["offset"] - 5] == list(range(6, ack["offset"] + 1))
    assert [d.data for d in second.deliveries(channel)[:5]] == [5, 6, 7, 8, 9]


def test_eviction_is_reported_as_not_recovered(connect, api):
    channel = unique("evicted")
    for n in range(HISTORY + 10):
        api.publish(channel, "e", n)
    client = connect("alice")
    ack = client.call("subscribe", {"channel": channel, "since": 2})
    assert ack == {"ok": True, "channel": channel, "offset": HISTORY + 10, "recovered": False, "epoch": ack["epoch"]}
    api.publish(channel, "e", "live")
    client.wait_offsets(channel, 1)
    assert client.offsets(channel) == [HISTORY + 11]  # nothing partial was replayed, live flow continues
    complete = client.call("subscribe", {"channel": unique("fresh"), "since": 0})
    assert complete["recovered"] is True  # nothing missed on an empty channel


def test_unknown_epoch_is_not_recovered(connect, api):
    channel = unique("epoch")
    api.publish(channel, "e", 1)
    client = connect("alice")
    ack = client.call("subscribe", {"channel": channel, "since": 0, "epoch": "before-a-restart"})
    assert ack["ok"] and ack["recovered"] is False
    assert client.call("subscribe", {"channel": unique("x"), "since": 99})["recovered"] is False


def test_subscribe_errors(connect):
    client = connect("alice", ["mine.*"])
    assert error_ack(client.call("subscribe", {"channel": "theirs"}), "forbidden")
    assert error_ack(client.call("subscribe", {"channel": "bad name"}), "invalid_channel")
    assert error_ack(client.call("subscribe", {}), "invalid_channel")
    assert error_ack(client.call("subscribe", "mine.a"), "invalid_payload")
    assert error_ack(client.call("subscribe", None), "invalid_payload")
    assert error_ack(client.call("subscribe", {"channel": "mine.a", "since": -1}), "invalid_payload")
    assert error_ack(client.call("subscribe", {"channel": "mine.a", "since": "3"}), "invalid_payload")
    assert error_ack(client.call("subscribe", {"channel": "mine.a", "presence": "yes"}), "invalid_payload")
    assert client.call("subscribe", {"channel": "mine.a"})["ok"]
    assert error_ack(client.call("subscribe", {"channel": "mine.a"}), "already_subscribed")
    assert client.call("subscribe", {"channel": "mine.b"})["ok"]
    assert client.call("subscribe", {"channel": "public:lobby"})["ok"]  # public: no grant needed
    assert error_ack(client.call("subscribe", {"channel": "mine.c"}), "too_many_subscriptions")
    assert client.call("unsubscribe", {"channel": "mine.a"}) == {"ok": True, "channel": "mine.a"}
    assert error_ack(client.call("unsubscribe", {"channel": "mine.a"}), "not_found")
    assert client.call("subscribe", {"channel": "mine.c"})["ok"]  # the freed slot is usable again
    assert error_ack(client.call("no-such-event", {}), "not_found")


def test_unsubscribe_stops_delivery(connect, api):
    channel = unique("leave")
    client = connect("alice")
    client.call("subscribe", {"channel": channel})
    api.publish(channel)
    client.wait_offsets(channel, 1)
    client.call("unsubscribe", {"channel": channel})
    api.publish(channel)
    marker = unique("marker")
    client.call("subscribe", {"channel": marker})
    api.publish(marker)
    client.wait_offsets(marker, 1)  # later than the second message: had it been delivered, it would be here
    assert client.offsets(channel) == [1]


def test_client_publish_needs_publish_grant(connect):
    channel = unique("chat")
    listener = connect("bob", [channel])
    listener.call("subscribe", {"channel": channel})
    talker = connect("alice", [channel], publish=[channel])
    reader = connect("carol", [channel])  # may read, not write
    ack = talker.call("publish", {"channel": channel, "event": "said", "data": {"text": "hi"}})
    assert ack["ok"] is True and ack["offset"] == 1 and ack["channel"] == channel and ack["id"]
    listener.wait_offsets(channel, 1)
    assert listener.deliveries(channel)[0].data == {"text": "hi"}
    assert listener.deliveries(channel)[0].meta["id"] == ack["id"]
    assert error_ack(reader.call("publish", {"channel": channel, "event": "said"}), "forbidden")
    assert error_ack(talker.call("publish", {"channel": channel, "event": "connect"}), "invalid_event")
    assert error_ack(talker.call("publish", {"channel": channel, "event": "e", "data": "x" * MAX_PAYLOAD}),
                     "payload_too_large")
    assert error_ack(talker.call("publish", {"channel": "bad name", "event": "e"}), "invalid_channel")
    assert error_ack(talker.call("publish", [channel]), "invalid_payload")


def test_presence_join_and_leave(connect, api):
    channel = unique("room")
    watcher = connect("carol", [channel])
    assert watcher.call("subscribe", {"channel": channel, "presence": True})["ok"]
    bob = connect("bob", [channel])
    bob.call("subscribe", {"channel": channel})
    watcher.wait_for(lambda: any(e.event == "signalboard:presence" for e in watcher.deliveries()), what="join")
    assert api.get(f"/channels/{channel}/presence").json()["subscribers"] == [
        {"sub": "bob", "connections": 1}, {"sub": "carol", "connections": 1}]
    bob.disconnect()
    watcher.wait_for(lambda: len([e for e in watcher.deliveries() if e.event == "signalboard:presence"]) == 2,
                     what="leave")
    events = [e.data for e in watcher.deliveries() if e.event == "signalboard:presence"]
    assert events == [
        {"channel": channel, "sub": "bob", "action": "join", "connections": 1},
        {"channel": channel, "sub": "bob", "action": "leave", "connections": 0},
    ]


def burst(client: HubClient, payloads: list[dict]) -> list[dict]:
    """Send subscribes back to back without waiting for acks, then collect every ack."""
    acks: list[dict] = []
    done = threading.Semaphore(0)

    def on_ack(body: dict) -> None:
        acks.append(body)
        done.release()

    for payload in payloads:
        client.sio.emit("subscribe", payload, callback=on_ack)
    for _ in payloads:
        assert done.acquire(timeout=10), "an ack never came"
    return acks


def test_anonymous_and_rate_limits():
    """A second server: anonymous connections allowed (public channels only) and tight per-connection limits."""
    with ServerProcess(ALLOW_ANONYMOUS=1, CLIENT_RATE_LIMIT=1, CLIENT_RATE_BURST=3) as server:
        anonymous = HubClient(server.url).connect()
        try:
            assert anonymous.call("subscribe", {"channel": "public:news"})["ok"]
            error = error_ack(anonymous.call("subscribe", {"channel": "private"}), "forbidden")
            assert "anonymous" in error["message"]
            error_ack(anonymous.call("publish", {"channel": "public:news", "event": "e"}), "forbidden")
            acks = burst(anonymous, [{"channel": f"public:c{n}"} for n in range(12)])
            limited = [a for a in acks if not a["ok"]]
            # 15 calls against a burst of 3 at 1 per second: only a run slower than 12 s could pass them all.
            assert len(limited) >= 2, acks
            assert all(a["error"]["code"] == "rate_limited" and a["error"]["retry_after"] > 0 for a in limited)
            other = HubClient(server.url).connect()  # another connection has its own budget
            assert other.call("subscribe", {"channel": "public:c0"})["ok"]
            other.disconnect()
            refusal = HubClient(server.url).try_connect({"token": "garbage"})
            assert refusal["data"]["reason"] == "token_invalid"  # a bad token is refused, not downgraded
        finally:
            anonymous.disconnect()
        assert server.bad_log_lines() == []
