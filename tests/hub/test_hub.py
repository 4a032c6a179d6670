"""Hub operations: publish checks, non-blocking fan-out, subscribe with exact recovery, presence, history."""

from __future__ import annotations

import threading
import time

import pytest

from hub.errors import (
    AlreadySubscribed,
    Forbidden,
    InvalidChannel,
    InvalidEvent,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    TooManySubscriptions,
    Unavailable,
)
from hub.fanout import FanoutQueue
from hub.history import MemoryHistoryStore
from hub.hub import Hub, payload_size
from hub.presence import PresenceRegistry


def make_hub(fanout: FanoutQueue, **kwargs) -> Hub:
    history_kwargs = {k: kwargs.pop(k) for k in ("max_messages", "clock") if k in kwargs}
    return Hub(MemoryHistoryStore(**history_kwargs), PresenceRegistry(), fanout, **kwargs)


@pytest.fixture
def hub(worker) -> Hub:
    return make_hub(worker.fanout)


def test_publish_returns_stored_message(hub, worker, delivery):
    hub.subscribe("s1", "alice", ["orders.*"], "orders.eu").ready.wait(5)
    first = hub.publish("orders.eu", "created", {"id": 1})
    second = hub.publish("orders.eu", "created", {"id": 2})
    assert (first.offset, second.offset) == (1, 2) and first.id != second.id
    worker.drain()
    assert [m.data for m in delivery.received["s1"]] == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize(
    "channel, event, error",
    [
        ("bad name", "e", InvalidChannel),
        ("", "e", InvalidChannel),
        ("ok", "connect", InvalidEvent),
        ("ok", "disconnect", InvalidEvent),
        ("ok", "signalboard:presence", InvalidEvent),
        ("ok", "", InvalidEvent),
        (None, "e", InvalidChannel),
    ],
)
def test_publish_refuses_bad_names(hub, channel, event, error):
    with pytest.raises(error):
        hub.publish(channel, event, {})
    assert hub.history.channels() == []


@pytest.mark.parametrize("data", [b"raw", float("nan"), float("inf"), {1, 2}, {"k": object()}])
def test_publish_refuses_non_json(hub, data):
    with pytest.raises(InvalidPayload):
        hub.publish("c", "e", data)


def test_payload_size_limit_counts_utf8_json_bytes(worker):
    hub = make_hub(worker.fanout, max_payload_bytes=10)
    assert payload_size("é" * 4) == 10  # quotes plus four two-byte characters
    hub.publish("c", "e", "é" * 4)
    with pytest.raises(PayloadTooLarge) as info:
        hub.publish("c", "e", "é" * 5)
    assert info.value.status == 413 and "12 bytes" in info.value.message
    assert hub.history.latest("c") == 1


def test_publish_with_client_grants(hub):
    hub.publish("orders.eu", "e", 1, grants=["orders.*"])
    with pytest.raises(Forbidden):
        hub.publish("billing", "e", 1, grants=["orders.*"])
    with pytest.raises(Forbidden):
        hub.publish("public:news", "e", 1, grants=[])


def test_publish_does_not_wait_for_slow_sends(hub, worker, delivery):
    """With the network stuck, publishing 1000 subscribers' worth of messages still returns at once."""
    for n in range(1000):
        hub.subscribe(f"s{n}", f"user{n}", ["room"], "room")
    worker.drain()
    delivery.gate.clear()  # every send now blocks until the gate opens
    started = time.perf_counter()
    messages = [hub.publish("room", "tick", {"n": n}) for n in range(50)]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"50 publishes took {elapsed:.2f}s while sends were blocked"
    assert [m.offset for m in messages] == list(range(1, 51))
    assert delivery.received["s0"] == []  # nothing could be sent yet
    delivery.gate.set()
    worker.drain()
    assert delivery.offsets("s999", "room") == list(range(1, 51))


