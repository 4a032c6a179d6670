"""The Redis history and presence stores against a real redis-server: offsets, trimming, recovery, expiry."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from hub.errors import AlreadySubscribed, TooManySubscriptions, Unavailable
from hub.presence import PresenceChange
from hub.redis_client import RedisKeys, connect
from hub.redis_history import BACKLOG_METHOD, Broadcast, RedisHistoryStore
from hub.redis_presence import RedisPresenceRegistry
from tests.scale.processes import RedisProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture
def client(redis_server):
    return connect(redis_server.url)


@pytest.fixture
def keys(key_prefix):
    return RedisKeys(key_prefix)


def test_offsets_are_strictly_increasing_across_stores_and_threads(client, keys):
    stores = [RedisHistoryStore(connect(_url(client)), keys) for _ in range(3)]
    offsets: list[int] = []
    lock = threading.Lock()

    def publish(store):
        for i in range(50):
            message = store.append("orders", "created", {"i": i})
            with lock:
                offsets.append(message.offset)

    threads = [threading.Thread(target=publish, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(offsets) == list(range(1, 151))
    assert stores[0].latest("orders") == 150
    assert len({store.epoch for store in stores}) == 1


def _url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def test_since_returns_what_is_held_in_order_and_reports_gaps(client, keys):
    store = RedisHistoryStore(client, keys, max_messages=5)
    sent = [store.append("ch", "tick", {"n": n, "big": 2**60 + n, "text": "é/\"x"}) for n in range(8)]
    messages, complete = store.since("ch", 5)
    assert [m.offset for m in messages] == [6, 7, 8] and complete
    assert messages[0].data == {"n": 5, "big": 2**60 + 5, "text": "é/\"x"}
    assert messages[0].id == sent[5].id and messages[0].ts == sent[5].ts and messages[0].event == "tick"
    evicted, complete = store.since("ch", 1)  # 2 and 3 were trimmed by MAXLEN
    assert [m.offset for m in evicted] == [4, 5, 6, 7, 8] and not complete
    assert store.since("ch", 8) == ([], True)
    assert store.since("ch", 9) == ([], False)  # beyond the latest offset: stale client state
    assert store.since("never", 0) == ([], True)
    assert store.since("never", 3) == ([], False)
    limited, complete = store.since("ch", 3, limit=2)
    assert [m.offset for m in limited] == [4, 5] and complete
    assert store.channels() == ["ch"]


def test_a_limited_read_that_starts_a_subscription_still_marks_where_the_replay_continues(client, keys):
    """The hub reads one message of a Redis backlog (RedisFanout replays the rest); the read point it leaves must be
    the latest offset that read saw, as a full read's is, and a limited read for anything else leaves none."""
    store = RedisHistoryStore(client, keys)
    for n in range(4):
        store.append("ch", "tick", {"n": n})
    first, complete = store.since("ch", 1, 1, subscribing=True)
    assert [m.offset for m in first] == [2] and complete
    store.append("ch", "tick", {"n": 4})  # published after the read: the replay must still start from the read
    assert store.latest("ch") == 5  # a subscription reads latest() next; it must not move the read point
    assert store.take_read_point("ch") == 4
    store.since("ch", 1, 1)  # a history page
    assert store.take_read_point("ch") is None


def test_age_trimming(client, keys):
    store = RedisHistoryStore(client, keys, max_age_seconds=0.3)
    store.append("ch", "a", 1)
    store.append("ch", "a", 2)
    time.sleep(0.4)
    assert store.since("ch", 0) == ([], False)
    assert store.channels() == []
    third = store.append("ch", "a", 3)
    assert third.offset == 3  # the counter outlives the messages
    messages, complete = store.since("ch", 2)
    assert [m.offset for m in messages] == [3] and complete
    assert client.xlen(keys.stream("ch")) == 1


def test_epoch_changes_when_redis_loses_the_counters(client, keys):
    store = RedisHistoryStore(client, keys)
    store.append("ch", "a", 1)
    before = store.epoch
    for key in client.scan_iter(f"{keys.prefix}:*"):
        client.delete(key)
    # A new epoch, and this store counts on above the offset it saw handed out: never the same offset twice.
    assert store.append("ch", "a", 2).offset == 2
    assert store.epoch != before
    assert RedisHistoryStore(client, keys).append("ch", "a", 3).offset == 3


