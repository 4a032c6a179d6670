"""Idempotent, multi-channel and echo-suppressed publishing on one real instance (start.sh + gunicorn, memory hub)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.hub.realtime_client import Api, HubClient, ok, subscribed, unique
from tests.integration.test_hub_api import error_of
from tests.integration.test_hub_realtime import error_ack
from tests.server import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server():
    with ServerProcess(API_RATE_LIMIT=0, CLIENT_RATE_LIMIT=0, MAX_PAYLOAD_BYTES=1024) as running:
        yield running
        assert running.bad_log_lines() == []


@pytest.fixture(scope="module")
def api(server):
    return Api(server)


@pytest.fixture
def connect(server, api):
    clients: list[HubClient] = []

    def open_client(sub: str = "alice", publish: list[str] | None = None,
                    transports: tuple[str, ...] = ("websocket",)) -> HubClient:
        client = HubClient(server.url)
        clients.append(client)
        return client.connect({"token": api.token(sub, ["**"], publish=publish)}, transports=transports)

    yield open_client
    for client in clients:
        client.disconnect()


def data_received(client: HubClient, channel: str, sentinel: object = "sentinel") -> list:
    """Everything `client` got on `channel` up to the sentinel, published after the rest: delivery is in offset
    order, so a duplicate or an echo would have arrived before it."""
    client.wait_for(lambda: any(d.data == sentinel for d in client.deliveries(channel)), what=f"sentinel on {channel}")
    return [d.data for d in client.deliveries(channel)]


def test_a_retry_with_the_same_key_answers_the_first_and_delivers_nothing(api, connect):
    channel = unique("idem")
    watcher = subscribed(connect(), channel)
    body = {"channel": channel, "event": "order", "data": {"n": 1}, "idempotency_key": "order-1"}
    first = ok(api.post("/publish", body))
    again = ok(api.post("/publish", body))
    assert "duplicate" not in first and again == {**first, "duplicate": True}
    api.publish(channel, data="sentinel")
    assert data_received(watcher, channel) == [{"n": 1}, "sentinel"]
    assert [m["offset"] for m in ok(api.get(f"/channels/{channel}/history"))["messages"]] == [1, 2]


def test_concurrent_retries_store_one_message(api, connect):
    channel = unique("idem")
    watcher = subscribed(connect(), channel)
    answers: list[dict] = []
    start = threading.Barrier(8)

    def retry() -> None:
        start.wait(10)
        answers.append(ok(api.post("/publish", {"channel": channel, "event": "e", "data": 1,
                                                "idempotency_key": "race"})))

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 8 and sum("duplicate" not in a for a in answers) == 1
    assert len({(a["offset"], a["id"], a["ts"]) for a in answers}) == 1
    api.publish(channel, data="sentinel")
    assert data_received(watcher, channel) == [1, "sentinel"]


def test_the_same_key_on_another_channel_is_another_message(api):
    one, two = unique("idem"), unique("idem")
    first = ok(api.post("/publish", {"channel": one, "event": "e", "idempotency_key": "shared"}))
    other = ok(api.post("/publish", {"channel": two, "event": "e", "idempotency_key": "shared"}))
    assert "duplicate" not in other and other["id"] != first["id"] and other["channel"] == two


def test_batch_messages_and_client_publishes_take_keys(api, connect):
    channel = unique("idem")
    batch = {"messages": [{"channel": channel, "event": "e", "data": n, "idempotency_key": f"b{n}"} for n in range(3)]}
    first = ok(api.post("/publish/batch", batch))["results"]
    again = ok(api.post("/publish/batch", batch))["results"]
    assert again == [{**r, "duplicate": True} for r in first]
    talker = connect(publish=[channel])
    ack = talker.call("publish", {"channel": channel, "event": "e", "data": 9, "idempotency_key": "b1"})
    assert ack == {"ok": True, **first[1], "duplicate": True}
    assert ok(api.get(f"/channels/{channel}/history"))["offset"] == 3


def test_a_key_is_forgotten_after_the_window():
    with ServerProcess(IDEMPOTENCY_WINDOW_SECONDS=1) as short:
        api = Api(short)
        body = {"channel": "w", "event": "e", "idempotency_key": "k"}
        first = ok(api.post("/publish", body))
        time.sleep(1.2)
        after = ok(api.post("/publish", body))
        assert "duplicate" not in after and after["offset"] == first["offset"] + 1
        assert short.bad_log_lines() == []


def test_one_message_to_several_channels(api, connect):
    a, b = unique("multi"), unique("multi")
    api.publish(b, data="before")  # so the two channels' offsets differ
    on_a, on_b = subscribed(connect(), a), subscribed(connect(), b)
    answer = ok(api.post("/publish", {"channels": [a, b], "event": "e", "data": {"x": 1}}))
    assert [(r["channel"], r["offset"]) for r in answer["results"]] == [(a, 1), (b, 2)]
    assert set(answer) == {"results"} and all(set(r) == {"channel", "offset", "id", "ts"} for r in answer["results"])
    assert answer["results"][0]["id"] == answer["results"][1]["id"]
    api.post("/publish", {"channels": [a, b], "event": "e", "data": "sentinel"})
    assert data_received(on_a, a) == [{"x": 1}, "sentinel"] and data_received(on_b, b) == [{"x": 1}, "sentinel"]
    assert [d.meta["offset"] for d in on_b.deliveries(b)] == [2, 3]


def test_one_forbidden_channel_refuses_the_whole_publish(api, connect):
    mine, theirs = unique("mine"), unique("theirs")
    watcher = subscribed(connect(), mine)
    talker = connect(publish=[mine])
    error = error_ack(talker.call("publish", {"channels": [mine, theirs], "event": "e", "data": 1}), "forbidden")
    assert theirs in error["message"]
    ack = talker.call("publish", {"channels": [mine], "event": "e", "data": "sentinel"})
    assert ack["ok"] is True and ack["results"][0]["offset"] == 1  # nothing was stored before
    assert data_received(watcher, mine) == ["sentinel"]
    error_of(api.post("/publish", {"channels": [mine, "bad name"], "event": "e"}), 400)
    assert ok(api.get(f"/channels/{mine}/history"))["offset"] == 1


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_exclude_self_and_exclude_keep_one_connection_out(api, connect, transport):
    channel = unique("echo")
    me = subscribed(connect("me", publish=[channel], transports=(transport,)), channel)
    other = subscribed(connect("other", transports=(transport,)), channel)
    ack = me.call("publish", {"channel": channel, "event": "said", "data": "mine", "exclude_self": True})
    assert ack["ok"] is True and ack["offset"] == 1
    ok(api.post("/publish", {"channel": channel, "event": "said", "data": "for others", "exclude": me.sid}))
    ok(api.post("/publish", {"channel": channel, "event": "said", "data": "sentinel"}))
    assert data_received(me, channel) == ["sentinel"]
    assert data_received(other, channel) == ["mine", "for others", "sentinel"]
    history = ok(api.get(f"/channels/{channel}/history"))["messages"]
    assert [m["data"] for m in history] == ["mine", "for others", "sentinel"]  # history is everyone's


def test_an_unknown_sid_excludes_nobody(api, connect):
    channel = unique("echo")
    watcher = subscribed(connect(), channel)
    ok(api.post("/publish", {"channel": channel, "event": "e", "data": "sentinel", "exclude": "NoSuchSid0123456789"}))
    assert data_received(watcher, channel) == ["sentinel"]


@pytest.mark.parametrize(
    "body, code",
    [
        ({"channel": "a", "event": "e", "idempotency_key": "k" * 129}, "invalid_payload"),
        ({"channel": "a", "event": "e", "idempotency_key": ""}, "invalid_payload"),
        ({"channel": "a", "event": "e", "idempotency_key": "line\nbreak"}, "invalid_payload"),
        ({"channel": "a", "event": "e", "idempotency_key": "\u0000"}, "invalid_payload"),
        ({"channel": "a", "event": "e", "idempotency_key": 12}, "invalid_payload"),
        ({"channels": [], "event": "e"}, "invalid_payload"),
        ({"channels": [f"c{n}" for n in range(101)], "event": "e"}, "invalid_payload"),
        ({"channels": ["a", "a"], "event": "e"}, "invalid_payload"),
        ({"channels": ["a"], "channel": "a", "event": "e"}, "invalid_payload"),
        ({"channels": "a", "event": "e"}, "invalid_payload"),
        ({"channels": ["a", 5], "event": "e"}, "invalid_channel"),
        ({"channel": "a", "event": "e", "exclude": "has space"}, "invalid_payload"),
        ({"channel": "a", "event": "e", "exclude": 7}, "invalid_payload"),
    ],
)
def test_bad_publish_options_answer_400_and_store_nothing(api, body, code):
    assert error_of(api.post("/publish", body), 400)["code"] == code
    assert ok(api.get("/channels/a/history"))["offset"] == 0
    assert ok(api.get("/channels/c0/history"))["offset"] == 0


def test_bad_options_on_the_client_publish_and_in_a_batch(api, connect):
    talker = connect(publish=["**"])
    for payload in ({"channel": "a", "event": "e", "idempotency_key": "x" * 200},
                    {"channel": "a", "event": "e", "exclude_self": "yes"},
                    {"channels": ["a", "a"], "event": "e"}):
        error_ack(talker.call("publish", payload), "invalid_payload")
    batch = {"messages": [{"channel": "a", "event": "e"}, {"channel": "a", "event": "e", "idempotency_key": ""}]}
    assert error_of(api.post("/publish/batch", batch), 400)["code"] == "invalid_payload"
    assert ok(api.get("/channels/a/history"))["offset"] == 0


def test_each_channel_counts_against_the_rate_limit():
    """Ten channels cost ten publishes of the caller's allowance (rate 1/s, burst 10), for a client and for a key."""
    with ServerProcess(CLIENT_RATE_LIMIT=1, CLIENT_RATE_BURST=10, API_RATE_LIMIT=1, API_RATE_BURST=10) as limited:
        api = Api(limited)
        token = api.token("alice", [], publish=["**"])  # the key's first request: 9 left
        client = HubClient(limited.url).connect({"token": token})
        try:
            names = [f"r{n}" for n in range(11)]
            error_ack(client.call("publish", {"channels": names, "event": "e"}), "invalid_payload")  # 11 > burst
            assert client.call("publish", {"channels": names[:9], "event": "e"})["ok"] is True  # the other 9
            # 9 more need 9 tokens at once: refused until about 9 s have passed, whichever way the seconds go.
            error = error_ack(client.call("publish", {"channels": names[:9], "event": "e"}), "rate_limited")
            assert error["retry_after"] > 0
        finally:
            client.disconnect()
        assert len(ok(api.post("/publish", {"channels": names[:8], "event": "e"}))["results"]) == 8  # 1 + 7 of 9
        assert error_of(api.post("/publish", {"channels": names[:8], "event": "e"}), 429)["code"] == "rate_limited"
        assert limited.bad_log_lines() == []