def test_paced_publish_answers_once_its_fanout_is_done(worker, delivery):
    hub = make_hub(worker.fanout, publish_wait=10.0)
    hub.subscribe("s1", "alice", ["room"], "room").ready.wait(5)
    worker.drain()
    delivery.gate.clear()
    answered = threading.Event()
    threading.Thread(target=lambda: (hub.publish("room", "tick", 1), answered.set()), daemon=True).start()
    assert not answered.wait(0.3)  # held while the worker cannot hand the message over
    delivery.gate.set()
    assert answered.wait(5) and delivery.offsets("s1", "room") == [1]


def test_paced_publish_is_acknowledged_after_publish_wait_anyway(worker, delivery):
    hub = make_hub(worker.fanout, publish_wait=0.2)
    worker.drain()  # the worker is running (a publish before it starts is not paced)
    delivery.gate.clear()
    started = time.perf_counter()
    messages = hub.publish_batch([{"channel": "room", "event": "tick", "data": n} for n in range(3)])
    assert time.perf_counter() - started >= 0.2 and [m.offset for m in messages] == [1, 2, 3]
    delivery.gate.set()


def test_publish_refused_when_fanout_is_saturated(delivery):
    fanout = FanoutQueue(delivery, max_pending=2)  # no worker: the queue only fills
    hub = make_hub(fanout)
    hub.publish("c", "e", 1)
    hub.publish("c", "e", 2)
    with pytest.raises(Unavailable):
        hub.publish("c", "e", 3)
    with pytest.raises(Unavailable):
        hub.publish_batch([{"channel": "c", "event": "e", "data": n} for n in range(2)])
    assert hub.history.latest("c") == 2  # refused before storing, so nothing is half-published
    assert hub.refusals() == {"fanout_full": 3, "store_unavailable": 0}


def test_publish_refused_by_the_store_is_counted(worker):
    class DownStore(MemoryHistoryStore):
        def append_all(self, channels, event, data, **options):
            raise Unavailable("history unavailable, retry shortly")

    hub = Hub(DownStore(), PresenceRegistry(), worker.fanout)
    with pytest.raises(Unavailable):
        hub.publish("c", "e", 1)
    assert hub.refusals() == {"fanout_full": 0, "store_unavailable": 1}


def test_batch_is_all_or_nothing_and_ordered(hub):
    with pytest.raises(InvalidEvent):
        hub.publish_batch([{"channel": "a", "event": "e", "data": 1}, {"channel": "a", "event": "connect"}])
    assert hub.history.latest("a") == 0
    messages = hub.publish_batch(
        [{"channel": "a", "event": "e", "data": 1}, {"channel": "b", "event": "e"}, {"channel": "a", "event": "e"}]
    )
    assert [(m.channel, m.offset) for m in messages] == [("a", 1), ("b", 1), ("a", 2)]
    assert messages[1].data is None


@pytest.mark.parametrize("items", [[], "abc", {"channel": "a"}, [1], [{"channel": "a", "event": "e"}] * 101])
def test_batch_shape(hub, items):
    with pytest.raises(InvalidPayload):
        hub.publish_batch(items)


def test_subscribe_permissions(hub):
    with pytest.raises(Forbidden, match="anonymous"):
        hub.subscribe("s1", None, [], "orders")
    with pytest.raises(Forbidden, match="no subscribe permission"):
        hub.subscribe("s1", "alice", ["billing"], "orders")
    assert hub.subscribe("s1", None, [], "public:news").ack()["ok"] is True
    assert hub.presence.channels_of("s1") == {"public:news"}


def test_subscribe_without_since(hub):
    for n in range(3):
        hub.publish("c", "e", n)
    result = hub.subscribe("s1", "alice", ["c"], "c")
    assert result.ack() == {"ok": True, "channel": "c", "offset": 3, "recovered": False, "epoch": hub.history.epoch}
    assert result.backlog == ()


def test_recovery_replays_missed_messages_before_live_ones(hub, worker, delivery):
    for n in range(5):
        hub.publish("c", "e", n)
    result = hub.subscribe("s1", "alice", ["c"], "c", since=2, epoch=hub.history.epoch)
    assert result.recovered and result.offset == 5
    assert [m.offset for m in result.backlog] == [3, 4, 5]
    assert result.ready.wait(5)
    hub.publish("c", "e", 5)
    worker.drain()
    assert delivery.offsets("s1", "c") == [3, 4, 5, 6]