def test_append_publishes_in_offset_order_with_socketio_packets(client, keys):
    broadcast = Broadcast(keys.socketio_channel, "channel ")
    store = RedisHistoryStore(client, keys, broadcast=broadcast)
    pubsub = connect(_url(client)).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.socketio_channel)
    pubsub.get_message(timeout=1)
    for n in range(3):
        store.append("prices", "quote", {"n": n, "s": "a\u2028b"})
    packets = []
    deadline = time.monotonic() + 5
    while len(packets) < 3 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message:
            packets.append(json.loads(message["data"]))
    assert [p["data"][1]["offset"] for p in packets] == [1, 2, 3]
    first = packets[0]
    assert first["method"] == "emit" and first["event"] == "quote" and first["room"] == "channel prices"
    assert first["namespace"] == "/" and first["host_id"] == "signalboard"
    assert first["data"][0] == {"n": 0, "s": "a\u2028b"}
    assert first["signalboard"] == {"channel": "prices", "offset": 1, "epoch": store.epoch}

    marker = '{"method":"callback","host_id":"h","sid":"x","namespace":"/","id":7,"args":['
    replay = store.replay("prices", 1, "SID", marker)
    assert (replay.complete, replay.latest, replay.sent) == (True, 3, 2)
    # The backlog in one packet (the listener of every instance reads one, not one per message), then the marker.
    backlog, reached = [json.loads(pubsub.get_message(timeout=2)["data"]) for _ in range(2)]
    assert backlog["method"] == BACKLOG_METHOD and backlog["room"] == "SID" and backlog["marker"] == marker
    # Each replayed message as the live packet of its offset carried it: event, data, meta.
    assert backlog["messages"] == [[p["event"], *p["data"]] for p in packets[1:]]
    assert reached == {"method": "callback", "host_id": "h", "sid": "x", "namespace": "/", "id": 7,
                       "args": [3, store.epoch]}
    assert store.replay("prices", 3, "SID", marker).sent == 0  # nothing owed: no backlog packet, only the marker
    assert json.loads(pubsub.get_message(timeout=2)["data"])["method"] == "callback"
    pubsub.close()


def test_outage_becomes_unavailable_quickly(key_prefix):
    down = RedisProcess()  # never started: nothing listens on its port
    store = RedisHistoryStore(connect(down.url), RedisKeys(key_prefix))
    started = time.monotonic()
    with pytest.raises(Unavailable):
        store.append("ch", "a", 1)
    with pytest.raises(Unavailable):
        store.since("ch", 0)
    assert time.monotonic() - started < 5


def presence(client, keys, instance, ttl=15.0):
    registry = RedisPresenceRegistry(client, keys, instance, ttl_seconds=ttl)
    registry.heartbeat()
    return registry


def test_presence_counts_across_instances(client, keys):
    a, b = presence(client, keys, "a"), presence(client, keys, "b")
    first = a.add("s1", "alice", "room")
    assert first.joined and first.connections == 1 and first.announces
    second = b.add("s2", "alice", "room")
    assert second.connections == 2 and not second.announces
    b.add("s3", None, "room")
    b.add("s4", "bob", "other")
    assert a.count("room") == 3 and b.who("room") == {"alice": 2}
    assert a.counts() == {"room": 3, "other": 1}
    with pytest.raises(AlreadySubscribed):
        a.add("s1", "alice", "room")
    with pytest.raises(TooManySubscriptions):
        a.add("s1", "alice", "x", max_per_sid=1)
    leave = a.remove("s1", "room")
    assert leave is not None and leave.connections == 1 and not leave.announces
    assert a.remove("s1", "room") is None
    changes = b.remove_sid("s2")
    assert [(c.channel, c.connections, c.announces) for c in changes] == [("room", 0, True)]
    assert b.who("room") == {} and b.count("room") == 1
    b.remove_sid("s3")
    assert a.counts() == {"other": 1}
    assert a.is_subscribed("s1", "room") is False and b.channels_of("s4") == {"other"}


def test_a_silent_instance_is_reaped_after_the_ttl(client, keys):
    a = presence(client, keys, "a", ttl=2)
    crashed = presence(client, keys, "crashed", ttl=2)
    a.add("s1", "alice", "room")
    crashed.add("s2", "bob", "room")
    crashed.add("s3", "bob", "room")
    assert a.who("room") == {"alice": 1, "bob": 2}
    assert a.heartbeat() == []  # well within the TTL
    time.sleep(2.5)
    assert a.heartbeat() == [PresenceChange("room", "", "bob", False, 0)]  # bob's last connections went with it
    assert a.who("room") == {"alice": 1} and a.count("room") == 1