def test_recovery_refused_when_evicted(worker, delivery):
    hub = make_hub(worker.fanout, max_messages=3)
    for n in range(6):
        hub.publish("c", "e", n)
    result = hub.subscribe("s1", "alice", ["c"], "c", since=1)
    assert not result.recovered and result.backlog == () and result.offset == 6
    result.ready.wait(5)
    worker.drain()
    assert delivery.received["s1"] == []


def test_recovery_refused_for_another_epoch(hub):
    hub.publish("c", "e", 1)
    result = hub.subscribe("s1", "alice", ["c"], "c", since=0, epoch="from-before-a-restart")
    assert not result.recovered and result.backlog == ()


def test_recovery_with_nothing_missed(hub):
    hub.publish("c", "e", 1)
    result = hub.subscribe("s1", "alice", ["c"], "c", since=1)
    assert result.recovered and result.backlog == () and result.offset == 1


@pytest.mark.parametrize("since", [-1, "3", 1.5, True, [1]])
def test_since_validated(hub, since):
    with pytest.raises(InvalidPayload):
        hub.subscribe("s1", "alice", ["c"], "c", since=since)
    assert hub.presence.channels_of("s1") == set()


def test_subscribe_limits(worker):
    hub = make_hub(worker.fanout, max_subscriptions=2)
    hub.subscribe("s1", "alice", ["**"], "a")
    with pytest.raises(AlreadySubscribed):
        hub.subscribe("s1", "alice", ["**"], "a")
    hub.subscribe("s1", "alice", ["**"], "b")
    with pytest.raises(TooManySubscriptions):
        hub.subscribe("s1", "alice", ["**"], "c")


def test_exactly_once_in_order_under_concurrent_publishing(worker, delivery):
    """Subscribers joining with since=0 while four publishers write get every message once, in offset order."""
    publishers, at_least, at_most = 4, 250, 5_000
    hub = make_hub(worker.fanout, max_messages=publishers * at_most)  # history covers the whole run: all recover
    joined = threading.Event()
    counts = [0] * publishers

    def publish(n: int) -> None:
        # Publishing runs from before the first join until after the last, however the threads are scheduled.
        while counts[n] < at_most and (counts[n] < at_least or not joined.is_set()):
            hub.publish("hot", "e", {"p": n, "i": counts[n]})
            counts[n] += 1

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(publishers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while sum(counts) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    results = []
    for n in range(20):
        results.append(hub.subscribe(f"late{n}", "bob", ["hot"], "hot", since=0))
        time.sleep(0.002)  # spread the joins across the publishing run
    joined.set()
    for thread in threads:
        thread.join(timeout=30)
    worker.drain()
    total = sum(counts)
    assert all(r.recovered for r in results)
    assert any(0 < r.offset < total for r in results), "no subscriber joined mid-run: the race was not exercised"
    for n in range(20):
        assert delivery.offsets(f"late{n}", "hot") == list(range(1, total + 1)), f"late{n}"
    received = delivery.received["late0"]
    for p in range(publishers):  # each publisher's own messages arrive in the order it sent them
        assert [m.data["i"] for m in received if m.data["p"] == p] == list(range(counts[p]))


def test_unsubscribe(hub, worker, delivery):
    hub.subscribe("s1", "alice", ["c"], "c")
    hub.publish("c", "e", 1)
    hub.unsubscribe("s1", "c")
    hub.publish("c", "e", 2)
    worker.drain()
    assert delivery.offsets("s1", "c") == [1]
    with pytest.raises(NotFound):
        hub.unsubscribe("s1", "c")
    with pytest.raises(InvalidChannel):
        hub.unsubscribe("s1", "bad name")


def test_presence_announcements_reach_opted_in_listeners(hub, worker, delivery):
    hub.subscribe("watcher", "carol", ["room"], "room", presence=True)
    hub.subscribe("quiet", "dave", ["room"], "room")
    hub.subscribe("b1", "bob", ["room"], "room")
    hub.subscribe("b2", "bob", ["room"], "room")  # second connection: no second join
    hub.subscribe("anon", None, [], "public:x")
    hub.unsubscribe("b1", "room")  # bob still has b2: no leave
    assert hub.disconnect("b2") == ["room"]
    worker.drain()
    seen = [(c.sub, c.joined) for c in delivery.presence_received["watcher"]]
    assert seen == [("dave", True), ("bob", True), ("bob", False)]
    assert delivery.presence_received["quiet"] == []


def test_disconnect_forgets_subscriptions(hub):
    hub.subscribe("s1", "alice", ["**"], "a")
    hub.subscribe("s1", "alice", ["**"], "b")
    assert sorted(hub.disconnect("s1")) == ["a", "b"]
    assert hub.presence.counts() == {}
    assert hub.disconnect("s1") == []


def test_read_history(hub):
    for n in range(5):
        hub.publish("c", "e", n)
    page = hub.read_history("c", since=1, limit=2)
    assert [m.offset for m in page.messages] == [2, 3] and page.complete and page.latest == 5
    assert [m.offset for m in hub.read_history("c").messages] == [1, 2, 3, 4, 5]
    for bad in ({"since": -1}, {"limit": 0}, {"limit": 1001}, {"limit": "x"}):
        with pytest.raises(InvalidPayload):
            hub.read_history("c", **bad)
    assert hub.read_history("never").messages == []


def test_channel_summaries_and_who(hub):
    hub.publish("only.history", "e", 1)
    hub.subscribe("s1", "alice", ["**"], "room")
    hub.subscribe("s2", "alice", ["**"], "room")
    hub.subscribe("s3", None, [], "public:room")
    assert hub.channel_summaries() == [
        {"channel": "only.history", "subscribers": 0, "offset": 1},
        {"channel": "public:room", "subscribers": 1, "offset": 0},
        {"channel": "room", "subscribers": 2, "offset": 0},
    ]
    hub.subscribe("s4", "bob", ["**"], "room")
    assert hub.who("room") == {
        "channel": "room",
        "connections": 3,
        "anonymous": 0,
        "subscribers": [{"sub": "alice", "connections": 2}, {"sub": "bob", "connections": 1}],
    }
    assert hub.who("public:room") == {"channel": "public:room", "connections": 1, "anonymous": 1, "subscribers": []}


def test_subscribe_that_fails_on_history_leaves_no_presence_behind(hub, monkeypatch):
    def store_down(*args, **kwargs):
        raise Unavailable("message store unavailable, retry shortly")

    monkeypatch.setattr(hub.history, "latest", store_down)
    with pytest.raises(Unavailable):
        hub.subscribe("s1", "alice", ["room"], "room")
    monkeypatch.undo()
    assert hub.subscribe("s1", "alice", ["room"], "room").ready.wait(5)  # not "already subscribed"


def test_subscribe_the_fanout_cannot_place_in_time_is_refused_before_anything_changes(hub, monkeypatch):
    def listener_behind():
        raise Unavailable("subscriptions are waiting for the message queue, retry shortly", retry_after=2.0)

    monkeypatch.setattr(hub.fanout, "admit_join", listener_behind)
    with pytest.raises(Unavailable):
        hub.subscribe("s1", "alice", ["room"], "room")
    assert hub.presence.channels_of("s1") == set()
    monkeypatch.undo()
    assert hub.subscribe("s1", "alice", ["room"], "room").ready.wait(5)


@pytest.mark.parametrize("anonymous_presence_subs, anonymous_view", [(False, "anonymous"), (True, "subs")])
def test_anonymous_presence_listeners_get_the_anonymous_view_unless_configured(
        worker, delivery, anonymous_presence_subs, anonymous_view):
    hub = make_hub(worker.fanout, anonymous_presence_subs=anonymous_presence_subs)
    hub.subscribe("anon", None, [], "public:x", presence=True)
    hub.subscribe("named", "carol", [], "public:x", presence=True)
    hub.subscribe("quiet", None, [], "public:x")
    worker.drain()
    assert delivery.presence_views == {("anon", "public:x"): anonymous_view, ("named", "public:x"): "subs"}