def test_an_instance_republishes_its_state_when_redis_forgot_it(client, keys):
    a = presence(client, keys, "a")
    a.add("s1", "alice", "room")
    a.add("s2", None, "room")
    for key in client.scan_iter(f"{keys.prefix}:*"):
        client.delete(key)
    assert a.count("room") == 0
    a.heartbeat()
    assert a.count("room") == 2 and a.who("room") == {"alice": 1}
    # A change made while unregistered is counted once, not twice.
    for key in client.scan_iter(f"{keys.prefix}:*"):
        client.delete(key)
    assert a.add("s3", "alice", "room").connections == 2
    assert a.count("room") == 3


def test_presence_during_an_outage(key_prefix):
    down = RedisProcess()
    registry = RedisPresenceRegistry(connect(down.url), RedisKeys(key_prefix), "a")
    with pytest.raises(Unavailable):
        registry.add("s1", "alice", "room")
    assert registry.channels_of("s1") == set()  # refused subscriptions leave nothing behind
    with pytest.raises(Unavailable):
        registry.count("room")


def test_external_publisher_checks_like_the_api_and_reads_the_environment(redis_server, key_prefix):
    from hub.errors import InvalidChannel, InvalidEvent, InvalidPayload, PayloadTooLarge
    from hub.external import ExternalPublisher

    env = {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": key_prefix, "MAX_PAYLOAD_BYTES": "32",
           "HISTORY_MAX_MESSAGES": "3"}
    with ExternalPublisher.from_env(env) as publisher:
        assert [publisher.publish("jobs", "done", n).offset for n in range(5)] == [1, 2, 3, 4, 5]
        assert [m.offset for m in publisher.history.since("jobs", 0)[0]] == [3, 4, 5]  # HISTORY_MAX_MESSAGES
        with pytest.raises(PayloadTooLarge):
            publisher.publish("jobs", "done", "x" * 40)
        with pytest.raises(InvalidEvent):
            publisher.publish("jobs", "connect", None)  # reserved Socket.IO event
        with pytest.raises(InvalidChannel):
            publisher.publish("no spaces", "done", None)
        with pytest.raises(InvalidPayload):
            publisher.publish("jobs", "done", float("nan"))
        assert publisher.history.latest("jobs") == 5  # nothing refused was stored


def test_reconcile_raises_lost_counters_under_one_new_epoch(client, keys):
    """A Redis whose counters went back (a failover to a replica behind) while this store saw higher offsets:
    one new epoch for the whole reconcile, however many batches, and every counter raised to what was seen."""
    store = RedisHistoryStore(client, keys)
    channels = [f"ch{n}" for n in range(1500)]  # two reconcile batches
    for channel in channels:
        store.high_water.saw(channel, store.epoch, 10)
    before = store.epoch
    client.hset(keys.offsets, mapping=dict.fromkeys(channels, 10))
    assert store.reconcile() == before  # Redis has all this store saw: nothing changes
    client.hset(keys.offsets, mapping=dict.fromkeys(channels, 4))  # the tail 5..10 lost, as a stale replica has it
    after = store.reconcile()
    assert after != before and client.get(keys.epoch) == after
    assert {epoch for _, epoch, _ in store.high_water.snapshot()} == {after}  # one new epoch, not one per batch
    assert {int(v) for v in client.hmget(keys.offsets, channels)} == {10}
    assert store.reconcile() == after  # nothing more lost: the epoch stays
    assert store.append("ch0", "e", None).offset == 11


def test_a_pool_serves_more_threads_at_once_than_redis_pys_default_of_100(redis_server, key_prefix):
    """A reconnect storm had more than 100 request threads in one store's pool at once: redis-py's default bound
    refused the rest (MaxConnectionsError, answered 503). Each of 150 threads holds a connection for 3 s here."""
    client = connect(redis_server.url, timeout=5)  # longer than the BLPOP
    start = threading.Barrier(150)
    failures: list[BaseException] = []

    def hold() -> None:
        start.wait(timeout=10)
        try:
            client.blpop([f"{key_prefix}:never"], timeout=3)
        except redis.RedisError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(150)]
    for thread in threads:
        thread.start()
    observer, connected = redis.Redis.from_url(redis_server.url), 0
    deadline = time.monotonic() + 2.0  # within the 3 s every thread waits in BLPOP
    while connected <= 100 and time.monotonic() < deadline:
        connected = observer.info("clients")["connected_clients"]
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=20)
    assert failures == []
    assert connected > 100  # they really were in use at once
